"""The trained checkpoints (`digits`, `sentences`): NeMo transcribes their committed held-out clips;
v3's topology at small widths; loadable by name; small enough to commit."""

from __future__ import annotations

import json

import pytest

from exporters import checkpoints
from exporters.audio import FIXTURE_AUDIO_DIR
from exporters.inspect_model import inspect_model
from exporters.wer import word_error_rate

# Shared with tiny: everything but the widths (and the trained models' dropout, which is off).
TOPOLOGY_FIELDS = ("sample_rate", "n_mels", "n_fft", "win_length", "hop_length", "subsampling_factor",
                   "pred_layers", "durations", "max_symbols_per_step", "greedy_semantics")
ENCODER_FIELDS = ("feat_in", "subsampling", "subsampling_factor", "self_attention_model", "conv_kernel_size",
                  "conv_norm_type", "use_bias", "xscaling", "untie_biases", "att_context_size",
                  "causal_downsampling", "ff_expansion_factor")
MAX_CHECKPOINT_BYTES = 20_000_000
# digits must be exact on its committed clips; sentences is held to its training target (training/README.md).
HELD_OUT_WER_BAR = {"digits": 0.0, "sentences": 0.10}


@pytest.fixture(scope="module", params=sorted(checkpoints.TRAINED))
def trained(request):
    return request.param, checkpoints.load_model(request.param)


def references(name: str) -> dict[str, dict]:
    return json.loads((FIXTURE_AUDIO_DIR / name / "transcripts.json").read_text())["clips"]


def test_nemo_greedy_transcribes_held_out_clips(trained):
    """Coverage: NeMo's greedy_batch decoding (batch of 1) of the committed held-out clips: WER within the
    model's bar (digits: every clip exact)."""
    name, model = trained
    clips = references(name)
    names = sorted(clips)
    hypotheses = model.transcribe([str(FIXTURE_AUDIO_DIR / name / clip) for clip in names], batch_size=1,
                                  verbose=False)
    texts = [h.text if hasattr(h, "text") else h for h in hypotheses]
    wer = word_error_rate([clips[clip]["text"] for clip in names], texts)
    exact = sum(text == clips[clip]["text"] for clip, text in zip(names, texts))
    print(f"{name}: held-out WER {wer:.2%} on {len(names)} committed clips, {exact} exact")
    assert wer <= HELD_OUT_WER_BAR[name], dict(zip(names, texts))


def test_topology_is_tinys_at_other_widths(trained, tiny_model):
    """Coverage: same front end, subsampling, encoder kind, prediction net, durations and loss as tiny (v3's)."""
    _, model = trained
    ours, tiny = inspect_model(model), inspect_model(tiny_model)
    assert {k: getattr(ours, k) for k in TOPOLOGY_FIELDS} == {k: getattr(tiny, k) for k in TOPOLOGY_FIELDS}
    assert ours.blank_id == ours.vocab_size == model.tokenizer.vocab_size
    assert model.cfg.preprocessor == tiny_model.cfg.preprocessor
    assert {k: model.cfg.encoder[k] for k in ENCODER_FIELDS} == {k: tiny_model.cfg.encoder[k] for k in ENCODER_FIELDS}
    # (cfg.decoding itself is not compared: NeMo's transcribe(timestamps=True) rewrites it in place.)
    assert (model.cfg.decoding.strategy, model.cfg.decoding.model_type) == \
        (tiny_model.cfg.decoding.strategy, tiny_model.cfg.decoding.model_type)
    assert model.cfg.loss == tiny_model.cfg.loss
    assert type(model) is type(tiny_model)


def test_loads_by_name_from_the_repository_and_fits_the_size_bar():
    """Coverage: each trained name resolves to its committed .nemo file, at most 20 MB."""
    for name, path in checkpoints.TRAINED.items():
        assert path == checkpoints.REPO_ROOT / "fixtures" / "models" / f"{name}_tdt.nemo"
        assert path.is_file() and path.stat().st_size <= MAX_CHECKPOINT_BYTES


def test_sentences_tokenizer_keeps_capitals_and_punctuation():
    """Coverage: the sentences tokenizer is BPE with >= 128 pieces, capitals and v3's punctuation among them."""
    model = checkpoints.load_model("sentences")
    pieces = [model.tokenizer.ids_to_tokens([i])[0] for i in range(model.tokenizer.vocab_size)]
    assert len(pieces) >= 128
    assert any(piece.strip("▁")[:1].isupper() for piece in pieces)
    assert {".", ",", "?", "!"} <= {char for piece in pieces for char in piece}
