"""Reductions: reduce_* over axes, argmax/argmin."""

from __future__ import annotations

import numpy as np

from .registry import _axes, CAST_DTYPES, KERNELS


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
