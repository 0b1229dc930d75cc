"""Fused preprocessor + encoder: waveform → encoder frames in one package."""

from __future__ import annotations

import torch

from exporters.components.base import Component
from exporters.components.encoder import EncoderWrapper
from exporters.components.preprocessor import PreprocessorWrapper, in_preprocessor


class MelEncoderWrapper(torch.nn.Module):
    """audio_signal [1, S], audio_length [1] → encoder [1, D, T], encoder_length [1]."""

    def __init__(self, preprocessor: PreprocessorWrapper, encoder: EncoderWrapper):
        super().__init__()
        self.preprocessor = preprocessor
        self.encoder = encoder

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        mel, mel_length, _, _ = self.preprocessor(audio_signal, audio_length)
        return self.encoder(mel, mel_length)


MEL_ENCODER = Component(
    "mel_encoder",
    wrap=lambda model, contract: MelEncoderWrapper(PreprocessorWrapper(model.preprocessor),
                                                   EncoderWrapper(model.encoder)),
    keep_fp32=in_preprocessor,
)
