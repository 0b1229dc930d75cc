"""How long audio is cut into windows: left context + chunk + right context, on encoder-frame bounds.

Only each chunk's encoder frames are decoded; the contexts give the encoder's attention and
convolutions the audio around the chunk, so its frames come close to what the encoder computes
over the whole utterance. NeMo normalizes each mel feature over the whole utterance, so the windows'
features are re-normalized with the utterance's statistics (gathered from every chunk's own frames)
before the encoder runs; per-window statistics alone flip words (measured on `digits`). Chunks tile the audio back to back; the last chunk runs to the true end of
the audio (it absorbs a remainder of up to one right context). Audio that fits one window is a
single window holding the whole file, with no context cut off.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from exporters.errors import UserError


@dataclass(frozen=True)
class Chunking:
    """Sizes in seconds; each is rounded to whole encoder frames (80 ms for v3)."""

    chunk_seconds: float = 8.0
    left_seconds: float = 3.2
    right_seconds: float = 3.2

    def frames(self, frame_seconds: float) -> tuple[int, int, int]:
        """(left, chunk, right) in encoder frames."""
        return tuple(round(seconds / frame_seconds)
                     for seconds in (self.left_seconds, self.chunk_seconds, self.right_seconds))


@dataclass(frozen=True)
class Chunk:
    index: int
    window_start: int  # first sample of the window
    window_end: int  # one past its last sample
    start_frame: int  # the chunk's first encoder frame, counted from the start of the audio
    end_frame: int | None  # one past the chunk's last encoder frame, from the start of the audio;
    # None for the final chunk, which runs to the end of the audio (the encoder's valid length) and
    # where NeMo's end-of-utterance rule applies

    @property
    def final(self) -> bool:
        return self.end_frame is None


def plan_chunks(total_samples: int, window_samples: int, frame_samples: int, sample_rate: int,
                chunking: Chunking) -> list[Chunk]:
    """The windows that decode `total_samples` of audio, in order."""
    if total_samples <= window_samples:
        return [Chunk(0, 0, total_samples, 0, None)]
    left, chunk, right = chunking.frames(frame_samples / sample_rate)
    check_fits(left, chunk, right, frame_samples, window_samples)
    chunks = []
    start = 0  # first sample of the current chunk
    while True:
        window_start = max(0, start - left * frame_samples)
        final = start + (chunk + right) * frame_samples >= total_samples
        window_end = total_samples if final else start + (chunk + right) * frame_samples
        end_frame = None if final else start // frame_samples + chunk
        chunks.append(Chunk(len(chunks), window_start, window_end, start // frame_samples, end_frame))
        if final:
            return chunks
        start += chunk * frame_samples


def check_fits(left: int, chunk: int, right: int, frame_samples: int, window_samples: int) -> None:
    if chunk < 1 or left < 0 or right < 0:
        raise UserError(f"chunking needs a chunk of at least one encoder frame and no negative context "
                        f"(got left {left}, chunk {chunk}, right {right} frames)")
    if (left + chunk + right) * frame_samples > window_samples:
        raise UserError(f"left context + chunk + right context = {left + chunk + right} encoder frames "
                        f"({(left + chunk + right) * frame_samples} samples) exceeds the package window of "
                        f"{window_samples} samples")


# NeMo's per-feature normalization adds this to the standard deviation (features.py, CONSTANT).
NORMALIZATION_GUARD = 1e-5


def chunk_mel_frames(chunk: Chunk, valid_mel_frames: int, hop_length: int, subsampling: int) -> slice:
    """The window's mel frames that belong to the chunk itself (no context): chunks tile the utterance."""
    origin = chunk.window_start // hop_length
    end = valid_mel_frames if chunk.final else chunk.end_frame * subsampling - origin
    return slice(chunk.start_frame * subsampling - origin, end)


def utterance_statistics(raw_chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """NeMo's per-feature mean and std (+ guard) over the whole utterance's log-mel [n_mels, frames]
    pieces: what NeMo normalizes with when it transcribes the long file at once."""
    frames = np.concatenate(raw_chunks, axis=1).astype(np.float64)
    mean = frames.mean(axis=1)
    std = np.sqrt(((frames - mean[:, None]) ** 2).sum(axis=1) / (frames.shape[1] - 1)) + NORMALIZATION_GUARD
    return mean[None, :, None].astype(np.float32), std[None, :, None].astype(np.float32)


def raw_log_mel(features: dict) -> np.ndarray:
    """A preprocessor output's valid frames before normalization, [1, n_mels, mel_length]:
    mel × feature_std + feature_mean."""
    valid = int(features["mel_length"][0])
    return features["mel"][..., :valid] * features["feature_std"] + features["feature_mean"]


def renormalized(features: dict, mean: np.ndarray, std: np.ndarray) -> dict:
    """A preprocessor output re-normalized with other statistics, zero past mel_length as NeMo pads."""
    mel = np.zeros_like(features["mel"])
    raw = raw_log_mel(features)
    mel[..., :raw.shape[-1]] = (raw - mean) / std
    return {"mel": mel, "mel_length": features["mel_length"]}


def samples_per_frame(spec) -> int:
    """Audio samples per encoder frame of a ModelSpec (hop × subsampling)."""
    return spec.subsampling_factor * spec.hop_length


def check_chunking(contract, chunking: Chunking) -> None:
    """Fail early (one line) when the chunk and contexts are no lengths or do not fit the package window."""
    for name, seconds in (("--chunk-seconds", chunking.chunk_seconds), ("--left-context-seconds", chunking.left_seconds),
                          ("--right-context-seconds", chunking.right_seconds)):
        if not math.isfinite(seconds) or seconds < 0:
            raise UserError(f"{name} {seconds:g}: give a finite number of seconds, not negative")
    spec = contract.model
    frame_samples = samples_per_frame(spec)
    check_fits(*chunking.frames(frame_samples / spec.sample_rate), frame_samples, contract.window_samples)
