"""Read audio the way users hand it to us: any rate, mono or stereo, int or float, WAV or FLAC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.errors import UserError

# Speech clips committed with the project (see fixtures/audio/make_clips.sh); absent from a wheel install.
FIXTURE_AUDIO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "audio"


def load_audio(path: Path | str, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at sample_rate; one clear UserError for anything unusable."""
    import soundfile as sf
    import soxr

    check_regular_file(Path(path))
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise UserError(f"cannot read audio {path}: {error}") from error
    if samples.size == 0:
        raise UserError(f"audio {path} is empty")
    if not np.all(np.isfinite(samples)):
        raise UserError(f"audio {path} contains NaN or infinite samples")
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="VHQ").astype(np.float32)
    return mono


def check_regular_file(path: Path) -> None:
    """Audio must be a file: a directory, FIFO or device is said so (and a FIFO is never opened, so nothing
    blocks on it); a name longer than the filesystem allows is said so too."""
    import errno
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"audio file not found: {path}") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise UserError(f"audio file name too long for the filesystem: {str(path)[:80]}…") from None
        raise UserError(f"cannot read audio {path}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or other file"
        raise UserError(f"audio {path} is not a regular file ({kind})")


def fit_window(samples: np.ndarray, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio_signal [1, window] zero-padded or trimmed, audio_length [1]) for a fixed-window package."""
    valid = min(len(samples), window_samples)
    signal = np.zeros((1, window_samples), dtype=np.float32)
    signal[0, :valid] = samples[:valid]
    return signal, np.array([valid], dtype=np.int32)


def join_with_pauses(clips: list[np.ndarray], sample_rate: int, min_seconds: float = 60.0,
                     pause_seconds: tuple[float, float] = (0.25, 0.9), seed: int = 0,
                     noise_level: float = 1e-3) -> tuple[np.ndarray, list[int]]:
    """Long-form audio: clips in a seeded order, each followed by a seeded pause, cycling through all
    clips (reshuffled each round) until at least `min_seconds` are reached.

    Pauses, and the whole clip, carry seeded white noise at `noise_level` (-60 dBFS by default), as a
    room does: seconds of digital silence drive the log-mel to its guard value and skew the per-feature
    normalization statistics far outside anything the models saw in training.

    Returns the samples and the clip indices in the order they were joined (for the reference text).
    """
    if not clips:
        raise ValueError("join_with_pauses needs at least one clip")
    rng = np.random.default_rng(seed)
    pieces, order, total = [], [], 0
    while total < min_seconds * sample_rate:
        for index in rng.permutation(len(clips)):
            pause = np.zeros(int(rng.uniform(*pause_seconds) * sample_rate), np.float32)
            pieces += [clips[index].astype(np.float32), pause]
            order.append(int(index))
            total += len(clips[index]) + len(pause)
            if total >= min_seconds * sample_rate:
                break
    joined = np.concatenate(pieces)
    return (joined + noise_level * rng.standard_normal(len(joined))).astype(np.float32), order


def held_out_entries(model_name: str) -> list[tuple[Path, str]]:
    """(path, reference text) of each committed held-out clip of a trained model
    (fixtures/audio/<model>/heldout_*.wav, name order; texts from transcripts.json beside them)."""
    import json

    folder = FIXTURE_AUDIO_DIR / model_name
    texts = json.loads((folder / "transcripts.json").read_text())["clips"]
    return [(path, texts[path.name]["text"]) for path in sorted(folder.glob("heldout_*.wav"))]


def held_out_clips(model_name: str, sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
    """The held-out clips of a trained model, loaded, and their reference texts."""
    entries = held_out_entries(model_name)
    return [load_audio(path, sample_rate) for path, _ in entries], [text for _, text in entries]
