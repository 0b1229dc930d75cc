"""The window-memory check (issue 35 item 7): hand-computed frames and bytes, and a .nemo's heads read
without loading it."""

from __future__ import annotations

import pytest

from exporters.checkpoints import build_checkpoint
from exporters.errors import UserError
from exporters.window_memory import V3_ATTENTION, Attention, archive_attention, check_window_memory

GB = 10**9


def test_frames_and_bytes_of_v3_windows():
    """15 s: 1501 mel frames, 188 encoder frames; 3600 s: 360 001 mel frames, 45 001 encoder frames, and one
    [8, T, T] float32 score matrix is the 64.8 GB the issue saw NeMo ask for."""
    assert V3_ATTENTION.frames(15) == 188
    assert V3_ATTENTION.frames(3600) == 45001
    assert 8 * 45001**2 * 4 == pytest.approx(64.8 * GB, rel=1e-3)
    assert V3_ATTENTION.bytes_for(3600) == 6 * 8 * 45001**2 * 4


def test_largest_window_is_the_last_whole_second_that_fits():
    """A budget of exactly 188 frames' attention allows 15 s (15.03 s would still be 188 frames), not 16 s."""
    budget = V3_ATTENTION.bytes_for(15)
    assert V3_ATTENTION.largest_window(budget) == 15
    assert V3_ATTENTION.bytes_for(16) > budget


def test_a_window_beyond_the_memory_is_refused_naming_the_largest():
    with pytest.raises(UserError, match=r"window 3600 s needs about 388\.8 GB .*\(8 heads × 45001² frames.*"
                                        r"16\.0 GB is available; the largest window this machine can export now "
                                        r"is 730 s"):
        check_window_memory((15.0, 3600.0), V3_ATTENTION, available=16 * GB)
    check_window_memory((15.0, 730.0), V3_ATTENTION, available=16 * GB)


def test_heads_come_from_the_archive_without_loading_it():
    """The tiny preset is built with 4 heads and 8× subsampling; its .nemo's config says so."""
    assert archive_attention(build_checkpoint("tiny")) == Attention(heads=4, subsampling=8)
