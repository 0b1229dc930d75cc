"""Pooling: max_pool and avg_pool over 1 to 3 spatial dims, through torch's pooling kernels."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from .convolution import _conv_pads
from .linalg import _as_torch
from .registry import kernel

_TORCH_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_TORCH_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _geometry(x, kernel_sizes, strides, pad_type, pad) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Window sizes, strides and (before, after) pads per spatial dim, as MIL's pooling ops define them."""
    spatial = np.ndim(x) - 2
    if spatial not in _TORCH_MAX_POOL:
        raise NotImplementedError(f"pooling over {spatial} spatial dimensions is not supported")
    sizes = [int(k) for k in np.ravel(kernel_sizes)]
    strides = [1] * spatial if strides is None else [int(s) for s in np.ravel(strides)]
    pads = _conv_pads(pad_type, pad, np.shape(x)[2:], sizes, strides, [1] * spatial)
    return sizes, strides, pads


def _torch_padding(sizes, pads) -> list[int] | None:
    """The pads as torch's pooling `padding` (symmetric, at most half the window), else None."""
    if all(before == after and 2 * before <= size for (before, after), size in zip(pads, sizes)):
        return [before for before, _ in pads]
    return None


def _padded(x, pads, value: float) -> np.ndarray:
    return np.pad(x, [(0, 0), (0, 0)] + list(pads), constant_values=value)


@kernel("max_pool")
def max_pool(x, kernel_sizes, pad_type, strides=None, pad=None, ceil_mode=False):
    """The max of each window (padding never wins); ceil_mode as PyTorch's."""
    sizes, strides, pads = _geometry(x, kernel_sizes, strides, pad_type, pad)
    pooling = _TORCH_MAX_POOL[len(sizes)]
    padding = _torch_padding(sizes, pads)
    if padding is None:  # asymmetric pads: MIL allows ceil_mode only with symmetric ones
        (x_t,) = _as_torch(_padded(x, pads, -np.inf))
        return (pooling(x_t, sizes, strides).numpy(),)
    (x_t,) = _as_torch(x)
    return (pooling(x_t, sizes, strides, padding, ceil_mode=bool(ceil_mode)).numpy(),)


@kernel("avg_pool")
def avg_pool(x, kernel_sizes, pad_type, strides=None, pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    """The mean of each window, padding counted as zeros unless exclude_padding_from_average."""
    sizes, strides, pads = _geometry(x, kernel_sizes, strides, pad_type, pad)
    pooling = _TORCH_AVG_POOL[len(sizes)]
    padding = _torch_padding(sizes, pads)
    if padding is None:
        (x_t,) = _as_torch(_padded(x, pads, 0.0))
        means = pooling(x_t, sizes, strides)
        if exclude_padding_from_average:
            (inside,) = _as_torch(_padded(np.ones_like(x), pads, 0.0))
            means = means / pooling(inside, sizes, strides)
        return (means.numpy(),)
    (x_t,) = _as_torch(x)
    means = pooling(x_t, sizes, strides, padding, ceil_mode=bool(ceil_mode),
                    count_include_pad=not exclude_padding_from_average)
    return (means.numpy(),)
