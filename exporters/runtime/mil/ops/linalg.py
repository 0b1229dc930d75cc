"""Linear algebra: linear, matmul, einsum (GEMMs through torch's CPU kernels)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .registry import kernel

# Weights are read-only arrays (shared between the functions of a package); torch only reads them here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning,
                        module=r"exporters\.runtime\.mil\.")


def _as_torch(*arrays) -> list[torch.Tensor]:
    """Zero-copy torch views (one common float dtype) of numpy arrays: GEMMs and convolutions run through
    torch's own CPU kernels, so their speed does not depend on which BLAS numpy was built with."""
    dtype = np.result_type(*arrays)
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)) for a in arrays]


@kernel("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias with weight [out, in]."""
    tensors = _as_torch(x, weight, *([] if bias is None else [bias]))
    return (torch.nn.functional.linear(*tensors).numpy(),)


@kernel("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    """Broadcasting batched matmul, optionally transposing the last two dims of x / y."""
    x, y = _as_torch(x, y)
    if transpose_x and x.dim() > 1:
        x = x.transpose(-1, -2)
    if transpose_y and y.dim() > 1:
        y = y.transpose(-1, -2)
    return (torch.matmul(x, y).numpy(),)


@kernel("einsum")
def einsum(values, equation):
    """einsum over `values` with the MIL equation string (torch's, for the reason `_as_torch` gives)."""
    return (torch.einsum(equation, *_as_torch(*values)).numpy(),)
