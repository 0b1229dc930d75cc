"""decode_step package vs NeMo: the single step's decisions, then NeMo's predict on the chosen token."""

import numpy as np
import pytest

from exporters.decoding.language_lock import BLOCKED
from exporters.parity.diff import assert_passed
from exporters.parity.gates import Clip, decode_step_gate


@pytest.fixture(scope="module")
def contexts(gate, clip, non_blank_tokens):
    """NeMo's encoder frames of a clip and NeMo's decoder contexts after the start and 3 tokens."""
    case, audio_signal, audio_length = clip
    return (case, *Clip(case, audio_signal, audio_length, non_blank_tokens).contexts(gate))


def only(tiny_contract, allowed: str) -> np.ndarray:
    """A bias forbidding blank ("tokens") or every token but blank ("blank")."""
    bias = np.zeros(tiny_contract.model.num_token_logits, np.float32)
    blank = tiny_contract.model.blank_id
    if allowed == "tokens":
        bias[blank] = BLOCKED
    else:
        bias[np.arange(bias.size) != blank] = BLOCKED
    return bias


def test_decode_step_parity(gate, open_package, contexts):
    """Coverage: every (context, frame) of the grid: decisions as joint_decision's rows, and the returned
    context against NeMo's predict of the chosen token (or the context itself after blank)."""
    case, encoder, steps = contexts
    assert_passed(decode_step_gate(gate, "decode_step", open_package("decode_step"), case, encoder, steps))


def test_decode_step_parity_with_token_bias(gate, open_package, contexts, lock_bias):
    """Coverage: with a language lock's bias fed, decisions and contexts still equal NeMo's with that bias."""
    case, encoder, steps = contexts
    assert_passed(decode_step_gate(gate, "decode_step", open_package("decode_step"), f"{case} biased", encoder,
                                   steps, lock_bias))


def test_decode_step_parity_with_fusion_scores(gate, open_package, contexts, fusion_scores, lock_bias):
    """Coverage: with fusion scores and a lock's bias fed, decisions and the context after the chosen token equal
    NeMo's with both."""
    case, encoder, steps = contexts
    assert_passed(decode_step_gate(gate, "decode_step", open_package("decode_step"), f"{case} fused", encoder,
                                   steps, lock_bias, fusion_scores))


def test_every_step_emitting_runs_the_prediction_network(gate, open_package, contexts, tiny_contract):
    """Coverage: with blank forbidden every call emits a token, so every returned context is the LSTM's
    step on it, checked against NeMo's predict."""
    case, encoder, steps = contexts
    diffs = decode_step_gate(gate, "decode_step", open_package("decode_step"), f"{case} no blank", encoder, steps,
                             only(tiny_contract, "tokens"))
    assert_passed(diffs)


def test_blank_passes_the_context_through_unchanged(open_package, contexts, tiny_contract):
    """Coverage: when the package chooses blank, decoder, h_out and c_out are its inputs, bit for bit."""
    _, encoder, steps = contexts
    package = open_package("decode_step")
    bias = only(tiny_contract, "blank")
    for context in steps:
        for frame in (0, encoder.shape[-1] // 2, encoder.shape[-1] - 1):
            out = package.predict({"encoder_step": encoder[:, :, frame:frame + 1], **context, "token_bias": bias})
            assert int(out["token_id"].reshape(())) == tiny_contract.model.blank_id
            for output, given in (("decoder", "decoder_step"), ("h_out", "h_in"), ("c_out", "c_in")):
                np.testing.assert_array_equal(out[output], context[given])
