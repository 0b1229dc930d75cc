"""Waveform → normalized log-mel features (NeMo AudioToMelSpectrogramPreprocessor)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from exporters.components.base import Component, pad_frames, trim
from exporters.contract import framed_shape
from exporters.inspect_model import mel_frames


def exact_dft_basis(n_fft: int, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed one-sided DFT basis [n_fft//2 + 1, n_fft] (real, imaginary), computed in float64.

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
    return torch.from_numpy(real).float(), torch.from_numpy(imaginary).float()


def runtime_arange(count: int, length: torch.Tensor) -> torch.Tensor:
    """arange(count), offset by length − length (= 0) so the converter cannot fold it, or the index tables
    built from it, into constants: folded, they are megabytes stored in the package for every window."""
    return torch.arange(count) + (length - length)


def sample_index(rows: int, hop: int, length: torch.Tensor) -> torch.Tensor:
    """[1, rows, hop]: the position in the file of every sample of a framed waveform."""
    return (runtime_arange(rows, length).unsqueeze(1) * hop + torch.arange(hop).unsqueeze(0)).unsqueeze(0)


def preemphasized(signal: torch.Tensor, length: torch.Tensor, coefficient: float | None) -> torch.Tensor:
    """NeMo's pre-emphasis (y[0] = x[0], y[i] = x[i] − a·x[i−1]) on a framed waveform [1, rows, hop],
    zero from `length` on. The previous sample of a row's first column is the last column of the row above."""
    _, rows, hop = signal.shape
    if coefficient is not None:
        row_ends = torch.cat([torch.zeros_like(signal[:, :1, -1:]), signal[:, :-1, -1:]], dim=1)
        signal = signal - coefficient * torch.cat([row_ends, signal[:, :, :-1]], dim=2)
    return signal.masked_fill(sample_index(rows, hop, length) >= length, 0.0)


