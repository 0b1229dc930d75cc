"""Word and character error rates (exporters/wer.py) on hand-computed cases: normalization, corpus-level
totals, and what an empty reference means (issue 35 item 5)."""

from __future__ import annotations

import pytest

from exporters.wer import char_error_rate, word_error_rate


@pytest.mark.parametrize("references, hypotheses, wer, cer", [
    (["the cat sat"], ["the cat sat"], 0.0, 0.0),
    (["the cat sat"], ["the bat sat"], 1 / 3, 1 / 11),  # one word, one of 11 characters (spaces count)
    (["Hello, Anna!"], ["hello anna"], 0.0, 0.0),  # case and punctuation are normalized away
    (["a b"], [""], 1.0, 1.0),  # 2 words deleted of 2; 3 characters deleted of 3
    (["a b c d", "e"], ["a b c d", "f"], 1 / 5, 1 / 8),  # corpus totals, not the mean of 0 and 1
    (["", "a b"], ["x y", "a b"], 2 / 2, 3 / 3),  # an empty reference: its hypothesis's words / characters inserted
    ([""], ["x y"], 2.0, 3.0),  # only empty references: jiwer divides the insertions by one
    ([""], [""], 0.0, 0.0),
])
def test_error_rates_on_hand_computed_cases(references, hypotheses, wer, cer):
    """Coverage: WER and CER against counts made by hand; CER counts characters where WER counts words, also
    for an empty reference (it used to count the hypothesis's words in both)."""
    assert word_error_rate(references, hypotheses) == pytest.approx(wer)
    assert char_error_rate(references, hypotheses) == pytest.approx(cer)
