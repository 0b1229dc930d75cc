"""The trained `digits` checkpoint: NeMo transcribes committed held-out clips exactly; tiny's topology."""

from __future__ import annotations

import json

import pytest

from exporters import checkpoints
from exporters.audio import FIXTURE_AUDIO_DIR
from exporters.inspect_model import inspect_model

DIGITS_AUDIO_DIR = FIXTURE_AUDIO_DIR / "digits"
# Shared by tiny and digits: everything but the widths (and the trained model's dropout, which is off).
TOPOLOGY_FIELDS = ("sample_rate", "n_mels", "n_fft", "win_length", "hop_length", "subsampling_factor",
                   "pred_layers", "durations", "max_symbols_per_step", "greedy_semantics")
ENCODER_FIELDS = ("feat_in", "subsampling", "subsampling_factor", "self_attention_model", "conv_kernel_size",
                  "conv_norm_type", "n_layers", "use_bias", "xscaling", "untie_biases", "att_context_size",
                  "causal_downsampling", "ff_expansion_factor")


@pytest.fixture(scope="module")
def digits_model():
    return checkpoints.load_model("digits")


@pytest.fixture(scope="module")
def references() -> dict[str, str]:
    return json.loads((DIGITS_AUDIO_DIR / "transcripts.json").read_text())["clips"]


def test_nemo_greedy_transcribes_held_out_clips(digits_model, references):
    """Coverage: NeMo's greedy_batch decoding of each committed held-out clip equals its reference text."""
    names = sorted(references)
    hypotheses = digits_model.transcribe([str(DIGITS_AUDIO_DIR / name) for name in names], batch_size=1,
                                         verbose=False)
    texts = [h.text if hasattr(h, "text") else h for h in hypotheses]
    assert dict(zip(names, texts)) == {name: references[name]["text"] for name in names}


def test_topology_matches_tiny(digits_model, tiny_model):
    """Coverage: same front end, subsampling, encoder kind, prediction net, durations and loss as tiny."""
    digits, tiny = inspect_model(digits_model), inspect_model(tiny_model)
    assert {k: getattr(digits, k) for k in TOPOLOGY_FIELDS} == {k: getattr(tiny, k) for k in TOPOLOGY_FIELDS}
    assert digits.blank_id == digits.vocab_size == digits_model.tokenizer.vocab_size
    assert digits_model.cfg.preprocessor == tiny_model.cfg.preprocessor
    assert {k: digits_model.cfg.encoder[k] for k in ENCODER_FIELDS} == \
        {k: tiny_model.cfg.encoder[k] for k in ENCODER_FIELDS}
    # (cfg.decoding itself is not compared: NeMo's transcribe(timestamps=True) rewrites it in place.)
    assert (digits_model.cfg.decoding.strategy, digits_model.cfg.decoding.model_type) == \
        (tiny_model.cfg.decoding.strategy, tiny_model.cfg.decoding.model_type)
    assert digits_model.cfg.loss == tiny_model.cfg.loss
    assert type(digits_model) is type(tiny_model)


def test_loads_by_name_from_the_repository():
    """Coverage: `digits` resolves to the committed .nemo file under the repository root."""
    assert checkpoints.TRAINED["digits"] == checkpoints.REPO_ROOT / "fixtures" / "models" / "digits_tdt.nemo"
    assert checkpoints.TRAINED["digits"].is_file()
