"""Decoding fixtures: models under test, clips, NeMo's own transcriptions, and package transcribers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.decoding.transcriber import open_transcriber
from exporters.reference import nemo_transcribe, nemo_transcribe_window
from exporters.runtime import BackendUnavailable

# Random weights exercise the loop hard; the trained models emit real words with real durations, and
# `sentences` real language (capitals, punctuation, a 256-piece vocabulary).
DECODING_MODELS = ("tiny", "digits", "sentences")


@pytest.fixture(scope="session", params=DECODING_MODELS)
def decoding_subject(request, load_subject):
    return load_subject(request.param)


def window_clips(contract) -> dict[str, np.ndarray]:
    """Speech shorter than the window, exactly one window of speech, and the held-out digit clips."""
    rate, window = contract.model.sample_rate, contract.window_samples
    clips = {"short_4s": load_audio(FIXTURE_AUDIO_DIR / "short_4s.wav", rate),
             "long_15s": load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", rate)[:window]}
    for trained in ("digits", "sentences"):
        for path in sorted((FIXTURE_AUDIO_DIR / trained).glob("*.wav")):
            clips[f"{trained}_{path.stem}"] = load_audio(path, rate)
    return clips


@dataclass
class DecodingCase:
    """One model under test, its clips, and NeMo's transcriptions of them.

    `on_file`: NeMo transcribe() on each clip written as its own file, batch of 1 (the reference).
    `on_window`: NeMo transcribe's steps on the clip zero-padded to the package window with its true
    length, which is what NeMo computes when it batches the clip with a 15 s file (second check).
    """

    subject: object
    clips: dict
    on_file: dict
    on_window: dict


def write_clips(clips: dict[str, np.ndarray], folder, sample_rate: int) -> list[str]:
    """Each clip as a float WAV (exact samples), in clip order."""
    paths = []
    for name, samples in clips.items():
        path = folder / f"{name}.wav"
        sf.write(path, samples, sample_rate, subtype="FLOAT")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def case_for(tmp_path_factory):
    """case_for(subject, clips, padded_window=False) -> DecodingCase with NeMo's transcriptions."""
    def make(subject, clips: dict[str, np.ndarray], padded_window: bool = False) -> DecodingCase:
        contract = subject.contract
        paths = write_clips(clips, tmp_path_factory.mktemp(f"clips-{subject.source}"), contract.model.sample_rate)
        on_file = nemo_transcribe(subject.model, paths, timestamps=True, batch_size=1)
        on_window = {name: nemo_transcribe_window(subject.model, *fit_window(samples, contract.window_samples))
                     for name, samples in clips.items()} if padded_window else {}
        return DecodingCase(subject, clips, dict(zip(clips, on_file)), on_window)
    return make


@pytest.fixture(scope="session")
def decoding_case(decoding_subject, case_for) -> DecodingCase:
    return case_for(decoding_subject, window_clips(decoding_subject.contract), padded_window=True)


@pytest.fixture(scope="session", params=("digits", "sentences"))
def trained_case(request, load_subject, case_for) -> DecodingCase:
    """A trained model (a flipped decision is a bug there), its clips and NeMo transcribe() on each file."""
    subject = load_subject(request.param)
    return case_for(subject, window_clips(subject.contract))


@pytest.fixture(scope="session")
def transcriber_for(backend):
    """open_transcriber on the selected backend, skipping with the reason where it cannot run."""
    def open_(packages_dir, joint_mode="joint", fused_frontend=False):
        try:
            return open_transcriber(packages_dir, backend, joint_mode, fused_frontend)
        except BackendUnavailable as reason:
            pytest.skip(str(reason))
    return open_
