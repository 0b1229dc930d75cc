"""preprocessor package vs NeMo's AudioToMelSpectrogramPreprocessor."""

from exporters.parity.diff import assert_passed
from exporters.parity.gates import audio_gate


def test_preprocessor_parity_on_speech(gate, open_package, clip):
    """Coverage: mel and mel_length on a trimmed 16 s clip and a padded 4 s clip (audio_length < window)."""
    case, audio_signal, audio_length = clip
    assert_passed(audio_gate(gate, "preprocessor", open_package("preprocessor"), case, audio_signal, audio_length))
