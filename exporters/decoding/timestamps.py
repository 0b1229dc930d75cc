"""Token and word timestamps from TDT decisions, grouped the way NeMo groups SentencePiece tokens.

NeMo (rnnt_decoding.py, TDT): a token spans [frame, frame + duration) encoder frames; a punctuation
token is moved to the end of the token before it; a word starts at every token whose piece differs
from its decoded text (the "▁" word marker) and ends where the next word's first token starts,
taking the end of its own last token. Seconds = frames × subsampling × hop / sample rate.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TokenTiming:
    token_id: int
    piece: str
    window: int
    frame: int  # encoder frame within its window
    duration: int  # frames
    start: float  # seconds from the start of the audio
    end: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float

    def to_dict(self) -> dict:
        return asdict(self)


def punctuation_pieces(processor) -> set[str]:
    """Punctuation characters appearing in any vocabulary piece (NeMo's `supported_punctuation`)."""
    return {char for i in range(processor.get_piece_size()) for char in processor.id_to_piece(i)
            if unicodedata.category(char).startswith("P")}


def refine_punctuation(timings: list[TokenTiming], punctuation: set[str]) -> list[TokenTiming]:
    """A punctuation token starts and ends where the previous token ends (NeMo's TDT refinement)."""
    refined = list(timings)
    for i in range(1, len(refined)):
        if refined[i].piece[:1] in punctuation:
            previous_end = refined[i - 1].end
            refined[i] = TokenTiming(**{**refined[i].to_dict(), "start": previous_end, "end": previous_end})
    return refined


def starts_word(processor, token_id: int) -> bool:
    """Whether a token carries the word-start marker (its piece differs from its decoded text)."""
    return processor.id_to_piece(token_id) != processor.decode([token_id])


def group_words(timings: list[TokenTiming], processor) -> list[WordTiming]:
    """Words from token timings, by NeMo's SentencePiece grouping."""
    groups: list[list[TokenTiming]] = []
    for timing in timings:
        if not groups or starts_word(processor, timing.token_id):
            groups.append([])
        groups[-1].append(timing)
    words = []
    for group in groups:
        text = processor.decode([t.token_id for t in group])
        words.append(WordTiming(text, group[0].start, group[-1].end))
    return words
