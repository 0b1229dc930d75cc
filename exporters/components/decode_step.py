"""One model call per decode step: joint + TDT decision + the prediction network on the chosen token.

The decision is made on the decoder output the caller carries (`decoder_step`, with its LSTM state
`h_in`/`c_in`); the prediction network then runs once, on the token just chosen, so the outputs
`decoder`, `h_out`, `c_out` are the context of the next step: on blank they are the inputs passed
through (NeMo keeps the state on blank), on a token they are NeMo's predict of that token. The LSTM
never runs twice for one token and a loop never needs a separate decoder call, except NeMo's
start-of-sequence step (blank from zero state, the decoder package) once per utterance.
"""

from __future__ import annotations

import torch

from exporters.components.base import Component
from exporters.components.decoder import DecoderWrapper, nemo_decoder
from exporters.components.joint_decision import JointDecisionWrapper, nemo_joint_decision, wrap_joint_decision
from exporters.contract import Contract


def next_context(token_id: torch.Tensor, blank_id: int, carried: tuple[torch.Tensor, ...],
                 predicted: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """(decoder, h, c) to carry: unchanged on blank, the prediction network's step on a token."""
    blank = token_id.reshape(()) == blank_id
    return tuple(torch.where(blank, old, new) for old, new in zip(carried, predicted))


class DecodeStepWrapper(torch.nn.Module):
    """encoder_step [1, D, 1], decoder_step [1, H, 1], h_in/c_in [L, 1, H], token_bias [V + 1], fusion_scores [V] →
    token_id, token_prob, duration [1, 1, 1], top_k_ids, top_k_logits [1, 1, 1, K], and the next
    context decoder [1, H, 1], h_out, c_out."""

    def __init__(self, decision: JointDecisionWrapper, decoder: DecoderWrapper, blank_id: int):
        super().__init__()
        self.decision = decision
        self.decoder = decoder
        self.blank_id = blank_id

    def forward(self, encoder_step, decoder_step, h_in, c_in, token_bias, fusion_scores):
        decisions = self.decision(encoder_step, decoder_step, token_bias, fusion_scores)
        token_id = decisions[0]
        predicted = self.decoder(token_id.reshape(1, 1), torch.ones(1, dtype=torch.int32), h_in, c_in)
        return (*decisions, *next_context(token_id, self.blank_id, (decoder_step, h_in, c_in), predicted))


def wrap_decode_step(model, contract: Contract) -> DecodeStepWrapper:
    return DecodeStepWrapper(wrap_joint_decision(model, contract), DecoderWrapper(model.decoder),
                             contract.model.blank_id)


def nemo_decode_step(model, contract: Contract):
    """NeMo's joint decision on the carried context, then NeMo's predict on the chosen token (kept on blank)."""
    decide, predict = nemo_joint_decision(model, contract), nemo_decoder(model, contract)

    def run(encoder_step, decoder_step, h_in, c_in, token_bias, fusion_scores):
        decisions = decide(encoder_step, decoder_step, token_bias, fusion_scores)
        predicted = predict(decisions[0].reshape(1, 1), torch.ones(1, dtype=torch.int32), h_in, c_in)
        return (*decisions, *next_context(decisions[0], contract.model.blank_id, (decoder_step, h_in, c_in),
                                          predicted))
    return run


def is_context_select(op) -> bool:
    """The selects choosing the next context stay fp32 in an fp16 export, so after blank the context comes
    back bit for bit (an fp16 select would round the carried state to fp16 on every blank step)."""
    return op.op_type == "select"


DECODE_STEP = Component("decode_step", wrap=wrap_decode_step, reference=nemo_decode_step, gate="decode_step",
                        keep_fp32=is_context_select)
