"""encoder package vs NeMo's ConformerEncoder, on NeMo's mel features of speech."""

from exporters.parity.diff import assert_passed
from exporters.parity.gates import encoder_gate


def test_encoder_parity_on_speech(gate, open_package, clip):
    """Coverage: encoder and exact encoder_length for a full and a partial window."""
    case, audio_signal, audio_length = clip
    assert_passed(encoder_gate(gate, open_package("encoder"), case, audio_signal, audio_length))
