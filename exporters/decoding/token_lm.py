"""A token n-gram LM in ARPA form for NeMo's NGramGPULanguageModel, from texts and the model's tokenizer.

NeMo fuses an LM over the ASR model's own tokens: each token id i is a one-character word chr(i + 100) in
the ARPA file (NeMo's DEFAULT_TOKEN_OFFSET); KenLM's lmplz is what NeMo's recipe trains it with. This writes
the same kind of file without KenLM: interpolated absolute discounting (each order's counts less a discount,
the rest given to the next lower order; unigrams add-one over every token and </s>), so the probabilities of
every history sum to 1 and every token of the vocabulary has one.

    uv run python -m exporters.decoding.token_lm TEXTS.txt --model sentences --output lm.arpa [--order 3]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from pathlib import Path

from exporters.decoding.fusion import NGRAM_TOKEN_OFFSET

BOS, EOS = "<s>", "</s>"
DISCOUNT = 0.5


def count_ngrams(token_lists: list[list[int]], order: int) -> list[Counter]:
    """counts[n - 1][ngram] for n = 1..order over <s> tokens </s> (words as strings)."""
    counts = [Counter() for _ in range(order)]
    for tokens in token_lists:
        words = [BOS, *(chr(t + NGRAM_TOKEN_OFFSET) for t in tokens), EOS]
        for n in range(1, order + 1):
            for start in range(len(words) - n + 1):
                counts[n - 1][tuple(words[start:start + n])] += 1
    return counts


def token_arpa(token_lists: list[list[int]], vocab_size: int, order: int = 3, discount: float = DISCOUNT) -> str:
    """The ARPA text of the LM over sequences of token ids."""
    counts = count_ngrams(token_lists, order)
    vocabulary = [chr(i + NGRAM_TOKEN_OFFSET) for i in range(vocab_size)] + [EOS]
    total = sum(count for (word,), count in counts[0].items() if word != BOS)
    unigram = {(word,): (counts[0][(word,)] + 1) / (total + len(vocabulary)) for word in vocabulary}
    history_totals, followers = [], []
    for n in range(2, order + 1):
        totals, distinct = defaultdict(int), defaultdict(int)
        for ngram, count in counts[n - 1].items():
            totals[ngram[:-1]] += count
            distinct[ngram[:-1]] += 1
        history_totals.append(totals)
        followers.append(distinct)

    def backoff(history: tuple) -> float:
        """The mass an order's seen words give up for a history: discount × its distinct followers / its count."""
        n = len(history) + 1
        if n > order or history not in history_totals[n - 2]:
            return 1.0
        return discount * followers[n - 2][history] / history_totals[n - 2][history]

    def probability(ngram: tuple) -> float:
        """The interpolated probability, which is what a backoff reader computes for the listed n-grams."""
        if len(ngram) == 1:
            return unigram.get(ngram, 0.0)
        lower = probability(ngram[1:])
        totals = history_totals[len(ngram) - 2]
        if ngram[:-1] not in totals:
            return lower
        seen = max(counts[len(ngram) - 1][ngram] - discount, 0) / totals[ngram[:-1]]
        return seen + backoff(ngram[:-1]) * lower

    probabilities = [unigram, *({ngram: probability(ngram) for ngram in counts[n - 1]} for n in range(2, order + 1))]
    lines = ["\\data\\", f"ngram 1={len(unigram) + 1}",
             *(f"ngram {n}={len(counts[n - 1])}" for n in range(2, order + 1)), ""]
    for n in range(1, order + 1):
        lines.append(f"\\{n}-grams:")
        entries = {(BOS,): None, **probabilities[0]} if n == 1 else probabilities[n - 1]
        for ngram, value in sorted(entries.items(), key=lambda item: item[0]):
            log_probability = -99.0 if value is None else math.log10(value)
            fields = [f"{log_probability:.7f}", " ".join(ngram)]
            if n < order and ngram != (EOS,):
                fields.append(f"{math.log10(backoff(ngram)):.7f}")
            lines.append("\t".join(fields))
        lines.append("")
    lines.append("\\end\\")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", type=Path, help="one text per line")
    parser.add_argument("--model", required=True, help="the checkpoint whose tokenizer the LM is over")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--order", type=int, default=3)
    args = parser.parse_args()
    from exporters.checkpoints import load_model

    tokenizer = load_model(args.model).tokenizer
    texts = [line.strip() for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
    args.output.write_text(token_arpa([tokenizer.text_to_ids(text) for text in texts], tokenizer.vocab_size,
                                      args.order), encoding="utf-8")


if __name__ == "__main__":
    main()
