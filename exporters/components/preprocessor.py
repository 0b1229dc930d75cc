"""Waveform → normalized log-mel features (NeMo AudioToMelSpectrogramPreprocessor)."""

from __future__ import annotations

import torch

from exporters.components.base import Component


class PreprocessorWrapper(torch.nn.Module):
    """audio_signal [1, S] fp32, audio_length [1] int32 → mel [1, n_mels, M], mel_length [1] int32."""

    def __init__(self, preprocessor: torch.nn.Module):
        super().__init__()
        self.preprocessor = preprocessor

    def forward(self, audio_signal: torch.Tensor, audio_length: torch.Tensor):
        mel, mel_length = self.preprocessor(input_signal=audio_signal, length=audio_length.long())
        return mel, mel_length.int()


PREPROCESSOR = Component("preprocessor", wrap=lambda model, contract: PreprocessorWrapper(model.preprocessor))
