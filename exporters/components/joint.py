"""Joint network: encoder frames × decoder step → raw token and duration logits (NeMo RNNTJoint)."""

from __future__ import annotations

import contextlib

import torch

from exporters.components.base import Component


@contextlib.contextmanager
def raw_joint_logits(joint: torch.nn.Module):
    """Make NeMo's joint return raw logits: with log_softmax=None it normalizes only on CPU."""
    saved = joint.log_softmax
    joint.log_softmax = False
    try:
        yield joint
    finally:
        joint.log_softmax = saved


class JointWrapper(torch.nn.Module):
    """encoder [1, D, T], decoder [1, H, U] → logits [1, T, U, V + 1 + len(durations)]."""

    def __init__(self, joint: torch.nn.Module):
        super().__init__()
        self.joint = joint

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        with raw_joint_logits(self.joint) as joint:
            return joint.joint(encoder.transpose(1, 2), decoder.transpose(1, 2))


def nemo_joint_logits(model, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """NeMo's joint on contract layouts ([1, D, T], [1, H, U]), as raw logits [1, T, U, V+1+K]."""
    with raw_joint_logits(model.joint) as joint:
        return joint.joint(encoder.transpose(1, 2), decoder.transpose(1, 2))


def nemo_joint(model, contract=None):
    def run(encoder, decoder):
        return nemo_joint_logits(model, encoder, decoder)
    return run


JOINT = Component("joint", wrap=lambda model, contract: JointWrapper(model.joint), reference=nemo_joint, gate="joint",
                  compared_outputs=("token_logits", "duration_logits"), plots={"token_logits": "joint_agreement_plot"})
