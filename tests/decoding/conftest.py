"""Decoding fixtures: models under test, clips, NeMo's own transcriptions, and package transcribers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.decoding.transcriber import open_transcriber
from exporters.reference import nemo_transcribe
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


def nemo_transcribe_clips(model, clips: dict[str, np.ndarray], rate: int, directory) -> dict:
    """NeMo's transcribe(timestamps=True) on all clips in one batch.

    In one batch NeMo zero-pads shorter clips to the longest (one full window) and passes their true
    lengths: exactly what a fixed-window package receives. Alone, NeMo would reflect-pad its STFT at a
    clip's end instead, and its features near the end would differ (not comparable).
    """
    paths = []
    for name, samples in clips.items():
        paths.append(str(directory / f"{name}.wav"))
        sf.write(paths[-1], samples, rate)
    hypotheses = nemo_transcribe(model, paths, timestamps=True, batch_size=len(paths))
    return dict(zip(clips, hypotheses))


@pytest.fixture(scope="session")
def decoding_case(decoding_subject, tmp_path_factory):
    """(subject, clips, NeMo's hypotheses per clip) for one model under test."""
    clips = window_clips(decoding_subject.contract)
    hypotheses = nemo_transcribe_clips(decoding_subject.model, clips, decoding_subject.contract.model.sample_rate,
                                 tmp_path_factory.mktemp(f"nemo-{decoding_subject.source}"))
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
