"""Waveform → normalized log-mel features (NeMo AudioToMelSpectrogramPreprocessor)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from exporters.components.base import Component


def exact_dft_basis(n_fft: int, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed one-sided DFT basis [n_fft//2 + 1, 1, n_fft] (real, imaginary), computed in float64.

    coremltools lowers torch.stft to a conv whose basis is cos/sin of k·n·2π/N evaluated in fp32;
    for k·n up to ~1.3e5 that angle carries ~1e-4 rad of rounding error, which shows up as log-mel
    errors of ~1e-2 in quiet bins. Reducing k·n modulo N first keeps every angle in [0, 2π).
    """
    left = (n_fft - window.numel()) // 2
    padded_window = np.zeros(n_fft)
    padded_window[left:left + window.numel()] = window.double().numpy()
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
    real = np.cos(angle) * padded_window
    imaginary = -np.sin(angle) * padded_window
    return (torch.from_numpy(real[:, None, :]).float(), torch.from_numpy(imaginary[:, None, :]).float())


class ConvStft:
    """torch.stft(center=True, reflect padding, one-sided) as two convolutions with an exact basis."""

    def __init__(self, featurizer: torch.nn.Module):
        self.n_fft = featurizer.n_fft
        self.hop_length = featurizer.hop_length
        self.real_basis, self.imaginary_basis = exact_dft_basis(featurizer.n_fft, featurizer.window)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(x.unsqueeze(1), (half, half), mode="reflect")
        real = torch.nn.functional.conv1d(padded, self.real_basis, stride=self.hop_length)
        imaginary = torch.nn.functional.conv1d(padded, self.imaginary_basis, stride=self.hop_length)
        return torch.complex(real, imaginary)


@contextlib.contextmanager
def exact_stft(featurizer: torch.nn.Module):
    """Run NeMo's featurizer with ConvStft in place of its torch.stft call."""
    if featurizer.exact_pad:
        raise NotImplementedError("exact_pad featurizers (center=False) are not supported")
    featurizer.stft = ConvStft(featurizer)
    try:
        yield featurizer
    finally:
        del featurizer.stft


class PreprocessorWrapper(torch.nn.Module):
    """audio_signal [1, S] fp32, audio_length [1] int32 → mel [1, n_mels, M], mel_length [1] int32."""

    def __init__(self, preprocessor: torch.nn.Module):
        super().__init__()
        self.preprocessor = preprocessor

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        with exact_stft(self.preprocessor.featurizer):
            mel, mel_length = self.preprocessor(input_signal=audio_signal, length=audio_length.long())
        return mel, mel_length.int()


def in_preprocessor(op) -> bool:
    """Whether a MIL op was traced inside a `preprocessor` submodule (coremltools keeps torch scopes).

    Both PreprocessorWrapper and MelEncoderWrapper hold the front end under that attribute name.

    fp16 exports keep the whole front end in fp32: the log guard (2^-24) is at the edge of fp16's
    subnormal range and the per-feature sums of squares approach 65504 on loud audio, so fp16 mel
    features differ from NeMo's by ~0.4 (measured by tests/parity/test_fp16_audit.py).
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    return op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, [None])[0] == "preprocessor"


PREPROCESSOR = Component("preprocessor", wrap=lambda model, contract: PreprocessorWrapper(model.preprocessor),
                         keep_fp32=in_preprocessor)
