"""Waveform → normalized log-mel features (NeMo AudioToMelSpectrogramPreprocessor)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from exporters.components.base import Component, pad_frames, trim
from exporters.inspect_model import mel_frames


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


def centered_signal(signal: torch.Tensor, length: torch.Tensor, half: int, mode: str = "reflect") -> torch.Tensor:
    """torch.stft(center=True)'s padded input for the unpadded file signal[:, :length].

    Returns [1, N + 2·half]: position p (from -half) holds sample p, padded past both ends of the file
    as torch pads an unpadded one: `reflect` mirrors (-p holds sample p; length + j holds sample
    length - 2 - j), `constant` holds zeros. Whatever the caller left after `length` is never read.
    Reflections falling before sample 0 (only when length <= half, where NeMo's own STFT raises) hold zeros.
    """
    position = torch.arange(-half, signal.shape[-1] + half, device=signal.device)
    if mode == "reflect":
        position = position.abs()
        position = torch.where(position < length, position, 2 * (length - 1) - position)
    outside = torch.logical_or(position < 0, position >= length)
    picked = torch.gather(signal, 1, position.clamp(0, signal.shape[-1] - 1).unsqueeze(0))
    return picked.masked_fill(outside.unsqueeze(0), 0.0)


def stft_pad_mode(featurizer: torch.nn.Module) -> str:
    """How NeMo's own STFT pads the ends: "reflect" (torch's default, NeMo 2.x) or "constant" (NeMo 3.0).

    Read off its output on a probe signal rather than off the NeMo version.
    """
    n_fft = featurizer.n_fft
    probe = torch.linspace(0.1, 1.0, n_fft).unsqueeze(0)
    with torch.no_grad():
        nemo_frame = type(featurizer).stft(featurizer, probe)[..., 0]
        errors = {mode: (ConvStft(featurizer, torch.tensor([n_fft]), mode)(probe)[..., 0] - nemo_frame).abs().max()
                  for mode in ("reflect", "constant")}
    return min(errors, key=errors.get)


class ConvStft:
    """torch.stft(center=True, one-sided) of the unpadded file, as two convolutions with an exact basis:
    valid frames of a zero-padded window equal NeMo's STFT of the file alone."""

    def __init__(self, featurizer: torch.nn.Module, length: torch.Tensor, mode: str = "reflect"):
        self.n_fft = featurizer.n_fft
        self.hop_length = featurizer.hop_length
        self.length = length
        self.mode = mode
        self.real_basis, self.imaginary_basis = exact_dft_basis(featurizer.n_fft, featurizer.window)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        padded = centered_signal(x, self.length, self.n_fft // 2, self.mode).unsqueeze(1)
        real = torch.nn.functional.conv1d(padded, self.real_basis, stride=self.hop_length)
        imaginary = torch.nn.functional.conv1d(padded, self.imaginary_basis, stride=self.hop_length)
        return torch.complex(real, imaginary)


@contextlib.contextmanager
def exact_stft(featurizer: torch.nn.Module, length: torch.Tensor, mode: str):
    """Run NeMo's featurizer with ConvStft (true end at `length`, ends padded by `mode`) in place of its
    torch.stft call."""
    if featurizer.exact_pad:
        raise NotImplementedError("exact_pad featurizers (center=False) are not supported")
    featurizer.stft = ConvStft(featurizer, length, mode)
    try:
        yield featurizer
    finally:
        del featurizer.stft


@contextlib.contextmanager
def normalization_off(featurizer: torch.nn.Module):
    """Run NeMo's featurizer up to the masked log-mel, without its normalization step."""
    saved, featurizer.normalize = featurizer.normalize, None
    try:
        yield featurizer
    finally:
        featurizer.normalize = saved


class NormalizedFrontEnd(torch.nn.Module):
    """NeMo's featurizer on the file (exact STFT, padded at the true end as NeMo's own STFT pads), then
    NeMo's own per-feature normalization, returning the statistics it normalized with (so long audio can be renormalized
    with the whole utterance's statistics, as NeMo computes them)."""

    def __init__(self, featurizer: torch.nn.Module):
        super().__init__()
        if featurizer.normalize != "per_feature":
            raise NotImplementedError(f"normalize={featurizer.normalize!r}: only per_feature (v3's) is supported")
        self.featurizer = featurizer
        self.pad_mode = stft_pad_mode(featurizer)  # probed once, not on every call

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor):
        from nemo.collections.asr.parts.preprocessing.features import normalize_batch

        with exact_stft(self.featurizer, length, self.pad_mode), normalization_off(self.featurizer):
            log_mel, mel_length = self.featurizer(audio_signal, length)
        mel, mean, std = normalize_batch(log_mel, mel_length, "per_feature")
        past = torch.arange(mel.shape[-1], device=mel.device).unsqueeze(0) >= mel_length.unsqueeze(1)
        mel = mel.masked_fill(past.unsqueeze(1), self.featurizer.pad_value)
        return mel, mel_length, mean.unsqueeze(-1), std.unsqueeze(-1)


