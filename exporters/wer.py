"""Word and character error rates through jiwer, after one documented normalizer.

`normalize_text`: lower-case, every character that is not a letter, digit, apostrophe or space
becomes a space, and runs of spaces collapse. So "Hello, Anna!" and "hello anna" score 0 errors;
capitalization and punctuation are judged separately by exact-text comparisons where a test needs
them. Aggregates are total errors over total reference words (jiwer's corpus-level measure), not a
mean of per-file rates.
"""

from __future__ import annotations

import re

import jiwer

_NOT_WORD = re.compile(r"[^\w' ]+|_")


def normalize_text(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER of normalized texts (jiwer's): substitutions + deletions + insertions over reference words."""
    return jiwer.process_words(*_normalized(references, hypotheses)).wer


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER of normalized texts (jiwer's), spaces counted as characters."""
    return jiwer.process_characters(*_normalized(references, hypotheses)).cer


def _normalized(references: list[str], hypotheses: list[str]) -> tuple[list[str], list[str]]:
    """An empty (or, once normalized, empty) reference stays in: its hypothesis's words, or characters, count
    as insertions, as in jiwer and NeMo's word_error_rate. Only when every reference is empty do the two
    differ: jiwer divides by one (the rate is the insertion count), NeMo reports infinity."""
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    return [r for r, _ in pairs], [h for _, h in pairs]
