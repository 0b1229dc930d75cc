"""A multi-window export decodes each file in the smallest window that holds it, with NeMo's decisions."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.audio import held_out_clips
from exporters.reference import hypothesis_decisions

TEST_WINDOW_SECONDS = (2.5, 5.0, 10.0, 15.0)  # conftest.TEST_WINDOWS, restated: the windows the test expects
PATHS = [("joint_decision", False), ("decode_step", True), ("joint", False)]


def smallest_window(samples: int, sample_rate: int) -> float:
    return next(seconds for seconds in TEST_WINDOW_SECONDS if seconds * sample_rate >= samples)


@pytest.mark.parametrize("joint_mode, fused", PATHS)
def test_each_file_in_its_smallest_window_makes_nemo_decisions(trained_case, transcriber_for, joint_mode, fused):
    """Coverage: on digits and sentences (trained), every clip (0.8–15 s) runs in the smallest of the 2.5 / 5 /
    10 / 15 s windows that holds it, and tokens, frames, durations and text equal NeMo transcribe() on the
    file (batch of 1), per decoding path."""
    subject = trained_case.subject
    transcriber = transcriber_for(subject.windowed("fp32"), joint_mode, fused)
    rate = subject.contract.model.sample_rate
    used = set()
    for name, samples in trained_case.clips.items():
        transcript = transcriber.transcribe(samples)
        expected = trained_case.on_file[name]
        assert transcript.window_seconds == [smallest_window(len(samples), rate)], name
        assert transcript.decisions() == hypothesis_decisions(expected), name
        assert transcript.text == expected.text, name
        used.update(transcript.window_seconds)
    assert len(used) >= 3, f"the clips exercised only the {sorted(used)} s windows"


def test_long_audio_chunks_take_smaller_windows_with_the_same_decisions(load_subject, transcriber_for):
    """Coverage: 21 s of the sentences model's held-out speech, chunked (8 s chunks, 3.2 s contexts): the last
    chunk's window (8.2 s of audio) runs in the 10 s function, and the decisions and text equal those of the
    single-window 15 s export chunked the same way."""
    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, _ = held_out_clips("sentences", rate)
    samples = np.concatenate(clips)[:21 * rate]
    assert len(samples) == 21 * rate
    windowed = transcriber_for(subject.windowed("fp32"), "decode_step").transcribe(samples)
    single = transcriber_for(subject.packages("fp32"), "decode_step").transcribe(samples)
    assert windowed.window_seconds == [15.0, 15.0, 10.0]
    assert single.window_seconds == [15.0, 15.0, 15.0]
    assert windowed.decisions() == single.decisions()
    assert windowed.text == single.text
