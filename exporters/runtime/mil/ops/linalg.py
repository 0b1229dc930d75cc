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


# A product of at most SPLIT_MAX_ROWS rows with at least SPLIT_MIN_WEIGHT_ELEMENTS weights (1 MB of fp32) splits
# the weight's rows into one block per torch thread and multiplies the blocks as one batched product. Such a
# product only streams the weight; torch runs it on one thread, at one core's memory bandwidth, while the batched
# product gives each thread a block. On 2 cores of an AMD EPYC, weights out of cache: the full-width decode
# step's joint output (8198 x 640, one row) 1.85 -> 0.72 ms, an LSTM layer's 2560 x 640 0.57 -> 0.24 ms.
# Smaller weights stay in one product (the batched call costs more than it saves); more rows are compute-bound
# and gain nothing (the 2.5 s encoder's 32-row products: a median 471 ms unsplit against 486 ms split).
SPLIT_MIN_WEIGHT_ELEMENTS = 1 << 18
SPLIT_MAX_ROWS = 8


def weight_times(weight: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """weight [out, in] @ columns [in, M] (+ bias[:, None]): [out, M], for few columns."""
    blocks = torch.get_num_threads()
    if (blocks == 1 or columns.shape[1] > SPLIT_MAX_ROWS or weight.numel() < SPLIT_MIN_WEIGHT_ELEMENTS
            or weight.shape[0] % blocks):
        return torch.addmm(bias[:, None], weight, columns) if bias is not None else torch.mm(weight, columns)
    stacked = weight.view(blocks, -1, weight.shape[1])
    columns = columns.expand(blocks, *columns.shape)
    product = (torch.baddbmm(bias.view(blocks, -1, 1), stacked, columns) if bias is not None
               else torch.bmm(stacked, columns))
    return product.view(weight.shape[0], -1)


def projected(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """rows [M, in] @ weight.T [in, out] (+ bias): [M, out], C-contiguous."""
    if rows.shape[0] > WEIGHT_LEFT_MAX_ROWS:
        return torch.nn.functional.linear(rows, weight, bias)
    return weight_times(weight, rows.T, bias).T.contiguous()


@kernel("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias with weight [out, in]."""
    x, weight, *bias = _as_torch(x, weight, *([] if bias is None else [bias]))
    rows = projected(x.reshape(-1, x.shape[-1]), weight, bias[0] if bias else None)
    return (rows.reshape(*x.shape[:-1], weight.shape[0]).numpy(),)


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
