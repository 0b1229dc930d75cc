"""Fused mel_encoder package vs NeMo's preprocessor + encoder forward."""

from exporters.parity.diff import assert_passed
from exporters.parity.gates import audio_gate


def test_mel_encoder_parity_on_speech(tiny_model, tiny_contract, open_package, precision, clip):
    """Coverage: encoder and exact encoder_length straight from the waveform."""
    case, audio_signal, audio_length = clip
    assert_passed(audio_gate("mel_encoder", tiny_model, tiny_contract, open_package("mel_encoder"), precision,
                             case, audio_signal, audio_length))
