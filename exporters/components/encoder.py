"""Mel features → encoder frames (NeMo ConformerEncoder)."""

from __future__ import annotations

import contextlib
import functools

import torch

from exporters.components.base import Component, pad_frames, trim
from exporters.inspect_model import encoder_frames, subsampled_lengths


def zero_past(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, F] with time steps >= valid [B] set to zero (a select, so inf/NaN there go too).

    masked_fill with a scalar keeps the graph free of full-size constant tensors.
    """
    past = torch.arange(x.shape[2], device=x.device).unsqueeze(0) >= valid.unsqueeze(1)
    return x.masked_fill(past[:, None, :, None], 0.0)


def subsample_as_unpadded(pre_encode: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    """NeMo's ConvSubsampling.forward, with each conv's input zeroed past that stage's valid length.

    NeMo's subsampling convolutions do not mask: on a padded batch, the frames of the last valid
    outputs read relu(bias) values computed over padding, where the unpadded utterance has the
    convolution's zero padding. Zeroing past each stage's length makes every valid frame equal NeMo
    on the unpadded input (measured 4.8e-2 on digits before) and independent of the padding.
    """
    if not pre_encode.conv2d_subsampling:
        raise NotImplementedError("only conv2d subsampling (striding, dw_striding) is supported")
    valid = lengths
    h = x.unsqueeze(1)  # [B, 1, T, F]
    for layer in pre_encode.conv:
        if isinstance(layer, torch.nn.Conv2d):
            h = zero_past(h, valid)
            kernel, stride, padding = layer.kernel_size[0], layer.stride[0], layer.padding[0]
            valid = torch.div(valid + 2 * padding - kernel, stride, rounding_mode="floor") + 1
        h = layer(h)
    batch, _, frames, _ = h.shape
    out = pre_encode.out(h.transpose(1, 2).reshape(batch, frames, -1))
    return out, subsampled_lengths(pre_encode, lengths)


@contextlib.contextmanager
def unpadded_subsampling(encoder: torch.nn.Module):
    """Run the encoder with `subsample_as_unpadded` in place of its pre_encode.forward."""
    pre_encode = encoder.pre_encode
    pre_encode.forward = functools.partial(subsample_as_unpadded, pre_encode)
    try:
        yield encoder
    finally:
        del pre_encode.forward


def grow_positional_encodings(encoder: torch.nn.Module, mel_frames: int) -> None:
    """Make NeMo's positional encodings cover `mel_frames` now, before tracing. NeMo grows them inside forward
    on the first input longer than any before (pos_emb_max_len mel frames: 50 s for v3); traced, that growth
    would land in the graph and rebuild the table ([2M - 1, D] sines, cosines and a scatter) on every call.
    The values of the rows a window uses do not depend on the table's size."""
    encoder.update_max_seq_length(seq_length=mel_frames, device=next(encoder.parameters()).device)


class EncoderWrapper(torch.nn.Module):
    """mel [1, n_mels, M], mel_length [1] int32 → encoder [1, D, T], encoder_length [1] int32.

    Valid frames equal NeMo's encoder on the unpadded mel[:, :, :mel_length]; whatever lies past
    mel_length changes nothing on them.
    """

    def __init__(self, encoder: torch.nn.Module, mel_frames: int):
        super().__init__()
        self.encoder = encoder
        grow_positional_encodings(encoder, mel_frames)

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor):
        with unpadded_subsampling(self.encoder):
            encoded, encoded_length = self.encoder(audio_signal=mel, length=mel_length.long())
        return encoded, encoded_length.int()


def nemo_encoder(model, contract=None):
    """NeMo's encoder on the unpadded mel (mel[:, :, :mel_length]), padded to the window's frames."""
    def run(mel, mel_length):
        encoded, encoded_length = model.encoder(audio_signal=trim(mel, mel_length), length=mel_length.long())
        return pad_frames(encoded, encoder_frames(model, mel.shape[-1])), encoded_length.int()
    return run


ENCODER = Component("encoder", wrap=lambda model, contract: EncoderWrapper(model.encoder, contract.mel_frames),
                    reference=nemo_encoder, gate="encoder", plots={"encoder": "encoder_error_plot"})
