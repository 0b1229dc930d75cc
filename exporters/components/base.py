"""What every component module provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Component:
    """A named export unit: how to wrap the NeMo model into a traceable module."""

    name: str
    wrap: Callable[..., torch.nn.Module]  # (nemo_model, contract) -> module taking the contract's inputs
    # Ops to keep in fp32 inside an fp16 export (coremltools op_selector); None keeps none.
    keep_fp32: Callable[[object], bool] | None = None
