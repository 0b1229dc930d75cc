"""One streaming step of the prediction network (NeMo RNNTDecoder, 2-layer LSTM) with explicit state."""

from __future__ import annotations

import torch

from exporters.components.base import Component


class DecoderWrapper(torch.nn.Module):
    """targets [1, U], target_length [1], h_in/c_in [L, 1, H] → decoder [1, H, U], h_out, c_out.

    Feeding blank (= V) with zero state gives NeMo's start-of-decoding output: blank_as_pad maps
    blank to a zero embedding, exactly what NeMo's `predict(None, state=None)` uses.
    """

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, targets, target_length, h_in, c_in):
        output, (h_out, c_out) = self.decoder.predict(targets.long(), state=[h_in, c_in], add_sos=False)
        return output.transpose(1, 2), h_out, c_out


def nemo_decoder(model, contract=None):
    """NeMo's prediction network for one step from the given state, in the contract's layout."""
    def run(targets, target_length, h_in, c_in):
        output, (h_out, c_out) = model.decoder.predict(targets.long(), state=[h_in, c_in], add_sos=False)
        return output.transpose(1, 2), h_out, c_out
    return run


DECODER = Component("decoder", wrap=lambda model, contract: DecoderWrapper(model.decoder), reference=nemo_decoder,
                    gate="decoder", plots={"decoder": "decoder_error_plot"})
