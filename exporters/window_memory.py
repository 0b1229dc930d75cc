"""The largest window this machine can export: checked before the model loads.

Tracing and converting run the encoder once on a window of silence. Its self-attention is full (every frame
attends to every frame), so each layer holds [heads, T, T] float32 score matrices: memory grows with the
square of the window. `convert --windows 3600` on Parakeet v3 (8 heads, T = 45 001 frames) asks for 64.8 GB
in one allocation. A window whose scores cannot fit in the memory available now is refused in one line.
"""

from __future__ import annotations

import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from exporters.errors import UserError

# Relative-position attention holds about this many [heads, T, T]-sized float32 tensors at once (content and
# position terms, the position term before its shift [heads, T, 2T - 1], scores, softmax): NeMo's
# RelPositionMultiHeadAttention at 8 heads grew the peak resident set by 5.6 and 5.3 copies at T = 2000 and 4000.
ATTENTION_COPIES = 6
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Attention:
    heads: int
    subsampling: int
    sample_rate: int = 16000
    hop_length: int = 160

    def frames(self, seconds: float) -> int:
        """Encoder frames of a window (mel frames, each stride-2 stage halving them, rounded up)."""
        mel = int(seconds * self.sample_rate) // self.hop_length + 1
        return math.ceil(mel / self.subsampling)

    def bytes_for(self, seconds: float) -> int:
        return ATTENTION_COPIES * self.heads * self.frames(seconds) ** 2 * FLOAT32_BYTES

    def largest_window(self, budget_bytes: int) -> float:
        """The longest window, in whole seconds, whose attention fits in budget_bytes."""
        frames = math.isqrt(budget_bytes // (ATTENTION_COPIES * self.heads * FLOAT32_BYTES))
        return max(0, (frames * self.subsampling - 1) * self.hop_length // self.sample_rate)


V3_ATTENTION = Attention(heads=8, subsampling=8)  # parakeet-tdt-0.6b-v3


def source_attention(source: str, kind: str) -> Attention:
    """The attention shape of a model source, read without loading it: a preset's widths, a .nemo's
    model_config.yaml; a Hub id is taken to be v3 (its config is only known once downloaded)."""
    from exporters.checkpoints import PRESETS, TRAINED

    if kind == "preset":
        return Attention(heads=PRESETS[source].n_heads, subsampling=8)
    if kind in ("trained", "file"):
        return archive_attention(TRAINED[source] if kind == "trained" else Path(source))
    return V3_ATTENTION


def archive_attention(path: Path) -> Attention:
    """Heads, subsampling and audio rates from a .nemo archive's config (v3's if it cannot be read here:
    loading the checkpoint says what is wrong with it)."""
    import yaml

    try:
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if Path(m.name).name == "model_config.yaml")
            config = yaml.safe_load(archive.extractfile(member))
        encoder, preprocessor = config["encoder"], config["preprocessor"]
        sample_rate = int(preprocessor.get("sample_rate", 16000))
        return Attention(heads=int(encoder["n_heads"]), subsampling=int(encoder.get("subsampling_factor", 8)),
                         sample_rate=sample_rate,
                         hop_length=round(float(preprocessor.get("window_stride", 0.01)) * sample_rate))
    except (OSError, tarfile.TarError, StopIteration, KeyError, TypeError, ValueError, yaml.YAMLError):
        return V3_ATTENTION


def available_bytes() -> int:
    """Memory available to a new allocation now (Linux MemAvailable; elsewhere physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_window_memory(windows: tuple[float, ...], attention: Attention, available: int | None = None) -> None:
    """Refuse a window whose encoder attention cannot fit in the memory available, naming the largest that can."""
    available = available_bytes() if available is None else available
    for seconds in sorted(windows, reverse=True):
        needed = attention.bytes_for(seconds)
        if needed > available:
            raise UserError(
                f"window {seconds:g} s needs about {needed / 1e9:.1f} GB for the encoder's attention "
                f"({attention.heads} heads × {attention.frames(seconds)}² frames: full attention grows with the "
                f"square of the window) and {available / 1e9:.1f} GB is available; the largest window this "
                f"machine can export now is {attention.largest_window(available)} s")
