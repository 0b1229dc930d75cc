"""joint and joint_decision packages vs NeMo's RNNTJoint on the (T, U) grid."""

import pytest

from exporters.parity.diff import assert_passed
from exporters.parity.gates import joint_decision_gate, joint_gate, joint_grid_inputs


@pytest.fixture(scope="module")
def grid(tiny_model, tiny_contract, clip, non_blank_tokens):
    """NeMo's encoder frames of a clip and NeMo's decoder outputs for blank + 3 tokens."""
    case, audio_signal, audio_length = clip
    return (case, *joint_grid_inputs(tiny_model, tiny_contract, audio_signal, audio_length, non_blank_tokens[:3]))


def test_joint_parity_on_grid(gate, open_package, grid):
    """Coverage: V+1 token logits and duration logits, measured separately, over T=188 × U=4."""
    case, encoder, decoder_steps = grid
    assert_passed(joint_gate(gate, open_package("joint"), case, encoder, decoder_steps))


@pytest.mark.parametrize("name", ["joint_decision", "joint_decision_single_step"])
def test_joint_decision_parity_on_grid(gate, open_package, grid, name):
    """Coverage: token_id/duration/top_k_ids equal NeMo's choices where margins are clear; token_prob and
    top_k_logits within tolerance (token_bias left out: its default applies)."""
    case, encoder, decoder_steps = grid
    assert_passed(joint_decision_gate(gate, name, open_package(name), case, encoder, decoder_steps))


@pytest.mark.parametrize("name", ["joint_decision", "joint_decision_single_step"])
@pytest.mark.parametrize("with_lock", [False, True], ids=["fused", "fused+locked"])
def test_joint_decision_parity_with_fusion_scores(gate, open_package, grid, name, fusion_scores, lock_bias, with_lock):
    """Coverage: with fusion_scores fed (and a language lock's bias too), blank or not is NeMo's choice on the
    (biased) logits and a token's label NeMo's on them plus the scores; probability, duration and top-K as
    without fusion."""
    case, encoder, decoder_steps = grid
    bias = lock_bias if with_lock else None
    assert_passed(joint_decision_gate(gate, name, open_package(name), f"{case} fused", encoder, decoder_steps,
                                      bias, fusion_scores))


@pytest.mark.parametrize("name", ["joint_decision", "joint_decision_single_step"])
def test_joint_decision_parity_with_token_bias(gate, open_package, grid, name, lock_bias):
    """Coverage: with a token_bias fed, every choice (token, probability, top-K) equals NeMo's on NeMo's logits
    plus that bias."""
    case, encoder, decoder_steps = grid
    assert_passed(joint_decision_gate(gate, name, open_package(name), f"{case} biased", encoder, decoder_steps,
                                      lock_bias))
