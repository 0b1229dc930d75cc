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
    """Corpus WER of normalized texts; an empty reference counts its hypothesis words as insertions."""
    return _rate(references, hypotheses, jiwer.process_words)


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    return _rate(references, hypotheses, jiwer.process_characters)


def _rate(references: list[str], hypotheses: list[str], process) -> float:
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    scored = [(r, h) for r, h in pairs if r]
    errors = sum(len(h.split()) for r, h in pairs if not r)  # insertions against an empty reference
    units = 0
    if scored:
        output = process([r for r, _ in scored], [h for _, h in scored])
        errors += output.substitutions + output.deletions + output.insertions
        units = output.hits + output.substitutions + output.deletions
    return errors / max(units, 1)
