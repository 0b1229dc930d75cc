"""Fused preprocessor + encoder: waveform → encoder frames in one package."""

from __future__ import annotations

import torch

from exporters.components.base import Component, pad_frames, trim
from exporters.components.encoder import EncoderWrapper
from exporters.components.preprocessor import PreprocessorWrapper, flat_waveform, in_preprocessor
from exporters.inspect_model import encoder_frames, mel_frames


class MelEncoderWrapper(torch.nn.Module):
    """audio_signal (the preprocessor's waveform layout), audio_length [1] → encoder [1, D, T],
    encoder_length [1]."""

    def __init__(self, preprocessor: PreprocessorWrapper, encoder: EncoderWrapper):
        super().__init__()
        self.preprocessor = preprocessor
        self.encoder = encoder

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        mel, mel_length, _, _ = self.preprocessor(audio_signal, audio_length)
        return self.encoder(mel, mel_length)


def nemo_mel_encoder(model, contract=None):
    """NeMo's preprocessor + encoder on the file alone, padded to the window's encoder frames."""
    def run(audio_signal, audio_length):
        audio_signal = flat_waveform(audio_signal)
        encoded, encoded_length = model.forward(input_signal=trim(audio_signal, audio_length),
                                                input_signal_length=audio_length.long())
        window_frames = encoder_frames(model, mel_frames(model, audio_signal.shape[-1]))
        return pad_frames(encoded, window_frames), encoded_length.int()
    return run


MEL_ENCODER = Component(
    "mel_encoder",
    wrap=lambda model, contract: MelEncoderWrapper(PreprocessorWrapper(model.preprocessor, contract.window_samples),
                                                   EncoderWrapper(model.encoder, contract.mel_frames)),
    reference=nemo_mel_encoder, gate="audio", keep_fp32=in_preprocessor,
)
