"""Elementwise ops: binary and unary arithmetic, comparisons, logic, activations, casts."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf as _erf

from .registry import _is_float, _sigmoid, CAST_DTYPES, kernel, KERNELS


def _floor_div(x, y):
    return np.floor(x / y) if _is_float(x) or _is_float(y) else np.floor_divide(x, y)


def _power(x, y):
    """x ** y; a square is x * x, exactly rounded as torch's pow makes it (numpy's float32 power is 1 ulp off
    for 1 in 10 inputs, and 400x slower)."""
    return np.square(x) if np.ndim(y) == 0 and y == 2 else np.power(x, y)


_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "floor_div": _floor_div,
    "pow": _power,
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
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
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
    "sinh": np.sinh,
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


# Ops whose output has the shape of their input x: elementwise on one tensor.
SAME_SHAPE_OPS = frozenset(_UNARY) | {
    "cast", "clamped_relu", "clip", "elu", "gelu", "inverse", "leaky_relu", "linear_activation", "log", "prelu",
    "rsqrt", "scaled_tanh", "sigmoid_hard", "softmax", "softplus_parametric", "threshold", "thresholded_relu",
}

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


@kernel("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """x where x >= alpha, else 0."""
    return (np.where(x >= alpha, x, np.zeros_like(x)),)


@kernel("clamped_relu")
def clamped_relu(x, alpha, beta):
    """min(beta, x) for x >= 0, min(beta, alpha * x) otherwise."""
    return (np.minimum(np.where(x >= 0, x, alpha * x), beta),)


@kernel("linear_activation")
def linear_activation(x, alpha, beta=0.0):
    """alpha * x + beta."""
    return (alpha * x + beta,)


@kernel("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    """alpha * tanh(beta * x)."""
    return (alpha * np.tanh(beta * x),)


@kernel("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    """min(max(alpha * x + beta, 0), 1)."""
    return (np.clip(alpha * x + beta, 0, 1),)


def _per_channel(values, x) -> np.ndarray:
    """Per-channel values [C] shaped to broadcast along axis 1 of x."""
    return np.reshape(values, (1, -1) + (1,) * (np.ndim(x) - 2))


@kernel("prelu")
def prelu(x, alpha):
    """x where x > 0, else alpha[c] * x, channel c on axis 1."""
    return (np.where(x > 0, x, _per_channel(alpha, x) * x),)


@kernel("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    """alpha[c] * log(1 + exp(beta[c] * x)), channel c on axis 1."""
    return (_per_channel(alpha, x) * np.logaddexp(_per_channel(beta, x) * x, 0),)


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
