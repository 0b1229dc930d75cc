"""Audio longer than one window: consecutive 15 s windows with decoder state and time carried over.

NeMo transcribing the whole long clip at once is not comparable: its encoder attends over the full
clip, while each window's encoder sees only its own 15 s. Comparable references: NeMo's modules
driven through the same windows and loop, and NeMo's transcribe of the first window on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.reference import nemo_transcribe, nemo_transcriber


@pytest.fixture(scope="module")
def long_audio(tiny_contract) -> np.ndarray:
    """About 36 s: three windows, the last one partial."""
    rate = tiny_contract.model.sample_rate
    speech = load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", rate)
    short = load_audio(FIXTURE_AUDIO_DIR / "short_4s.wav", rate)
    return np.concatenate([speech, short, speech])


def timeline(transcript):
    return [(t.token_id, t.window, t.frame, t.duration) for t in transcript.tokens]


def test_windowed_packages_equal_nemo_modules_over_the_same_windows(tiny_model, tiny_contract, tiny_packages_fp32,
                                                                     transcriber_for, long_audio):
    """Coverage: three windows through the packages vs NeMo's modules through the same windows and loop."""
    ours = transcriber_for(tiny_packages_fp32).transcribe(long_audio)
    reference = nemo_transcriber(tiny_model, tiny_contract).transcribe(long_audio)
    assert timeline(ours) == timeline(reference)
    assert {t.window for t in ours.tokens} == {0, 1, 2}


def test_first_window_equals_nemo_transcribe_of_its_15s(tiny_model, tiny_contract, tiny_packages_fp32,
                                                        transcriber_for, long_audio, tmp_path):
    """Coverage: the first window's decisions are NeMo transcribe's on exactly those 15 s."""
    window = tiny_contract.window_samples
    path = tmp_path / "first_window.wav"
    sf.write(path, long_audio[:window], tiny_contract.model.sample_rate)
    hypothesis = nemo_transcribe(tiny_model, [str(path)], timestamps=True, batch_size=1)[0]
    first = [t for t in transcriber_for(tiny_packages_fp32).transcribe(long_audio).tokens if t.window == 0]
    assert [(t.token_id, t.frame, t.duration) for t in first] == list(zip(
        hypothesis.y_sequence.tolist(), hypothesis.timestamp["timestep"].tolist(),
        hypothesis.token_duration.tolist()))


def test_token_times_carry_the_window_offset(tiny_contract, tiny_packages_fp32, transcriber_for, long_audio):
    """Coverage: start times = window × 15 s + frame × subsampling × hop / rate; monotonic across seams."""
    spec = tiny_contract.model
    frame_s = spec.subsampling_factor * spec.hop_length / spec.sample_rate
    window_s = tiny_contract.window_samples / spec.sample_rate
    tokens = transcriber_for(tiny_packages_fp32).transcribe(long_audio).tokens
    np.testing.assert_allclose([t.start for t in tokens], [t.window * window_s + t.frame * frame_s for t in tokens])
    assert all(a.start <= b.start for a, b in zip(tokens, tokens[1:]))
