"""Token and word timestamps from TDT decisions, grouped the way NeMo groups SentencePiece tokens.

NeMo (rnnt_decoding.py, TDT): a token spans [frame, frame + duration) encoder frames; a punctuation
token is moved to the end of the token before it; for subword vocabularies a word starts at every
token whose piece differs from its decoded text (the "▁" word marker) and ends with the end of its
own last token; character-like vocabularies split words at space tokens instead (see group_words).
Seconds = frames × subsampling × hop / sample rate.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TokenTiming:
    token_id: int
    piece: str
    window: int  # index of the window (chunk) that decoded it
    frame: int  # encoder frame, counted from the start of the audio
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
    """Words from token timings, grouped as NeMo does.

    NeMo 2.x first guesses whether the vocabulary is character-like: if the tokens' decoded texts are
    no longer than one character on average, words are split only at tokens decoding to a space;
    otherwise (and always from NeMo 3.0, which dropped the guess) at SentencePiece word-start tokens.
    """
    texts = [processor.decode([t.token_id]) for t in timings]
    if not guesses_character_vocabulary() or sum(len(text) for text in texts) > len(texts):
        starts = [starts_word(processor, t.token_id) for t in timings]
        groups = split_before(timings, starts)
        return [WordTiming(processor.decode([t.token_id for t in group]), group[0].start, group[-1].end)
                for group in groups]
    return character_words(timings, texts)


def guesses_character_vocabulary() -> bool:
    """Whether the installed NeMo's word grouping still guesses character-like vocabularies (2.x)."""
    from exporters.inspect_model import nemo_major_version

    return nemo_major_version() < 3


def split_before(timings: list[TokenTiming], starts: list[bool]) -> list[list[TokenTiming]]:
    groups: list[list[TokenTiming]] = []
    for timing, starts_group in zip(timings, starts):
        if not groups or starts_group:
            groups.append([])
        groups[-1].append(timing)
    return groups


def character_words(timings: list[TokenTiming], texts: list[str]) -> list[WordTiming]:
    """Words as runs of tokens between tokens that decode to a space (NeMo's character-model rule)."""
    words, current = [], []
    for timing, text in zip(timings, texts):
        if text == " ":
            if current:
                words.append(current)
            current = []
        else:
            current.append((timing, text))
    if current:
        words.append(current)
    return [WordTiming("".join(text for _, text in word), word[0][0].start, word[-1][0].end) for word in words]
