"""joint and joint_decision packages vs NeMo's RNNTJoint on the (T, U) grid."""

import pytest

from exporters.parity.diff import assert_passed
from exporters.parity.gates import joint_decision_gate, joint_gate, joint_grid_inputs


@pytest.fixture(scope="module")
def grid(tiny_model, tiny_contract, clip, non_blank_tokens):
    """NeMo's encoder frames of a clip and NeMo's decoder outputs for blank + 3 tokens."""
    case, audio_signal, audio_length = clip
    return (case, *joint_grid_inputs(tiny_model, tiny_contract, audio_signal, audio_length, non_blank_tokens[:3]))


def test_joint_parity_on_grid(tiny_model, tiny_contract, open_package, precision, grid):
    """Coverage: V+1 token logits and duration logits, measured separately, over T=188 × U=4."""
    case, encoder, decoder_steps = grid
    assert_passed(joint_gate(tiny_model, tiny_contract, open_package("joint"), precision, case, encoder,
                             decoder_steps))


@pytest.mark.parametrize("name", ["joint_decision", "joint_decision_single_step"])
def test_joint_decision_parity_on_grid(tiny_model, tiny_contract, open_package, precision, grid, name):
    """Coverage: token_id/duration equal NeMo's argmax where margins are clear; token_prob within tolerance."""
    case, encoder, decoder_steps = grid
    assert_passed(joint_decision_gate(name, tiny_model, tiny_contract, open_package(name), precision, case,
                                      encoder, decoder_steps))
