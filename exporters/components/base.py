"""What every component module provides: one declaration holding everything about a component."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class Component:
    """A named export unit: how to wrap the NeMo model into a traceable module, what NeMo computes for it
    (the reference), how its package is judged (the gate) and what the compare report plots.

    The contract (exporters/contract.py) holds its I/O; exporters/tolerances.toml holds a row per
    (component, precision, compared output); tests/contracts/test_component_coverage.py checks that they
    all exist for every component.
    """

    name: str
    wrap: Callable[..., torch.nn.Module]  # (nemo_model, contract) -> module taking the contract's inputs
    # (nemo_model, contract) -> function of the contract's inputs (torch) returning NeMo's outputs in order
    reference: Callable[..., Callable]
    # The gate judging its package (exporters.parity.gates.GATES): "audio", "encoder", "decoder", "joint"
    # or "joint_decision".
    gate: str
    # Ops to keep in fp32 inside an fp16 export (coremltools op_selector); None keeps none.
    keep_fp32: Callable[[object], bool] | None = None
    # The outputs its gate compares, each with a tolerance row (None: the contract's outputs).
    compared_outputs: tuple[str, ...] | None = None
    # compared output -> plot function of exporters.parity.plots drawn by `compare`.
    plots: dict[str, str] = field(default_factory=dict)


def trim(signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The valid prefix of a batch-of-1 window: what the user's file holds."""
    return signal[..., : int(length[0])]


def pad_frames(values: torch.Tensor, frames: int) -> torch.Tensor:
    """Zero-pad the last (time) axis to `frames`: NeMo's pad value for mel, 'unspecified' for encoder."""
    return torch.nn.functional.pad(values, (0, frames - values.shape[-1]))

