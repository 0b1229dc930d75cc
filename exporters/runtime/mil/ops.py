"""Numpy kernels for MIL ops, one per op type, registered in KERNELS.

Each kernel takes the op's inputs by their MIL names (numpy arrays or python scalars; absent
optional inputs take the MIL default) and returns a tuple with one value per op output.
Float kernels compute in the dtype they receive; the executor feeds fp32 and rounds results.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.special import erf as _erf

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


# ---------------------------------------------------------------- elementwise


def _floor_div(x, y):
    return np.floor(x / y) if _is_float(x) or _is_float(y) else np.floor_divide(x, y)


_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "floor_div": _floor_div,
    "pow": np.power,
    "mod": np.mod,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}

_UNARY = {
    "abs": np.abs,
    "ceil": np.ceil,
    "cos": np.cos,
    "erf": _erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "identity": lambda x: x,
    "logical_not": np.logical_not,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "round": np.round,
    "sigmoid": _sigmoid,
    "sign": np.sign,
    "silu": lambda x: x * _sigmoid(x),
    "sin": np.sin,
    "softplus": lambda x: np.logaddexp(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
}


def _binary_kernel(function):
    def run(x, y):
        return (function(x, y),)

    return run


def _unary_kernel(function):
    def run(x):
        return (function(x),)

    return run


KERNELS.update({name: _binary_kernel(fn) for name, fn in _BINARY.items()})
KERNELS.update({name: _unary_kernel(fn) for name, fn in _UNARY.items()})


@kernel("log")
def log(x, epsilon=1e-45):
    """log(x + epsilon)."""
    return (np.log(x + epsilon),)


@kernel("rsqrt")
def rsqrt(x, epsilon=1e-12):
    """1 / sqrt(x + epsilon)."""
    return (1.0 / np.sqrt(x + epsilon),)


@kernel("inverse")
def inverse(x, epsilon=1e-4):
    """1 / (x + epsilon)."""
    return (1.0 / (x + epsilon),)


@kernel("clip")
def clip(x, alpha, beta):
    """min(max(x, alpha), beta)."""
    return (np.minimum(np.maximum(x, alpha), beta),)


@kernel("threshold")
def threshold(x, alpha):
    """max(x, alpha)."""
    return (np.maximum(x, alpha),)


@kernel("leaky_relu")
def leaky_relu(x, alpha):
    """x if x >= 0 else alpha * x."""
    return (np.where(x >= 0, x, alpha * x),)


@kernel("elu")
def elu(x, alpha):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return (np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),)


@kernel("gelu")
def gelu(x, mode="EXACT"):
    """GELU, exact or with the tanh / sigmoid approximation."""
    if mode == "TANH_APPROXIMATION":
        return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),)
    if mode == "SIGMOID_APPROXIMATION":
        return (x * _sigmoid(1.702 * x),)
    return (0.5 * x * (1 + _erf(x / math.sqrt(2))),)


@kernel("softmax")
def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, shifted by the max for stability."""
    exps = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (exps / np.sum(exps, axis=axis, keepdims=True),)


@kernel("select")
def select(cond, a, b):
    """a where cond else b, broadcasting."""
    return (np.where(cond, a, b),)


@kernel("cast")
def cast(x, dtype):
    """x converted to the MIL dtype named by `dtype`."""
    return (np.asarray(x).astype(CAST_DTYPES[dtype]),)


# ---------------------------------------------------------------- reductions


def _reduction_kernel(function):
    def run(x, axes=None, keep_dims=False):
        return (function(x, axis=_axes(axes), keepdims=bool(keep_dims)),)

    return run


def _log_sum_exp(x, axis, keepdims):
    peak = np.max(x, axis=axis, keepdims=True)
    total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return total if keepdims else np.squeeze(total, axis=axis)


_REDUCTIONS = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims),
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims)),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _log_sum_exp,
}
KERNELS.update({name: _reduction_kernel(fn) for name, fn in _REDUCTIONS.items()})


def _arg_reduction_kernel(function):
    def run(x, axis=-1, keep_dims=False, output_dtype="int32"):
        indices = function(x, axis=int(axis))
        if keep_dims:
            indices = np.expand_dims(indices, int(axis))
        return (np.asarray(indices, dtype=CAST_DTYPES[output_dtype]),)

    return run


