"""Offline checkpoints: v3 topology, deterministic cached builds, bit-identical save/restore."""

from __future__ import annotations

import hashlib

import pytest
import torch

from exporters import checkpoints
from exporters.inspect_model import inspect_model
from exporters.metadata import weights_sha256

# parakeet-tdt-0.6b-v3's published front end and decoding constants (independent of our code).
V3_FRONT_END = dict(sample_rate=16000, n_mels=128, n_fft=512, win_length=400, hop_length=160,
                    subsampling_factor=8)
V3_DURATIONS = (0, 1, 2, 3, 4)


def test_tiny_mirrors_v3_front_end_and_decoding(tiny_model):
    """Coverage: inspected front end, subsampling, durations and blank of the tiny model."""
    spec = inspect_model(tiny_model)
    assert {k: getattr(spec, k) for k in V3_FRONT_END} == V3_FRONT_END
    assert spec.durations == V3_DURATIONS
    assert spec.blank_id == spec.vocab_size == tiny_model.tokenizer.vocab_size
    assert spec.pred_layers == 2
    encoder_cfg = tiny_model.cfg.encoder
    assert (encoder_cfg.subsampling, encoder_cfg.self_attention_model, encoder_cfg.conv_kernel_size,
            encoder_cfg.conv_norm_type) == ("dw_striding", "rel_pos", 9, "batch_norm")
    assert tiny_model.cfg.loss.loss_name == "tdt"


def test_tiny_has_dataset_keys_for_transcribe(tiny_model):
    """Coverage: transcribe() needs train/validation/test dataset keys in the config."""
    assert {"train_ds", "validation_ds", "test_ds"} <= set(tiny_model.cfg.keys())


def test_build_is_deterministic(tmp_path, tiny_model):
    """Coverage: a fresh build from scratch has the cached build's exact weights and tokenizer."""
    rebuilt = checkpoints.instantiate_preset("tiny", tmp_path / "tokenizer")
    assert weights_sha256(rebuilt) == weights_sha256(tiny_model)
    rebuilt_proto = rebuilt.tokenizer.tokenizer.serialized_model_proto()
    assert hashlib.sha256(rebuilt_proto).digest() == \
        hashlib.sha256(tiny_model.tokenizer.tokenizer.serialized_model_proto()).digest()


def test_save_restore_round_trip_is_bit_identical(tmp_path, tiny_model):
    """Coverage: save_to then restore_from keeps every tensor, the tokenizer and the config."""
    path = tmp_path / "copy.nemo"
    tiny_model.save_to(str(path))
    restored = checkpoints.load_model(str(path))
    original, copy = tiny_model.state_dict(), restored.state_dict()
    assert original.keys() == copy.keys()
    assert all(torch.equal(original[k], copy[k]) for k in original)
    assert restored.tokenizer.tokenizer.serialized_model_proto() == \
        tiny_model.tokenizer.tokenizer.serialized_model_proto()
    assert inspect_model(restored) == inspect_model(tiny_model)


def test_build_is_cached(monkeypatch):
    """Coverage: a second request for a built preset reuses the cached file without rebuilding."""
    first = checkpoints.build_checkpoint("tiny")
    monkeypatch.setattr(checkpoints, "instantiate_preset",
                        lambda *args: pytest.fail("rebuilt a cached checkpoint"))
    assert checkpoints.build_checkpoint("tiny") == first


def test_full_random_tokenizer_reaches_v3_vocab_size(tmp_path):
    """Coverage: the shipped corpus plus seeded pseudo-words train an 8192-piece BPE model."""
    import sentencepiece as spm

    model_file = checkpoints.train_tokenizer(checkpoints.PRESETS["full-random"].vocab_size, tmp_path)
    assert spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size() == 8192
