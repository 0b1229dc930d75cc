"""Fused joint + decision: token id, its probability, the duration index and the top-K token logits per
(frame, step), with an optional bias on the token logits (a language lock)."""

from __future__ import annotations

import torch

from exporters.components.base import Component
from exporters.components.joint import JointWrapper


class JointDecisionWrapper(torch.nn.Module):
    """encoder [1, D, T], decoder [1, H, U], token_bias [V + 1] → token_id, token_prob, duration, each
    [1, T, U], and top_k_ids, top_k_logits [1, T, U, K]. Every choice is made on the biased token logits."""

    def __init__(self, joint: JointWrapper, num_token_logits: int, top_k: int):
        super().__init__()
        self.joint = joint
        self.num_token_logits = num_token_logits
        self.top_k = top_k

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor, token_bias: torch.Tensor):
        logits = self.joint(encoder, decoder)
        token_logits = logits[..., : self.num_token_logits] + token_bias
        duration_logits = logits[..., self.num_token_logits:]
        token_id = token_logits.argmax(dim=-1, keepdim=True)
        token_prob = token_logits.softmax(dim=-1).gather(-1, token_id)
        duration = duration_logits.argmax(dim=-1)
        top_k_logits, top_k_ids = token_logits.topk(self.top_k, dim=-1)
        return token_id.squeeze(-1).int(), token_prob.squeeze(-1), duration.int(), top_k_ids.int(), top_k_logits


def wrap_joint_decision(model, contract) -> JointDecisionWrapper:
    return JointDecisionWrapper(JointWrapper(model.joint), contract.model.num_token_logits, contract.top_k)


JOINT_DECISION = Component("joint_decision", wrap=wrap_joint_decision)
# Same graph traced on one encoder frame: the per-step call of a streaming decoding loop.
JOINT_DECISION_SINGLE_STEP = Component("joint_decision_single_step", wrap=wrap_joint_decision)
