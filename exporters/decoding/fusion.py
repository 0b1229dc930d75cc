"""Custom vocabulary: NeMo's phrase boosting tree and n-gram LM shallow fusion, advanced on the host.

NeMo 3.0's greedy TDT loop (greedy_batch, label looping) takes "fusion models": the n-gram LM
(`ngram_lm_model`, `ngram_lm_alpha`) and the phrase boosting tree (`boosting_tree`, `boosting_tree_alpha`).
At every decision it adds each model's scores × alpha to the non-blank token scores (LM first), keeps the
blank / non-blank choice of the unbiased scores, and when that choice is a token, picks the label on the
biased ones; the duration is chosen as before. A model's state moves on with each emitted token.

Here the models are NeMo's own classes (`NGramGPULanguageModel`, `GPUBoostingTreeModel` built by
`from_config` with the model's tokenizer), run on the CPU with batch 1; the choice is written here for
the joint package's full row of logits; the decision packages take the summed scores (`fusion_scores`) and make
the same choice in their graph.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from exporters.errors import UserError

# NeMo's BoostingTreeModelConfig defaults; its alphas default to 0 (off), so giving phrases or an LM here
# means an alpha of 1 unless one is set.
CONTEXT_SCORE = 1.0
DEPTH_SCALING = 2.0
DEFAULT_ALPHA = 1.0
NGRAM_TOKEN_OFFSET = 100  # NeMo's DEFAULT_TOKEN_OFFSET: token id i is written chr(i + 100) in an ARPA file
SPECIAL_WORDS = ("<s>", "</s>", "<unk>")


@dataclass(frozen=True)
class Fusion:
    """What to fuse: key phrases (boosting tree) and/or an n-gram LM file (ARPA or NeMo's .nemo)."""

    phrases: tuple[str, ...] = ()
    boost_alpha: float = DEFAULT_ALPHA
    boost_score: float = CONTEXT_SCORE
    depth_scaling: float = DEPTH_SCALING
    lm: Path | None = None
    lm_alpha: float = DEFAULT_ALPHA

    def __post_init__(self):
        for name in ("boost_alpha", "boost_score", "depth_scaling", "lm_alpha"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if not self.phrases and self.lm is None:
            raise UserError("fusion needs key phrases or an LM")

    def describe(self) -> dict:
        """What a report records of it."""
        return {"phrases": list(self.phrases), "boost_alpha": self.boost_alpha, "boost_score": self.boost_score,
                "depth_scaling": self.depth_scaling, "lm": None if self.lm is None else str(self.lm),
                "lm_alpha": self.lm_alpha}

    def nemo_greedy_options(self) -> dict:
        """The same settings as NeMo's decoding.greedy options (for change_decoding_strategy)."""
        options = {}
        if self.lm is not None:
            options |= {"ngram_lm_model": str(self.lm), "ngram_lm_alpha": self.lm_alpha}
        if self.phrases:
            options |= {"boosting_tree": {"key_phrases_list": list(self.phrases), "context_score": self.boost_score,
                                          "depth_scaling": self.depth_scaling, "use_triton": False},
                        "boosting_tree_alpha": self.boost_alpha}
        return options

    def models(self, tokenizer, vocab_size: int) -> "FusionModels":
        """NeMo's fusion models for a NeMo tokenizer (`text_to_ids`) over `vocab_size` tokens (blank excluded),
        in NeMo's order: the LM, then the boosting tree."""
        import torch
        from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import (BoostingTreeModelConfig,
                                                                                     GPUBoostingTreeModel)

        models = []
        if self.lm is not None:
            models.append((load_lm(self.lm, vocab_size), self.lm_alpha))
        if self.phrases:
            check_phrases(self.phrases, tokenizer, vocab_size)
            config = BoostingTreeModelConfig(key_phrases_list=list(self.phrases), context_score=self.boost_score,
                                             depth_scaling=self.depth_scaling, use_triton=False)
            with torch.no_grad():
                models.append((GPUBoostingTreeModel.from_config(config, tokenizer=tokenizer), self.boost_alpha))
        return FusionModels(models)


def check_phrases(phrases: tuple[str, ...], tokenizer, vocab_size: int) -> None:
    """Every phrase encodes to known tokens (no <unk>, which NeMo would boost as if it were a word)."""
    unk = getattr(tokenizer, "unk_id", None)
    for phrase in phrases:
        ids = tokenizer.text_to_ids(phrase)
        if not ids or any(i == unk or not 0 <= i < vocab_size for i in ids):
            raise UserError(f"phrase {phrase!r} has characters the model's tokenizer cannot encode")


def read_phrases(path: Path) -> tuple[str, ...]:
    """One phrase per line, blank lines skipped; an empty file is an error."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read phrase file {path}: {error}") from None
    phrases = tuple(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not phrases:
        raise UserError(f"phrase file {path} holds no phrase (one per line)")
    return phrases


def load_lm(path: Path, vocab_size: int):
    """NeMo's NGramGPULanguageModel from an ARPA file of token ids (chr(id + 100), NeMo's convention) or NeMo's
    own .nemo LM, checked against the model's vocabulary."""
    from nemo.collections.asr.parts.submodules.ngram_lm import NGramGPULanguageModel, ngram_lm_batched

    path = Path(path)
    if not path.is_file():
        raise UserError(f"LM {path} is no file" if path.exists() else f"LM file {path} does not exist")
    if path.suffix != ".nemo":
        check_arpa_vocabulary(path, vocab_size)
    try:
        with mock.patch.object(ngram_lm_batched, "tqdm", lambda iterable, **_: iterable):  # no progress bar
            lm = NGramGPULanguageModel.from_file(lm_path=path, vocab_size=vocab_size, use_triton=False)
    except (AssertionError, ValueError, KeyError, IndexError, OSError, RuntimeError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read LM {path}: {type(error).__name__} {error}".rstrip()) from None
    if lm.vocab_size != vocab_size:
        raise UserError(f"LM {path} is over {lm.vocab_size} tokens, the model's vocabulary has {vocab_size}")
    return lm


UNIGRAM = re.compile(r"^[-+\d.eE]+\t([^\t]+)(?:\t[-+\d.eE]+)?$")  # a token may be a whitespace character


def check_arpa_vocabulary(path: Path, vocab_size: int) -> None:
    """An ARPA file's header and unigrams: well formed, and every token a single character of an id the model has."""
    try:
        with open(path, encoding="utf-8") as lines:
            if next(lines, "").strip() != "\\data\\":
                raise UserError(f"LM {path} is no ARPA file: it does not start with \\data\\")
            section = None
            for number, line in enumerate(lines, 2):
                line = line.rstrip("\n")
                if line.startswith("\\"):
                    section = line.strip()
                    if section == "\\end\\":
                        return
                    continue
                if section != "\\1-grams:" or not line.strip():
                    continue
                match = UNIGRAM.match(line)
                if match is None:
                    raise UserError(f"LM {path} line {number}: not an ARPA unigram line ({line[:60]!r})")
                word = match.group(1)
                if word in SPECIAL_WORDS:
                    continue
                if len(word) != 1 or not 0 <= ord(word) - NGRAM_TOKEN_OFFSET < vocab_size:
                    raise UserError(f"LM {path} does not match the model's tokenizer: its word {word!r} is no token "
                                    f"id 0..{vocab_size - 1} written as chr(id + {NGRAM_TOKEN_OFFSET})")
    except UnicodeDecodeError as error:
        raise UserError(f"cannot read LM {path}: not UTF-8 ({error.reason})") from None
    except OSError as error:
        raise UserError(f"cannot read LM {path}: {error.strerror or error}") from None
    raise UserError(f"LM {path} is no complete ARPA file: it has no \\end\\")


class FusionModels:
    """The fusion models' states for one utterance, advanced token by token as NeMo's loop does."""

    def __init__(self, models: list):
        self.models = models

    def start(self) -> "FusionContext":
        import torch

        with torch.no_grad():
            return self.context([model.get_init_states(batch_size=1, bos=True) for model, _ in self.models])

    def after(self, context: "FusionContext", token: int) -> "FusionContext":
        """The context once `token` is emitted: each model's state moves to its candidate for the token."""
        return self.context([candidates[:, token] for candidates in context.candidates])

    def context(self, states: list) -> "FusionContext":
        import torch

        scores, candidates = [], []
        with torch.no_grad():
            for (model, alpha), state in zip(self.models, states):
                model_scores, model_candidates = model.advance(states=state)
                scores.append(model_scores.to(torch.float32) * alpha)
                candidates.append(model_candidates)
        total = sum(scores[1:], scores[0].clone())[0].numpy()
        return FusionContext(states, scores, candidates, total)


@dataclass(frozen=True)
class FusionContext:
    states: list
    scores: list  # per model, [1, V] float32, alpha applied
    candidates: list  # per model, [1, V] next states
    total: np.ndarray  # [V] float32: the scores summed, what a decision package is fed


def fused_decision(logits_row: np.ndarray, num_token_logits: int, context: FusionContext,
                   token_bias: np.ndarray | None = None) -> tuple[int, int]:
    """NeMo's greedy TDT choice with fusion on one raw joint row [V + 1 + K]: the row log-softmaxed (NeMo's joint
    on the CPU), the language lock's bias added to the V + 1 token scores; blank or not on those scores, a
    token's label on its non-blank scores plus each model's fusion scores (in order), the duration as before."""
    import torch

    row = torch.from_numpy(np.asarray(logits_row, np.float32).reshape(1, -1)).log_softmax(dim=-1)
    if token_bias is not None:
        row = torch.cat([row[:, :num_token_logits] + torch.from_numpy(token_bias), row[:, num_token_logits:]], dim=-1)
    blank = num_token_logits - 1
    label = int(row[:, :num_token_logits].argmax(dim=-1))
    if label != blank:
        fused = row[:, :blank].clone()
        for scores in context.scores:
            fused += scores
        label = int(fused.argmax(dim=-1))
    return label, int(row[:, num_token_logits:].argmax(dim=-1))
