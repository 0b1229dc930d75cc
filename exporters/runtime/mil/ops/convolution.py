"""Convolution through torch's conv kernels."""

from __future__ import annotations

import math

import numpy as np
import torch

from .linalg import WEIGHT_LEFT_MAX_ROWS, _as_torch, weight_times
from .registry import kernel


def _conv_pads(pad_type, pad, in_sizes, kernel_sizes, strides, dilations) -> list[tuple[int, int]]:
    if pad_type == "custom":
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(in_sizes))]
    if pad_type == "valid":
        return [(0, 0)] * len(in_sizes)
    pads = []
    for size, k, s, d in zip(in_sizes, kernel_sizes, strides, dilations):
        total = max(0, s * math.ceil(size / s) - size + (k - 1) * d + 1 - s)
        before = total // 2 if pad_type == "same" else (total + 1) // 2
        pads.append((before, total - before))
    return pads


_TORCH_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


@kernel("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """N-D grouped convolution (x [N, C, *d], weight [C_out, C/groups, *k]), through torch's conv kernels."""
    spatial = np.ndim(x) - 2
    if spatial not in _TORCH_CONV:
        raise NotImplementedError(f"conv over {spatial} spatial dimensions is not supported")
    kernel_sizes = np.shape(weight)[2:]
    strides = [1] * spatial if strides is None else [int(s) for s in np.ravel(strides)]
    dilations = [1] * spatial if dilations is None else [int(d) for d in np.ravel(dilations)]
    pads = _conv_pads(pad_type, pad, np.shape(x)[2:], kernel_sizes, strides, dilations)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0)] + pads)
    x_t, weight_t, *bias_t = _as_torch(x, weight, *([] if bias is None else [bias]))
    bias_t = bias_t[0] if bias_t else None
    if _is_pointwise(x_t, weight_t, strides, dilations, groups):
        out = weight_times(weight_t.reshape(weight_t.shape[:2]), x_t[0].reshape(x_t.shape[1], -1), bias_t)
        return (out.reshape(1, -1, *x.shape[2:]).numpy(),)
    out = _TORCH_CONV[spatial](x_t, weight_t, bias_t, stride=strides, dilation=dilations, groups=int(groups))
    return (out.numpy(),)


def _is_pointwise(x: torch.Tensor, weight: torch.Tensor, strides, dilations, groups) -> bool:
    """A 1x1 convolution of one item over few positions: a product with the weight on the left, faster as
    one than through torch's convolution: with the conformer's pointwise convolutions so, the full-width 2.5 s
    encoder took a median 485 / 535 ms instead of 528 / 575 ms (two runs alternating the two in one process,
    2 cores of an AMD EPYC)."""
    return (x.shape[0] == 1 and int(groups) == 1 and all(k == 1 for k in weight.shape[2:])
            and all(s == 1 for s in strides) and all(d == 1 for d in dilations)
            and math.prod(x.shape[2:]) <= WEIGHT_LEFT_MAX_ROWS)


_TORCH_CONV_TRANSPOSE = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                         3: torch.nn.functional.conv_transpose3d}


@kernel("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    """N-D transposed convolution (x [N, C_in, *d], weight [C_in, C_out/groups, *k]): the full output
    ((d - 1) * stride + (k - 1) * dilation + 1 per dim) less the pads, or output_shape's sizes from the first
    pad on (positions past the full output are zeros), plus bias."""
    spatial = np.ndim(x) - 2
    if spatial not in _TORCH_CONV_TRANSPOSE:
        raise NotImplementedError(f"conv_transpose over {spatial} spatial dimensions is not supported")
    strides = [1] * spatial if strides is None else [int(s) for s in np.ravel(strides)]
    dilations = [1] * spatial if dilations is None else [int(d) for d in np.ravel(dilations)]
    x_t, weight_t = _as_torch(x, weight)
    full = _TORCH_CONV_TRANSPOSE[spatial](x_t, weight_t, stride=strides, dilation=dilations, groups=int(groups))
    starts, lengths = _transpose_window(pad_type, pad, np.shape(x)[2:], full.shape[2:], strides)
    if output_shape is not None:
        lengths = [int(size) for size in np.ravel(output_shape)[2:]]
    out = _window(full.numpy(), starts, lengths)
    if bias is not None:
        out = out + np.reshape(bias, (-1,) + (1,) * spatial)
    return (out,)


def _transpose_window(pad_type, pad, in_sizes, full_sizes, strides) -> tuple[list[int], list[int]]:
    """Where the output starts in the full transposed convolution and its size, per spatial dim: custom pads
    cut pad[2i] before and pad[2i + 1] after; same gives in * stride, cutting the excess half before (the
    smaller half) and half after."""
    if pad_type == "custom":
        cuts = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(full_sizes))]
        return [before for before, _ in cuts], [full - sum(cut) for full, cut in zip(full_sizes, cuts)]
    if pad_type == "same":
        sizes = [size * stride for size, stride in zip(in_sizes, strides)]
        return [max(0, full - size) // 2 for full, size in zip(full_sizes, sizes)], sizes
    return [0] * len(full_sizes), list(full_sizes)


def _window(full: np.ndarray, starts, lengths) -> np.ndarray:
    """full[:, :, start:start + length, ...] per spatial dim, zeros past its end."""
    short = [max(0, start + length - size) for start, length, size in zip(starts, lengths, full.shape[2:])]
    if any(short):
        full = np.pad(full, [(0, 0), (0, 0)] + [(0, count) for count in short])
    return full[(slice(None), slice(None)) + tuple(slice(s, s + n) for s, n in zip(starts, lengths))]
