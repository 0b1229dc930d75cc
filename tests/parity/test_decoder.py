"""decoder package vs NeMo's prediction network."""

import numpy as np

from exporters.parity.diff import assert_passed
from exporters.parity.gates import decoder_gate


def test_decoder_parity_non_blank_sequence(gate, open_package, non_blank_tokens):
    """Coverage: non-blank tokens fed one at a time, h/c chained through the package, vs NeMo's sequence."""
    assert_passed(decoder_gate(gate, open_package("decoder"), "non-blank sequence", non_blank_tokens))


def test_decoder_parity_blank_from_zero_state(gate, tiny_contract, open_package):
    """Coverage: blank from zero state, the first call of every decoding."""
    blank = np.array([tiny_contract.model.blank_id], dtype=np.int32)
    assert_passed(decoder_gate(gate, open_package("decoder"), "blank start", blank))
