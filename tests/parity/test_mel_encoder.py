"""Fused mel_encoder package vs NeMo's preprocessor + encoder forward."""

from exporters.parity.diff import assert_passed
from exporters.parity.gates import audio_gate


def test_mel_encoder_parity_on_speech(gate, open_package, clip):
    """Coverage: encoder and exact encoder_length straight from the waveform."""
    case, audio_signal, audio_length = clip
    assert_passed(audio_gate(gate, "mel_encoder", open_package("mel_encoder"), case, audio_signal, audio_length))
