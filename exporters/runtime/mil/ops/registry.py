"""The kernel registry and the helpers every op family shares."""

from __future__ import annotations

from typing import Callable

import numpy as np

KERNELS: dict[str, Callable[..., tuple]] = {}

CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
}


def kernel(op_type: str):
    """Register the decorated function as the kernel of `op_type`."""

    def register(function):
        KERNELS[op_type] = function
        return function

    return register


def _axes(axes) -> tuple[int, ...] | None:
    return None if axes is None else tuple(int(a) for a in np.ravel(axes))


def _is_float(x) -> bool:
    return np.issubdtype(np.result_type(x), np.floating)


def _sigmoid(x):
    """1 / (1 + exp(-x)); exp overflowing to inf for x < -88 correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))
