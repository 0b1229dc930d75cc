"""Hypothesis fuzzing of packages vs NeMo: decoder states and tokens, joint vectors, audio lengths and levels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from exporters.audio import fit_window
from exporters.parity.diff import assert_passed
from exporters.parity.gates import audio_gate, decoder_gate, decoder_state_gate, joint_decision_gate

# LSTM states: ordinary values plus magnitudes where the gates' tanh/sigmoid saturate.
STATE_VALUES = st.one_of(st.floats(-1, 1, width=32), st.floats(-20, 20, width=32))


def state_arrays(shape):
    return arrays(np.float32, shape, elements=STATE_VALUES)


@given(data=st.data())
def test_decoder_from_arbitrary_state(gate, tiny_contract, open_package, data):
    """Coverage: any token 0..V (blank included) from bounded and near-saturated h/c states."""
    shape = tiny_contract["decoder"].input("h_in").shape
    token = data.draw(st.integers(0, tiny_contract.model.blank_id), label="token")
    h = data.draw(state_arrays(shape), label="h")
    c = data.draw(state_arrays(shape), label="c")
    assert_passed(decoder_state_gate(gate, open_package("decoder"), "fuzz state", token, h, c))


@given(tokens=st.lists(st.integers(0, 10**6), min_size=1, max_size=12))
def test_decoder_chained_calls_equal_nemo_sequence(gate, tiny_contract, open_package, tokens):
    """Coverage: n chained U=1 calls equal NeMo's prediction network over the same n tokens (blank included)."""
    ids = np.array(tokens, dtype=np.int32) % (tiny_contract.model.blank_id + 1)
    assert_passed(decoder_gate(gate, open_package("decoder"), "fuzz chain", ids))


@given(data=st.data())
def test_joint_decision_on_random_vectors(gate, tiny_contract, open_package, data):
    """Coverage: single-step decisions match NeMo's argmax wherever the margin is clear, on random vectors."""
    spec = tiny_contract.model
    scale = data.draw(st.sampled_from([0.1, 1.0, 5.0]), label="scale")
    encoder = data.draw(arrays(np.float32, (1, spec.d_model, 1), elements=st.floats(-1, 1, width=32))) * scale
    decoder = data.draw(arrays(np.float32, (1, spec.pred_hidden, 1), elements=st.floats(-1, 1, width=32)))
    name = "joint_decision_single_step"
    assert_passed(joint_decision_gate(gate, name, open_package(name), "fuzz vectors", encoder, [decoder]))


# NeMo's STFT (torch reflect padding) raises for files of n_fft / 2 = 256 samples or fewer; shorter
# clips are covered by tests/parity/test_any_length.py.
SHORTEST_NEMO_FILE = 257


@pytest.mark.parametrize("name", ["preprocessor", "mel_encoder"])
@given(length=st.integers(SHORTEST_NEMO_FILE, 240000), level=st.sampled_from(["quiet", "speech", "loud", "dc offset"]),
       seed=st.integers(0, 2**16))
def test_front_end_on_random_lengths_and_levels(gate, tiny_contract, open_package, name, length,
                                                level, seed):
    """Coverage: mel (preprocessor) and encoder frames (mel_encoder) vs NeMo on the unpadded file of
    257..240000 samples at quiet, normal, full-scale and DC-offset levels."""
    audio_signal, audio_length = fit_window(noise_clip(length, level, seed), tiny_contract.window_samples)
    assert_passed(audio_gate(gate, name, open_package(name), f"fuzz {level} {length}", audio_signal, audio_length))


def noise_clip(length: int, level: str, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(length).astype(np.float32)
    samples = {"quiet": 1e-4 * noise, "speech": 0.1 * noise, "loud": np.clip(noise, -1, 1),
               "dc offset": 0.5 + 0.05 * noise}[level]
    return samples.astype(np.float32)
