"""Fused joint + decision: token id, its probability, the duration index and the top-K token logits per
(frame, step), with an optional bias on the token logits (a language lock) and optional fusion scores on the
non-blank ones (custom vocabulary, chosen with NeMo's semantics)."""

from __future__ import annotations

import torch

from exporters.components.base import Component
from exporters.components.joint import JointWrapper, nemo_joint_logits
from exporters.contract import Contract


class JointDecisionWrapper(torch.nn.Module):
    """encoder [1, D, T], decoder [1, H, U], token_bias [V + 1], fusion_scores [V] → token_id, token_prob,
    duration, each [1, T, U], and top_k_ids, top_k_logits [1, T, U, K]. Every choice is made on the biased token
    logits; a token's label on them plus the fusion scores."""

    def __init__(self, joint: JointWrapper, num_token_logits: int, top_k: int):
        super().__init__()
        self.joint = joint
        self.num_token_logits = num_token_logits
        self.top_k = top_k

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor, token_bias: torch.Tensor,
                fusion_scores: torch.Tensor):
        return decisions_from_logits(self.joint(encoder, decoder), self.num_token_logits, self.top_k, token_bias,
                                     fusion_scores)


def wrap_joint_decision(model, contract) -> JointDecisionWrapper:
    return JointDecisionWrapper(JointWrapper(model.joint), contract.model.num_token_logits, contract.top_k)


def decisions_from_logits(logits: torch.Tensor, num_token_logits: int, top_k: int,
                          token_bias: torch.Tensor | None = None,
                          fusion_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """NeMo's greedy choices from raw joint logits, with `token_bias` added to the V+1 token logits first:
    token id, its probability, duration index, and the top-K token ids and logits (best first). With
    `fusion_scores` [V], a token (not blank) is relabelled by the argmax of its V logits plus them, as NeMo's
    label-looping fusion does. The package's graph (JointDecisionWrapper) and the reference on NeMo's logits
    both decide with it."""
    token_logits = logits[..., :num_token_logits]
    if token_bias is not None:
        token_logits = token_logits + token_bias
    token_id = token_logits.argmax(-1)  # on raw logits, as NeMo decides (softmax can merge near-ties)
    if fusion_scores is not None:
        fused_label = (token_logits[..., :num_token_logits - 1] + fusion_scores).argmax(-1)
        token_id = torch.where(token_id == num_token_logits - 1, token_id, fused_label)
    token_prob = token_logits.softmax(-1).gather(-1, token_id.unsqueeze(-1)).squeeze(-1)
    duration = logits[..., num_token_logits:].argmax(-1)
    top_k_logits, top_k_ids = token_logits.topk(top_k, dim=-1)
    return token_id.int(), token_prob, duration.int(), top_k_ids.int(), top_k_logits


def nemo_joint_decision(model, contract: Contract):
    def run(encoder, decoder, token_bias, fusion_scores):
        return decisions_from_logits(nemo_joint_logits(model, encoder, decoder), contract.model.num_token_logits,
                                     contract.top_k, token_bias, fusion_scores)
    return run


JOINT_DECISION = Component("joint_decision", wrap=wrap_joint_decision, reference=nemo_joint_decision,
                           gate="joint_decision")
# Same graph traced on one encoder frame: the per-step call of a streaming decoding loop.
JOINT_DECISION_SINGLE_STEP = Component("joint_decision_single_step", wrap=wrap_joint_decision,
                                       reference=nemo_joint_decision, gate="joint_decision")
