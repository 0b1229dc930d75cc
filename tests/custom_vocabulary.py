"""Custom-vocabulary material for the tests and benchmarks: phrases that matter on the trained models' held-out
clips, and the sentences model's token LM (training/sentences_lm.py)."""

from __future__ import annotations

import sys

from exporters.checkpoints import REPO_ROOT

# Words the sentences model gets wrong on its held-out clips (NeMo: "yesterdays in Oslo", "my boat", "late").
SENTENCE_PHRASES = ("across the horse", "happy boat", "later")
DIGIT_PHRASES = ("seven", "oh four")


def write_sentences_lm(path, tokenizer):
    sys.path.insert(0, str(REPO_ROOT / "training"))
    from sentences_lm import write_sentences_lm as write

    return write(path, tokenizer)
