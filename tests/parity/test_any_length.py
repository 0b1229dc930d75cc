"""Any length: whatever lies after the valid length changes nothing, and files too short for NeMo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.components.preprocessor import stft_pad_mode
from exporters.inspect_model import subsampled_lengths

TAILS = ("zeros", "noise", "speech", "full-scale clipping", "denormals")


@pytest.fixture(scope="module")
def speech(tiny_contract) -> np.ndarray:
    return load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", tiny_contract.model.sample_rate)


def tail_values(kind: str, size: int, seed: int, speech: np.ndarray) -> np.ndarray:
    """What a caller might leave after the valid samples (or mel frames) of a window."""
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return np.zeros(size, np.float32)
    if kind == "noise":
        return (0.3 * rng.standard_normal(size)).astype(np.float32)
    if kind == "speech":
        start = int(rng.integers(0, len(speech) - 1))
        return np.resize(speech[start:], size).astype(np.float32)
    if kind == "full-scale clipping":
        return np.where(rng.standard_normal(size) > 0, 1.0, -1.0).astype(np.float32)
    return (rng.choice([-1, 1], size) * np.float32(1e-40)).astype(np.float32)  # fp32 subnormals


def with_tail(valid: np.ndarray, window: int, tail: np.ndarray) -> np.ndarray:
    signal = np.empty((1, window), np.float32)
    signal[0, :len(valid)] = valid
    signal[0, len(valid):] = tail[: window - len(valid)]
    return signal


def assert_valid_frames_identical(clean: dict, dirty: dict, length_name: str, value_name: str) -> None:
    """Same lengths, bit-identical values on every valid frame."""
    frames = int(clean[length_name][0])
    assert dirty[length_name].tolist() == clean[length_name].tolist()
    np.testing.assert_array_equal(dirty[value_name][..., :frames], clean[value_name][..., :frames])


@pytest.mark.parametrize("name, outputs", [("preprocessor", ("mel_length", "mel")),
                                           ("mel_encoder", ("encoder_length", "encoder"))])
@given(length=st.integers(1, 239999), tail=st.sampled_from(TAILS), seed=st.integers(0, 2**16))
def test_audio_after_length_changes_no_valid_output(tiny_contract, open_package, precision, speech, name, outputs,
                                                     length, tail, seed):
    """Coverage: waveform packages, both precisions: zeros, noise, speech, clipping or denormals after
    audio_length leave every valid frame bit-identical (and mel's padding frames 0)."""
    window = tiny_contract.window_samples
    valid = np.resize(speech[seed % len(speech):], length)
    package = open_package(name)
    audio_length = np.array([length], np.int32)
    clean = package.predict(tiny_contract.audio_feed(with_tail(valid, window, np.zeros(window, np.float32)),
                                                     audio_length))
    dirty = package.predict(tiny_contract.audio_feed(with_tail(valid, window, tail_values(tail, window, seed, speech)),
                                                     audio_length))
    assert_valid_frames_identical(clean, dirty, *outputs)
    if name == "preprocessor":
        assert not dirty["mel"][..., int(dirty["mel_length"][0]):].any(), "mel past mel_length must be NeMo's pad value 0"


@given(length=st.integers(1, 1500), tail=st.sampled_from(TAILS), seed=st.integers(0, 2**16))
def test_mel_after_length_changes_no_encoder_frame(tiny_contract, open_package, precision, speech, length, tail,
                                                   seed):
    """Coverage: encoder package, both precisions: any values in mel frames past mel_length leave every
    valid encoder frame bit-identical."""
    spec = tiny_contract.model
    frames = tiny_contract.mel_frames
    mel = np.random.default_rng(seed).standard_normal((1, spec.n_mels, frames)).astype(np.float32)
    garbage = tail_values(tail, spec.n_mels * frames, seed, speech).reshape(1, spec.n_mels, frames)
    clean, dirty = mel.copy(), mel.copy()
    clean[..., length:] = 0.0
    dirty[..., length:] = garbage[..., length:]
    mel_length = np.array([length], np.int32)
    package = open_package("encoder")
    assert_valid_frames_identical(package.predict({"mel": clean, "mel_length": mel_length}),
                                  package.predict({"mel": dirty, "mel_length": mel_length}),
                                  "encoder_length", "encoder")


@pytest.mark.parametrize("length", [1, 159, 160, 200, 256])
def test_very_short_files_get_nemo_lengths(tiny_model, tiny_contract, open_package, precision, speech, length):
    """Coverage: 1..256 samples. With reflect padding (NeMo 2.x) NeMo's own STFT raises there (torch needs
    > n_fft/2 samples to reflect); NeMo 3.0 pads with zeros and reads them. Either way the packages return
    NeMo's length rule for mel and encoder frames."""
    featurizer = tiny_model.preprocessor.featurizer
    samples = speech[16000:16000 + length]
    if stft_pad_mode(featurizer) == "reflect":
        with pytest.raises(RuntimeError, match="[Pp]adding size"):
            with torch.no_grad():
                tiny_model.preprocessor(input_signal=torch.from_numpy(samples[None].copy()),
                                        length=torch.tensor([length]))
    mel_length = int(featurizer.get_seq_len(torch.tensor([length]))[0])
    window = tiny_contract.window_samples
    audio = tiny_contract.audio_feed(with_tail(samples, window, np.zeros(window, np.float32)),
                                     np.array([length], np.int32))
    out = open_package("preprocessor").predict(audio)
    assert int(out["mel_length"][0]) == mel_length
    encoded = open_package("mel_encoder").predict(audio)
    assert int(encoded["encoder_length"][0]) == int(subsampled_lengths(tiny_model.encoder.pre_encode,
                                                                      torch.tensor([mel_length]))[0])