KERNELS["reduce_argmax"] = _arg_reduction_kernel(np.argmax)
KERNELS["reduce_argmin"] = _arg_reduction_kernel(np.argmin)


# ---------------------------------------------------------------- shape and layout


@kernel("reshape")
def reshape(x, shape):
    """x with a new shape; 0 keeps the input dim when the rank is unchanged, -1 is inferred."""
    dims = [int(d) for d in np.ravel(shape)]
    if len(dims) == np.ndim(x):
        dims = [np.shape(x)[i] if d == 0 else d for i, d in enumerate(dims)]
    return (np.reshape(x, dims),)


@kernel("expand_dims")
def expand_dims(x, axes):
    """x with size-1 dims inserted at `axes` (negative axes count from the output rank)."""
    return (np.expand_dims(x, _axes(axes)),)


@kernel("squeeze")
def squeeze(x, axes=None):
    """x without the given (default: all) size-1 dims."""
    return (np.squeeze(x, axis=_axes(axes)),)


@kernel("transpose")
def transpose(x, perm):
    """x with its dims permuted."""
    return (np.transpose(x, _axes(perm)),)


@kernel("flatten2d")
def flatten2d(x, axis=1):
    """x reshaped to 2-D, splitting the dims before and after `axis`."""
    axis = int(axis) + np.ndim(x) if int(axis) < 0 else int(axis)
    return (np.reshape(x, (math.prod(np.shape(x)[:axis]), -1)),)


@kernel("reverse")
def reverse(x, axes=None):
    """x flipped along `axes` (default: all)."""
    return (np.flip(x, axis=_axes(axes)),)


@kernel("shape")
def shape(x):
    """The shape of x as an int32 vector."""
    return (np.array(np.shape(x), dtype=np.int32),)


@kernel("concat")
def concat(values, axis, interleave=False):
    """values joined along axis, or interleaved element by element when `interleave`."""
    if all(np.ndim(value) == 0 for value in values):
        return (np.stack(values),)  # MIL joins rank-0 values into a vector
    if not interleave:
        return (np.concatenate(values, axis=int(axis)),)
    axis = int(axis) % np.ndim(values[0])
    stacked = np.stack(values, axis=axis + 1)
    merged = stacked.shape[:axis] + (-1,) + stacked.shape[axis + 2 :]
    return (stacked.reshape(merged),)


@kernel("non_zero")
def non_zero(x):
    """Indices of x's nonzero elements, one row each: [count, rank(x)] int32."""
    return (np.argwhere(x).astype(np.int32),)


@kernel("stack")
def stack(values, axis):
    """values stacked along a new axis."""
    return (np.stack(values, axis=int(axis)),)


@kernel("split")
def split(x, axis, num_splits=None, split_sizes=None):
    """x cut along axis into `split_sizes` pieces, or `num_splits` equal pieces."""
    axis = int(axis)
    if split_sizes is None:
        return tuple(np.split(x, int(num_splits), axis=axis))
    boundaries = np.cumsum(np.ravel(split_sizes))[:-1]
    return tuple(np.split(x, boundaries, axis=axis))


@kernel("tile")
def tile(x, reps):
    """x repeated reps[i] times along dim i."""
    return (np.tile(x, _axes(reps)),)