class PreprocessorWrapper(torch.nn.Module):
    """audio_signal [1, S] fp32, audio_length [1] int32 → mel [1, n_mels, M], mel_length [1] int32,
    feature_mean, feature_std [1, n_mels, 1] fp32.

    Valid frames equal NeMo's preprocessor on the unpadded audio_signal[:, :audio_length]; samples
    after audio_length change nothing (frames past mel_length are NeMo's pad value, 0).
    feature_mean / feature_std are what NeMo's per-feature normalization used (std includes its
    1e-5 guard): mel × feature_std + feature_mean is the log-mel before normalization.
    """

    def __init__(self, preprocessor: torch.nn.Module):
        super().__init__()
        # Held as `preprocessor`: fp16 exports keep every op in this scope fp32 (in_preprocessor).
        self.preprocessor = NormalizedFrontEnd(preprocessor.featurizer)

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        mel, mel_length, mean, std = self.preprocessor(audio_signal, audio_length.long())
        return mel, mel_length.int(), mean, std


def in_preprocessor(op) -> bool:
    """Whether a MIL op was traced inside a `preprocessor` submodule (coremltools keeps torch scopes).

    Both PreprocessorWrapper and MelEncoderWrapper hold the front end under that attribute name.

    fp16 exports keep the whole front end in fp32: the log guard (2^-24) is at the edge of fp16's
    subnormal range and the per-feature sums of squares approach 65504 on loud audio, so fp16 mel
    features differ from NeMo's by ~0.4 (measured by tests/parity/test_fp16_audit.py).
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    return op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, [None])[0] == "preprocessor"


def nemo_preprocessor(model, contract=None):
    """NeMo's preprocessor on the file alone (audio_signal[:, :audio_length]), padded to the window, and
    the per-feature statistics its normalization used.

    NeMo raises for files of n_fft / 2 samples or fewer (torch's reflect padding needs more).
    """
    def run(audio_signal, audio_length):
        mel, mel_length = model.preprocessor(input_signal=trim(audio_signal, audio_length),
                                             length=audio_length.long())
        mean, std = nemo_feature_stats(model, audio_signal, audio_length)
        return pad_frames(mel, mel_frames(model, audio_signal.shape[-1])), mel_length.int(), mean, std
    return run


def nemo_feature_stats(model, audio_signal: torch.Tensor, audio_length: torch.Tensor):
    """NeMo's per-feature normalization mean and divisor (std + 1e-5) on the file, each [1, n_mels, 1]."""
    from nemo.collections.asr.parts.preprocessing.features import normalize_batch

    featurizer = model.preprocessor.featurizer
    normalize = featurizer.normalize
    length = audio_length.long()
    with torch.no_grad(), normalization_off(featurizer):
        log_mel, frames = featurizer(trim(audio_signal, length), length)
    _, mean, std = normalize_batch(log_mel, frames, normalize)
    return mean.unsqueeze(-1), std.unsqueeze(-1)


PREPROCESSOR = Component("preprocessor", wrap=lambda model, contract: PreprocessorWrapper(model.preprocessor),
                         reference=nemo_preprocessor, gate="audio", keep_fp32=in_preprocessor,
                         plots={"mel": "mel_plot"})
