"""Mel features → encoder frames (NeMo ConformerEncoder)."""

from __future__ import annotations

import torch

from exporters.components.base import Component


class EncoderWrapper(torch.nn.Module):
    """mel [1, n_mels, M], mel_length [1] int32 → encoder [1, D, T], encoder_length [1] int32."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor):
        encoded, encoded_length = self.encoder(audio_signal=mel, length=mel_length.long())
        return encoded, encoded_length.int()


ENCODER = Component("encoder", wrap=lambda model, contract: EncoderWrapper(model.encoder))