@kernel("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """Numpy-style strided slice; masks drop begin/end or index (and drop) a dim."""
    rank = np.ndim(x)
    stride = [1] * rank if stride is None else np.ravel(stride)
    begin_mask = [False] * rank if begin_mask is None else np.ravel(begin_mask)
    end_mask = [False] * rank if end_mask is None else np.ravel(end_mask)
    squeeze_mask = [False] * rank if squeeze_mask is None else np.ravel(squeeze_mask)
    index = []
    for axis in range(rank):
        start = None if begin_mask[axis] else int(begin[axis])
        if squeeze_mask[axis]:
            index.append(start or 0)
        else:
            stop = None if end_mask[axis] else int(end[axis])
            index.append(slice(start, stop, int(stride[axis])))
    return (np.asarray(x)[tuple(index)],)


@kernel("slice_by_size")
def slice_by_size(x, begin, size):
    """x[begin : begin + size] per dim; size -1 means to the end."""
    index = tuple(
        slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(np.ravel(begin), np.ravel(size))
    )
    return (np.asarray(x)[index],)


@kernel("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    """x padded on its last N dims; pad holds (before, after) pairs in dim order."""
    pairs = [tuple(int(v) for v in pair) for pair in np.reshape(pad, (-1, 2))]
    widths = [(0, 0)] * (np.ndim(x) - len(pairs)) + pairs
    if mode == "constant":
        return (np.pad(x, widths, mode="constant", constant_values=constant_val),)
    return (np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode]),)


@kernel("band_part")
def band_part(x, lower=-1, upper=-1):
    """x with entries outside the band of the last two dims zeroed (negative = unbounded)."""
    rows, cols = np.shape(x)[-2:]
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = ((lower < 0) | (-offset <= lower)) & ((upper < 0) | (offset <= upper))
    return (np.where(keep, x, np.zeros((), dtype=np.result_type(x))),)


# ---------------------------------------------------------------- creation


@kernel("range_1d")
def range_1d(end, start, step):
    """arange(start, end, step)."""
    return (np.arange(start, end, step),)


@kernel("fill")
def fill(shape, value=0.0):
    """A tensor of `shape` filled with value."""
    return (np.full(_axes(shape), value),)


@kernel("fill_like")
def fill_like(ref_tensor, value=0.0):
    """A tensor shaped like ref_tensor filled with value."""
    return (np.full(np.shape(ref_tensor), value),)


# ---------------------------------------------------------------- gather / sort


@kernel("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """x indexed along axis by indices (negative indices wrap); leading batch_dims are shared."""
    axis = int(axis) % np.ndim(x)
    batch_dims = int(batch_dims)
    if batch_dims == 0:
        return (np.take(x, indices, axis=axis),)
    batch_shape = np.shape(x)[:batch_dims]
    flat_x = np.reshape(x, (-1,) + np.shape(x)[batch_dims:])
    flat_indices = np.reshape(indices, (-1,) + np.shape(indices)[batch_dims:])
    parts = [np.take(xb, ib, axis=axis - batch_dims) for xb, ib in zip(flat_x, flat_indices)]
    stacked = np.stack(parts)
    return (stacked.reshape(batch_shape + stacked.shape[1:]),)


@kernel("gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    """take_along_axis(x, indices, axis) (negative indices wrap)."""
    return (np.take_along_axis(x, np.asarray(indices, dtype=np.int64), axis=int(axis)),)


def _sort_order(x, axis, ascending):
    keys = x if ascending else -np.asarray(x)
    return np.argsort(keys, axis=int(axis), kind="stable")


@kernel("argsort")
def argsort(x, axis=-1, ascending=False):
    """Indices that sort x along axis (descending by default, ties in input order)."""
    return (_sort_order(x, axis, ascending),)


@kernel("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """The k largest (or smallest) values along axis and their indices."""
    order = np.take(_sort_order(x, axis, ascending), np.arange(int(k)), axis=int(axis))
    values = np.take_along_axis(x, order, axis=int(axis))
    return (values, order.astype(CAST_DTYPES[output_indices_dtype])) if return_indices else (values,)


@kernel("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False):
    """Cumulative sum along axis, optionally exclusive and/or from the end."""
    axis = int(axis)
    data = np.flip(x, axis) if reverse else x
    total = np.cumsum(data, axis=axis)
    if exclusive:
        total = total - data
    return (np.flip(total, axis) if reverse else total,)


# ---------------------------------------------------------------- linear algebra


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
    """numpy einsum over `values` with the MIL equation string."""
    return (np.einsum(equation, *values, optimize=True),)


# ---------------------------------------------------------------- normalization


@kernel("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over `axes` (default: all)."""
    rank = np.ndim(x)
    axes = tuple(range(rank)) if axes is None else tuple(int(a) % rank for a in np.ravel(axes))
    centered = x - np.mean(x, axis=axes, keepdims=True)
    variance = np.mean(np.square(centered), axis=axes, keepdims=True)
    out = centered / np.sqrt(variance + epsilon)
    param_shape = [np.shape(x)[i] if i in axes else 1 for i in range(rank)]
    if gamma is not None:
        out = out * np.reshape(gamma, param_shape)
    if beta is not None:
        out = out + np.reshape(beta, param_shape)
    return (out,)


def _channel_shape(x):
    return (-1,) + (1,) * (np.ndim(x) - 2)


@kernel("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """Per-channel (dim 1) affine normalisation with given statistics."""
    channel = _channel_shape(x)
    out = (x - np.reshape(mean, channel)) / np.sqrt(np.reshape(variance, channel) + epsilon)
    if gamma is not None:
        out = out * np.reshape(gamma, channel)
    if beta is not None:
        out = out + np.reshape(beta, channel)
    return (out,)


@kernel("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    """Normalise each (batch, channel) over its spatial dims, then per-channel affine."""
    spatial = tuple(range(2, np.ndim(x)))
    centered = x - np.mean(x, axis=spatial, keepdims=True)
    out = centered / np.sqrt(np.mean(np.square(centered), axis=spatial, keepdims=True) + epsilon)
    channel = _channel_shape(x)
    if gamma is not None:
        out = out * np.reshape(gamma, channel)
    if beta is not None:
        out = out + np.reshape(beta, channel)
    return (out,)


# ---------------------------------------------------------------- convolution


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
    tensors = _as_torch(x, weight, *([] if bias is None else [bias]))
    out = _TORCH_CONV[spatial](tensors[0], tensors[1], tensors[2] if bias is not None else None, stride=strides,
                               dilation=dilations, groups=int(groups))
    return (out.numpy(),)


# ---------------------------------------------------------------- recurrent

_LSTM_ACTIVATIONS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x,
}


def _lstm_activation(name: str):
    if name.lower() not in _LSTM_ACTIVATIONS:
        raise NotImplementedError(f"lstm activation {name!r} is not supported")
    return _LSTM_ACTIVATIONS[name.lower()]


def _lstm_direction(x, h, c, weight_ih, weight_hh, bias, activations, backward):
    """One LSTM direction over x [T, B, I]; gates are stacked in MIL order i, f, o, z."""
    gate, cell, output = activations
    steps = np.shape(x)[0]
    projected = np.matmul(x, np.transpose(weight_ih))
    if bias is not None:
        projected += bias
    recurrent = np.transpose(weight_hh)
    sequence = np.empty(np.shape(x)[:2] + (np.shape(weight_hh)[1],), dtype=np.result_type(projected, h))
    for t in reversed(range(steps)) if backward else range(steps):
        i, f, o, z = np.split(projected[t] + h @ recurrent, 4, axis=-1)
        c = gate(f) * c + gate(i) * cell(z)
        h = gate(o) * output(c)
        sequence[t] = h
    return sequence, h, c


@kernel("lstm")
def lstm(
    x,
    initial_h,
    initial_c,
    weight_ih,
    weight_hh,
    bias=None,
    peephole=None,
    weight_ih_back=None,
    weight_hh_back=None,
    bias_back=None,
    peephole_back=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    cell_activation="tanh",
    activation="tanh",
    clip=None,
):
    """MIL lstm: returns (all or last hidden [T|1, B, D*H], h_last [B, D*H], c_last [B, D*H])."""
    if peephole is not None or peephole_back is not None or clip is not None:
        raise NotImplementedError("lstm with peephole or clip is not supported")
    activations = tuple(_lstm_activation(a) for a in (recurrent_activation, cell_activation, activation))
    hidden = np.shape(weight_hh)[1]
    if direction == "bidirectional":
        forward = _lstm_direction(x, initial_h[:, :hidden], initial_c[:, :hidden], weight_ih, weight_hh, bias,
                                  activations, backward=False)
        backward = _lstm_direction(x, initial_h[:, hidden:], initial_c[:, hidden:], weight_ih_back, weight_hh_back,
                                   bias_back, activations, backward=True)
        sequence, h, c = (np.concatenate(pair, axis=-1) for pair in zip(forward, backward))
    else:
        sequence, h, c = _lstm_direction(x, initial_h, initial_c, weight_ih, weight_hh, bias, activations,
                                         backward=direction == "reverse")
    return (sequence if output_sequence else h[None], h, c)
