"""Decoding fixtures: clips, NeMo's own transcriptions of them, and transcribers over exported packages."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.decoding.transcriber import open_transcriber
from exporters.runtime import BackendUnavailable


@pytest.fixture(scope="session")
def clips(tiny_contract) -> dict[str, np.ndarray]:
    """A clip shorter than the window, and one exactly one window long."""
    rate, window = tiny_contract.model.sample_rate, tiny_contract.window_samples
    return {"short_4s": load_audio(FIXTURE_AUDIO_DIR / "short_4s.wav", rate),
            "long_15s": load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", rate)[:window]}


def nemo_transcribe(model, clips: dict[str, np.ndarray], rate: int, directory) -> dict:
    """NeMo's transcribe(timestamps=True) on all clips in one batch.

    In one batch NeMo zero-pads the short clip to the longest (one full window) and passes its true
    length: exactly what a fixed-window package receives. Alone, NeMo would reflect-pad its STFT at
    the clip's end instead and its features would differ near the end (not comparable).
    """
    paths = []
    for name, samples in clips.items():
        paths.append(str(directory / f"{name}.wav"))
        sf.write(paths[-1], samples, rate)
    hypotheses = model.transcribe(paths, timestamps=True, batch_size=len(paths), verbose=False)
    return dict(zip(clips, hypotheses))


@pytest.fixture(scope="session")
def nemo_hypotheses(tiny_model, tiny_contract, clips, tmp_path_factory):
    return nemo_transcribe(tiny_model, clips, tiny_contract.model.sample_rate, tmp_path_factory.mktemp("nemo"))


@pytest.fixture(scope="session")
def transcriber_for(backend):
    """open_transcriber on the selected backend, skipping with the reason where it cannot run."""
    def open_(packages_dir, joint_mode="joint", fused_frontend=False):
        try:
            return open_transcriber(packages_dir, backend, joint_mode, fused_frontend)
        except BackendUnavailable as reason:
            pytest.skip(str(reason))
    return open_
