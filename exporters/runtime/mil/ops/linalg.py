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


# Up to this many rows, torch's GEMM is faster with the weight as the left operand (weight @ x.T, then
# transposed back): on 2 cores of an AMD EPYC, the full-width encoder's shapes took 0.72x the time at 32 rows
# (a 2.5 s window), 0.94x at 128 and 1.07x at 188 (15 s); the 2.5 s encoder went from ~485 to ~413 ms. The
# products came out bit for bit equal to torch's linear on those shapes.
WEIGHT_LEFT_MAX_ROWS = 128


@kernel("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias with weight [out, in]."""
    x, weight, *bias = _as_torch(x, weight, *([] if bias is None else [bias]))
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] > WEIGHT_LEFT_MAX_ROWS:
        return (torch.nn.functional.linear(x, weight, *bias).numpy(),)
    product = torch.addmm(bias[0][:, None], weight, rows.T) if bias else torch.mm(weight, rows.T)
    return (product.T.contiguous().reshape(*x.shape[:-1], weight.shape[0]).numpy(),)


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
