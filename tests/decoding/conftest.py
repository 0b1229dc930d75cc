"""Decoding fixtures: models under test, clips, NeMo's own transcriptions, and package transcribers."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.decoding.transcriber import open_transcriber
from exporters.reference import nemo_transcribe_window
from exporters.runtime import BackendUnavailable

# Random weights exercise the loop hard; the trained digits model emits real words with real durations.
DECODING_MODELS = ("tiny", "digits")


@pytest.fixture(scope="session", params=DECODING_MODELS)
def decoding_subject(request, load_subject):
    return load_subject(request.param)


def window_clips(contract) -> dict[str, np.ndarray]:
    """Speech shorter than the window, exactly one window of speech, and the held-out digit clips."""
    rate, window = contract.model.sample_rate, contract.window_samples
    clips = {"short_4s": load_audio(FIXTURE_AUDIO_DIR / "short_4s.wav", rate),
             "long_15s": load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", rate)[:window]}
    for path in sorted((FIXTURE_AUDIO_DIR / "digits").glob("*.wav")):
        clips[f"digits_{path.stem}"] = load_audio(path, rate)
    return clips


@pytest.fixture(scope="session")
def decoding_case(decoding_subject):
    """(subject, clips, NeMo's transcription of each clip's window) for one model under test."""
    contract = decoding_subject.contract
    clips = window_clips(contract)
    hypotheses = {name: nemo_transcribe_window(decoding_subject.model, *fit_window(samples, contract.window_samples))
                  for name, samples in clips.items()}
    return decoding_subject, clips, hypotheses


@pytest.fixture(scope="session")
def transcriber_for(backend):
    """open_transcriber on the selected backend, skipping with the reason where it cannot run."""
    def open_(packages_dir, joint_mode="joint", fused_frontend=False):
        try:
            return open_transcriber(packages_dir, backend, joint_mode, fused_frontend)
        except BackendUnavailable as reason:
            pytest.skip(str(reason))
    return open_
