"""The long-form case: a trained model's held-out clips joined into a minute of speech, shifted on a grid.

The long-audio tests assert on it and the long-form benchmark reports it (docs/long-audio-and-language-lock.md).
"""

from __future__ import annotations

import numpy as np

from exporters.audio import held_out_clips, join_with_pauses

GRID_SHIFTS = [0.125 * step for step in range(12)]  # seconds of silence before the audio: 0 .. 1.375
LONG_FORM_SECONDS = 60.0
LONG_WINDOW_SECONDS = 65.0  # a window that holds the long-form clip at every grid shift
DECODE_STEP_COMPONENTS = ("preprocessor", "encoder", "decoder", "decode_step")


def long_form(model_name: str, sample_rate: int) -> tuple[np.ndarray, str]:
    """At least a minute of the model's committed held-out clips joined with natural pauses, and its true text."""
    clips, texts = held_out_clips(model_name, sample_rate)
    audio, order = join_with_pauses(clips, sample_rate, LONG_FORM_SECONDS, seed=0)
    return audio, " ".join(texts[index] for index in order)


def grid_shifted(audio: np.ndarray, sample_rate: int, shifts: list[float] = GRID_SHIFTS) -> dict[str, np.ndarray]:
    """The audio after each shift's seconds of silence, by name (`shift_0.125`)."""
    return {f"shift_{shift:.3f}": np.concatenate([np.zeros(int(shift * sample_rate), np.float32), audio])
            for shift in shifts}


def word_differences(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions between the two word sequences (no normalization)."""
    import jiwer

    if not reference.split():
        return len(hypothesis.split())
    output = jiwer.process_words(reference, hypothesis)
    return output.substitutions + output.deletions + output.insertions
