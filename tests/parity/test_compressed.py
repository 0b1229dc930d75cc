"""Compressed encoders against NeMo under their own rows of the tolerance table (one row set per
variant): tiny (random weights) at both precisions, the trained models at fp16 (mixed included, with
the plan the mixed search makes for them), and a damaged compressed weight must fail its row.

Decisions of the compressed packages are judged against NeMo in tests/decoding/test_compressed_decisions.py.
"""

from __future__ import annotations

import shutil

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, held_out_clips, load_audio
from exporters.compression import NONE, VARIANTS
from exporters.parity.diff import assert_passed
from exporters.parity.gates import GateContext, audio_gate, encoder_gate
from exporters.runtime.mil.program import load_package

FIXED = [name for name in VARIANTS if name not in (NONE, "mixed")]  # mixed needs a trained model's plan
ENCODERS = ("encoder", "mel_encoder")


def encoder_diffs(subject, packages, precision, variant, case, audio_signal, audio_length, open_or_skip, backend):
    gate = GateContext(subject.model, subject.contract, precision, compressed=dict.fromkeys(ENCODERS, variant))
    opened = {name: open_or_skip(packages / subject.contract[name].package_name, backend) for name in ENCODERS}
    return [*encoder_gate(gate, opened["encoder"], case, audio_signal, audio_length),
            *audio_gate(gate, "mel_encoder", opened["mel_encoder"], case, audio_signal, audio_length)]


@pytest.mark.parametrize("variant", FIXED)
def test_tiny_compressed_encoders_pass_their_rows(load_subject, precision, variant, open_or_skip, backend):
    """Coverage: encoder and mel_encoder of every fixed variant, both precisions, the 16 s speech clip."""
    tiny = load_subject("tiny")
    packages = tiny.compressed(precision, variant, ENCODERS)
    audio = fit_window(load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", 16000), tiny.contract.window_samples)
    assert_passed(encoder_diffs(tiny, packages, precision, variant, "long_16s", *audio, open_or_skip, backend))


@pytest.mark.parametrize("variant", [name for name in VARIANTS if name != NONE])
@pytest.mark.parametrize("source", ["sentences"])
def test_trained_compressed_encoders_pass_their_rows(load_subject, source, variant, open_or_skip, backend):
    """Coverage: every variant (mixed: the plan searched for this model) on a held-out clip, fp16, on the
    sentences model (digits is judged by its decisions in tests/decoding/test_compressed_decisions.py)."""
    subject = load_subject(source)
    packages = subject.compressed("fp16", variant)
    samples = held_out_clips(source, subject.contract.model.sample_rate)[0][1]
    audio = fit_window(samples, subject.contract.window_samples)
    assert_passed(encoder_diffs(subject, packages, "fp16", variant, "held-out 1", *audio, open_or_skip, backend))


@pytest.mark.parametrize("variant", FIXED)
def test_a_damaged_compressed_weight_fails_its_row(load_subject, variant, tmp_path, damage_compressed_weight,
                                                    open_or_skip, backend):
    """Coverage: the largest compressed weight's scale or palette × 4 (a silently damaged export, one layer
    of 21) fails the encoder row of its variant."""
    tiny = load_subject("tiny")
    source = tiny.compressed("fp16", variant, ENCODERS) / tiny.contract["encoder"].package_name
    damaged = tmp_path / source.name
    shutil.copytree(source, damaged)
    damage_compressed_weight(damaged)
    gate = GateContext(tiny.model, tiny.contract, "fp16", compressed={"encoder": variant})
    audio = fit_window(load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", 16000), tiny.contract.window_samples)
    diffs = encoder_gate(gate, open_or_skip(damaged, backend), "damaged", *audio)
    assert [d.output for d in diffs if not d.passed] == ["encoder"]


@pytest.mark.parametrize("variant", FIXED)
def test_only_layer_weights_are_compressed(load_subject, variant):
    """Coverage: in the compressed mel_encoder, every constexpr op (compressed weight) is a layer's weight
    (named after a model parameter); the front end's DFT basis and filterbank stay plain constants."""
    tiny = load_subject("tiny")
    package = tiny.compressed("fp16", variant, ENCODERS) / tiny.contract["mel_encoder"].package_name
    compressed = [op.outputs[0].name for op in load_package(package).main_block.operations
                  if op.type.startswith("constexpr_")]
    assert compressed and all("weight" in name for name in compressed), compressed
