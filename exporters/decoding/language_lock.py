"""Language lock: a token bias that keeps greedy decoding to the pieces of chosen scripts or of a list.

Parakeet v3 sometimes drifts into another language mid-utterance. The lock is a bias [V + 1] added to the
token logits before every choice (joint_decision's optional `token_bias` input, or on the host for the raw
joint): 0 for allowed tokens, BLOCKED for the rest. Blank (= V) is always allowed.

A piece is written in a script when every character of it (the word-boundary mark ▁ aside) is of that
script or of none in particular (Unicode's Common and Inherited: digits, punctuation, combining marks).
Script names are Unicode's (Latin, Cyrillic, Greek, Arabic, Han, …), case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

from exporters.errors import UserError

WORD_BOUNDARY = "\u2581"
# Far below any logit, and finite in fp16 (|x| <= 65504), so biased logits stay finite in every precision.
BLOCKED = -1.0e4
NEUTRAL_SCRIPTS = ("Common", "Inherited")


def script_pattern(scripts: tuple[str, ...]) -> regex.Pattern:
    """Matches a text made only of characters of the scripts (or of none in particular)."""
    properties = "".join(rf"\p{{Script={name}}}" for name in (*NEUTRAL_SCRIPTS, *scripts))
    try:
        return regex.compile(rf"[{properties}]*")
    except regex.error:
        unknown = [name for name in scripts if not valid_script(name)]
        raise UserError(f"unknown script {', '.join(unknown)}; use Unicode script names such as "
                        "latin, cyrillic, greek") from None


def valid_script(name: str) -> bool:
    try:
        regex.compile(rf"\p{{Script={name}}}")
    except regex.error:
        return False
    return True


def written_in(piece: str, pattern: regex.Pattern) -> bool:
    return pattern.fullmatch(piece.replace(WORD_BOUNDARY, "")) is not None


def listed_token_ids(tokens, tokenizer) -> set[int]:
    """Token ids for a list of ids (int or digit strings) and pieces."""
    size = tokenizer.get_piece_size()
    ids = set()
    for token in tokens:
        token = str(token).strip()
        if token.isdigit():
            if int(token) >= size:
                raise UserError(f"token id {token} out of range: the vocabulary has ids 0 to {size - 1}")
            ids.add(int(token))
        elif tokenizer.id_to_piece(tokenizer.piece_to_id(token)) == token:
            ids.add(tokenizer.piece_to_id(token))
        else:
            raise UserError(f"token {token!r} is not a piece of this vocabulary")
    return ids


@dataclass(frozen=True)
class LanguageLock:
    """Allowed tokens: the pieces written in `scripts`, plus the `tokens` listed (ids or pieces)."""

    scripts: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()

    def allowed_ids(self, tokenizer) -> set[int]:
        if not self.scripts and not self.tokens:
            raise UserError("a language lock needs at least one script or token")
        allowed = listed_token_ids(self.tokens, tokenizer)
        if self.scripts:
            pattern = script_pattern(tuple(name.strip().title() for name in self.scripts))
            allowed |= {i for i in range(tokenizer.get_piece_size()) if written_in(tokenizer.id_to_piece(i), pattern)}
        return allowed

    def bias(self, tokenizer, num_token_logits: int) -> np.ndarray:
        """[V + 1] float32: 0 for allowed tokens and blank (= V), BLOCKED elsewhere."""
        bias = np.full(num_token_logits, BLOCKED, np.float32)
        bias[sorted(self.allowed_ids(tokenizer))] = 0.0
        bias[num_token_logits - 1] = 0.0
        return bias


def read_token_list(path: Path) -> tuple[str, ...]:
    """One token id or piece per line; blank lines are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read token list {path}: {error}") from None
    return tuple(line.strip() for line in lines if line.strip())