def stft_frames(signal: torch.Tensor, length: torch.Tensor, n_fft: int, mode: str) -> torch.Tensor:
    """The [frames, n_fft] windows torch.stft(center=True) takes from the unpadded file signal[:length],
    gathered from a framed waveform [1, rows, hop] (frames = rows + 1).

    Frame t starts at sample t·hop − n_fft/2. Past both ends of the file, `reflect` mirrors (−p holds sample
    p; length + j holds sample length − 2 − j) and `constant` holds zeros, as torch pads an unpadded file.
    Samples at or after `length` are never read; reflections before sample 0 (only when length <= n_fft/2,
    where NeMo's own STFT raises) hold zeros. Every tensor stays [frames, n_fft] or smaller, within the
    Neural Engine's 16384 per dimension.
    """
    _, rows, hop = signal.shape
    position = runtime_arange(rows + 1, length).unsqueeze(1) * hop + torch.arange(n_fft).unsqueeze(0) - n_fft // 2
    if mode == "reflect":
        position = position.abs()
        position = torch.where(position < length, position, 2 * (length - 1) - position)
    outside = torch.logical_or(position < 0, position >= length)
    position = position.clamp(0, rows * hop - 1)
    return signal[0][position // hop, position % hop].masked_fill(outside, 0.0)


class FramedStft:
    """torch.stft(center=True, one-sided) of the unpadded file as (real, imaginary), from a framed waveform:
    the frames times an exact DFT basis. Valid frames of a zero-padded window equal NeMo's STFT of the file alone."""

    def __init__(self, featurizer: torch.nn.Module, mode: str):
        self.n_fft = featurizer.n_fft
        self.mode = mode
        self.real_basis, self.imaginary_basis = exact_dft_basis(featurizer.n_fft, featurizer.window)

    def __call__(self, signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, imaginary), each [1, n_fft//2 + 1, frames] as torch.stft lays them out."""
        frames = stft_frames(signal, length, self.n_fft, self.mode)
        return ((frames @ self.real_basis.T).T.unsqueeze(0), (frames @ self.imaginary_basis.T).T.unsqueeze(0))


def stft_pad_mode(featurizer: torch.nn.Module) -> str:
    """How NeMo's own STFT pads the ends: "reflect" (torch's default, NeMo 2.x) or "constant" (NeMo 3.0).

    Read off its output on a probe signal rather than off the NeMo version.
    """
    n_fft, hop = featurizer.n_fft, featurizer.hop_length
    rows = -(-n_fft // hop)
    probe = torch.zeros(1, rows * hop)
    probe[0, :n_fft] = torch.linspace(0.1, 1.0, n_fft)
    with torch.no_grad():
        nemo_frame = type(featurizer).stft(featurizer, probe[:, :n_fft])[..., 0]
        errors = {}
        for mode in ("reflect", "constant"):
            real, imaginary = FramedStft(featurizer, mode)(probe.reshape(1, rows, hop), torch.tensor([n_fft]))
            errors[mode] = (torch.complex(real, imaginary)[..., 0] - nemo_frame).abs().max()
    return min(errors, key=errors.get)


def supported_featurizer(featurizer: torch.nn.Module) -> torch.nn.Module:
    """The featurizer settings the framed front end reproduces (v3's); anything else is refused."""
    unsupported = {"exact_pad (center=False)": featurizer.exact_pad, "frame_splicing": featurizer.frame_splicing != 1,
                   f"normalize={featurizer.normalize!r}": featurizer.normalize != "per_feature",
                   f"pad_to={featurizer.pad_to}": featurizer.pad_to not in (0, None),
                   "use_grads": featurizer.use_grads, "log=False": not featurizer.log}
    if found := [name for name, present in unsupported.items() if present]:
        raise NotImplementedError(f"unsupported featurizer settings: {', '.join(found)}")
    return featurizer


@contextlib.contextmanager
def normalization_off(featurizer: torch.nn.Module):
    """Run NeMo's featurizer up to the masked log-mel, without its normalization step."""
    saved, featurizer.normalize = featurizer.normalize, None
    try:
        yield featurizer
    finally:
        featurizer.normalize = saved


class NormalizedFrontEnd(torch.nn.Module):
    """NeMo's FilterbankFeatures on the file (pre-emphasis, STFT padded at the true end as NeMo's own STFT
    pads, power, mel filterbank, log, per-feature normalization), step for step, on a framed waveform
    [1, rows, hop]. Returns the statistics it normalized with (so long audio can be renormalized with the
    whole utterance's statistics, as NeMo computes them). A flat [1, S] waveform is framed first."""

    def __init__(self, featurizer: torch.nn.Module, window_samples: int):
        super().__init__()
        self.featurizer = supported_featurizer(featurizer)
        self.stft = FramedStft(featurizer, stft_pad_mode(featurizer))  # probed once, not on every call
        self.framed_shape = framed_shape(window_samples, featurizer.hop_length)

    def forward(self, signal: torch.Tensor, length: torch.Tensor):
        from nemo.collections.asr.parts.preprocessing.features import normalize_batch

        featurizer = self.featurizer
        signal = signal.reshape(self.framed_shape)  # a no-op on the framed layout; inside the fp32 scope
        mel_length = torch.where(length == 0, 0, featurizer.get_seq_len(length))  # as NeMo guards empty input
        real, imaginary = self.stft(preemphasized(signal, length, featurizer.preemph), length)
        power = torch.sqrt(real.pow(2) + imaginary.pow(2))
        if featurizer.mag_power != 1.0:
            power = power.pow(featurizer.mag_power)
        log_mel = log_with_guard(featurizer, torch.matmul(featurizer.fb.to(power.dtype), power))
        mel, mean, std = normalize_batch(log_mel, mel_length, "per_feature")
        past = torch.arange(mel.shape[-1], device=mel.device).unsqueeze(0) >= mel_length.unsqueeze(1)
        mel = mel.masked_fill(past.unsqueeze(1), featurizer.pad_value)
        return mel, mel_length, mean.unsqueeze(-1), std.unsqueeze(-1)


def log_with_guard(featurizer: torch.nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """NeMo's log with its zero guard, added or clamped."""
    guard = featurizer.log_zero_guard_value_fn(mel)
    if featurizer.log_zero_guard_type == "add":
        return torch.log(mel + guard)
    return torch.log(torch.clamp(mel, min=guard))


class PreprocessorWrapper(torch.nn.Module):
    """audio_signal [1, rows, hop] (the contract's framed waveform: sample r·hop + c at [0, r, c]; a flat
    [1, S] in layouts whose runtime feeds one) fp32, audio_length [1] int32 → mel [1, n_mels, M],
    mel_length [1] int32, feature_mean, feature_std [1, n_mels, 1] fp32.

    Valid frames equal NeMo's preprocessor on the unpadded file (the first audio_length samples); samples
    after audio_length change nothing (frames past mel_length are NeMo's pad value, 0).
    feature_mean / feature_std are what NeMo's per-feature normalization used (std includes its
    1e-5 guard): mel × feature_std + feature_mean is the log-mel before normalization.
    """

    def __init__(self, preprocessor: torch.nn.Module, window_samples: int):
        super().__init__()
        # Held as `preprocessor`: fp16 exports keep every op in this scope fp32 (in_preprocessor).
        self.preprocessor = NormalizedFrontEnd(preprocessor.featurizer, window_samples)

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        mel, mel_length, mean, std = self.preprocessor(audio_signal, audio_length.long())
        return mel, mel_length.int(), mean, std


def flat_waveform(audio_signal: torch.Tensor) -> torch.Tensor:
    """[1, S] samples in file order, from either waveform layout."""
    return audio_signal.reshape(1, -1)


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
        signal = flat_waveform(audio_signal)
        mel, mel_length = model.preprocessor(input_signal=trim(signal, audio_length), length=audio_length.long())
        mean, std = nemo_feature_stats(model, signal, audio_length)
        return pad_frames(mel, mel_frames(model, signal.shape[-1])), mel_length.int(), mean, std
    return run


def nemo_feature_stats(model, audio_signal: torch.Tensor, audio_length: torch.Tensor):
    """NeMo's per-feature normalization mean and divisor (std + 1e-5) on the file, each [1, n_mels, 1]."""
    from nemo.collections.asr.parts.preprocessing.features import normalize_batch

    featurizer = model.preprocessor.featurizer
    normalize = featurizer.normalize
    length = audio_length.long()
    with torch.no_grad(), normalization_off(featurizer):
        log_mel, frames = featurizer(trim(flat_waveform(audio_signal), length), length)
    _, mean, std = normalize_batch(log_mel, frames, normalize)
    return mean.unsqueeze(-1), std.unsqueeze(-1)


PREPROCESSOR = Component("preprocessor",
                         wrap=lambda model, contract: PreprocessorWrapper(model.preprocessor, contract.window_samples),
                         reference=nemo_preprocessor, gate="audio", keep_fp32=in_preprocessor,
                         plots={"mel": "mel_plot"})
