"""Every MIL kernel of the numpy executor against torch's own op, table-driven: elementwise, comparisons and
logic, reductions, shape and creation ops. Kernels with more to them (conv, lstm, norms, gather, …) have
their own tests in test_kernels.py; test_every_kernel_has_a_direct_test keeps the two files complete."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exporters.runtime.mil import KERNELS

SHAPES = [(7,), (3, 5), (2, 3, 4)]


def values(seed: int, shape, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def torch_of(function, *arrays, **options) -> np.ndarray:
    return function(*(torch.from_numpy(np.asarray(a)) for a in arrays), **options).numpy()


def assert_same(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(actual, expected)


# op -> (torch reference, input range, extra MIL inputs)
UNARY = {
    "abs": (torch.abs, (-3, 3), {}),
    "ceil": (torch.ceil, (-3, 3), {}),
    "floor": (torch.floor, (-3, 3), {}),
    "round": (torch.round, (-3, 3), {}),
    "sign": (torch.sign, (-3, 3), {}),
    "cos": (torch.cos, (-3, 3), {}),
    "sin": (torch.sin, (-3, 3), {}),
    "tan": (torch.tan, (-1.2, 1.2), {}),
    "tanh": (torch.tanh, (-3, 3), {}),
    "erf": (torch.erf, (-3, 3), {}),
    "exp": (torch.exp, (-3, 3), {}),
    "exp2": (torch.exp2, (-3, 3), {}),
    "sigmoid": (torch.sigmoid, (-8, 8), {}),
    "relu": (torch.relu, (-3, 3), {}),
    "relu6": (F.relu6, (-3, 9), {}),
    "softplus": (F.softplus, (-8, 8), {}),
    "softsign": (F.softsign, (-3, 3), {}),
    "square": (torch.square, (-3, 3), {}),
    "sqrt": (torch.sqrt, (0.01, 9), {}),
    "identity": (lambda x: x, (-3, 3), {}),
    "elu": (lambda x: F.elu(x, alpha=0.7), (-3, 3), {"alpha": 0.7}),
    "leaky_relu": (lambda x: F.leaky_relu(x, negative_slope=0.2), (-3, 3), {"alpha": 0.2}),
    "threshold": (lambda x: torch.clamp(x, min=0.5), (-3, 3), {"alpha": 0.5}),
    "clip": (lambda x: torch.clamp(x, -1.0, 2.0), (-3, 3), {"alpha": -1.0, "beta": 2.0}),
    "acos": (torch.acos, (-0.99, 0.99), {}),
    "asin": (torch.asin, (-0.99, 0.99), {}),
    "atan": (torch.atan, (-3, 3), {}),
    "atanh": (torch.atanh, (-0.99, 0.99), {}),
    "cosh": (torch.cosh, (-3, 3), {}),
    "sinh": (torch.sinh, (-3, 3), {}),
    "thresholded_relu": (lambda x: F.threshold(x, 0.5, 0.0), (-3, 3), {"alpha": 0.5}),
    "clamped_relu": (lambda x: F.leaky_relu(x, 0.2).clamp(max=1.5), (-9, 3), {"alpha": 0.2, "beta": 1.5}),
    "linear_activation": (lambda x: torch.add(x * 0.5, 1.25), (-3, 3), {"alpha": 0.5, "beta": 1.25}),
    "scaled_tanh": (lambda x: 1.5 * torch.tanh(0.7 * x), (-3, 3), {"alpha": 1.5, "beta": 0.7}),
    "sigmoid_hard": (F.hardsigmoid, (-5, 5), {"alpha": 1 / 6, "beta": 0.5}),
    # MIL's epsilon-guarded ops: the guard is part of their definition.
    "inverse": (lambda x: 1.0 / (x + 1e-4), (0.1, 3), {"epsilon": 1e-4}),
    "log": (lambda x: torch.log(x + 1e-3), (0.01, 9), {"epsilon": 1e-3}),
    "rsqrt": (lambda x: torch.rsqrt(x + 1e-6), (0.01, 9), {"epsilon": 1e-6}),
}

BINARY = {
    "add": (torch.add, (-3, 3)),
    "sub": (torch.sub, (-3, 3)),
    "mul": (torch.mul, (-3, 3)),
    "real_div": (torch.div, (0.5, 3)),
    "pow": (torch.pow, (0.1, 2)),
    "maximum": (torch.maximum, (-3, 3)),
    "minimum": (torch.minimum, (-3, 3)),
    "mod": (torch.remainder, (0.5, 3)),
    "equal": (torch.eq, None),
    "not_equal": (torch.ne, None),
    "greater": (torch.gt, None),
    "greater_equal": (torch.ge, None),
    "less": (torch.lt, None),
    "less_equal": (torch.le, None),
}

LOGICAL = {"logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor}

def one_axis_at_a_time(reduce, x, dims, keep):
    """A torch reduction that takes one dim, over several."""
    for dim in sorted(dims, reverse=True):
        x = reduce(x, dim, keepdim=True)
    return x if keep else x.squeeze(dims)


REDUCTIONS = {
    "reduce_sum": lambda x, dims, keep: torch.sum(x, dims, keepdim=keep),
    "reduce_mean": lambda x, dims, keep: torch.mean(x, dims, keepdim=keep),
    "reduce_max": lambda x, dims, keep: torch.amax(x, dims, keepdim=keep),
    "reduce_min": lambda x, dims, keep: torch.amin(x, dims, keepdim=keep),
    "reduce_prod": lambda x, dims, keep: one_axis_at_a_time(torch.prod, x, dims, keep),
    "reduce_l1_norm": lambda x, dims, keep: torch.sum(torch.abs(x), dims, keepdim=keep),
    "reduce_l2_norm": lambda x, dims, keep: torch.sqrt(torch.sum(x * x, dims, keepdim=keep)),
    "reduce_sum_square": lambda x, dims, keep: torch.sum(x * x, dims, keepdim=keep),
    "reduce_log_sum": lambda x, dims, keep: torch.log(torch.sum(x, dims, keepdim=keep)),
    "reduce_log_sum_exp": lambda x, dims, keep: torch.logsumexp(x, dims, keepdim=keep),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", list(UNARY))
def test_unary_kernel_matches_torch(op, shape):
    reference, (low, high), options = UNARY[op]
    x = values(len(op), shape, low, high)
    (out,) = KERNELS[op](x, **options)
    assert_same(out, torch_of(reference, x))


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_kernel_matches_torch_with_broadcasting(op):
    reference, span = BINARY[op]
    low, high = span or (-2, 2)
    x, y = values(1, (2, 3, 4), low, high), values(2, (3, 1), low, high)
    if span is None:  # comparisons: integers, so equal values occur
        x, y = np.round(x), np.round(y)
    (out,) = KERNELS[op](x, y)
    assert_same(out, torch_of(reference, x, y))


@pytest.mark.parametrize("op", [*LOGICAL, "logical_not"])
def test_logical_kernel_matches_torch(op):
    rng = np.random.default_rng(3)
    x, y = rng.random((4, 5)) > 0.5, rng.random((4, 5)) > 0.5
    if op == "logical_not":
        assert_same(KERNELS[op](x)[0], torch_of(torch.logical_not, x))
    else:
        assert_same(KERNELS[op](x, y)[0], torch_of(LOGICAL[op], x, y))


@pytest.mark.parametrize("keep_dims", [False, True])
@pytest.mark.parametrize("axes", [[0], [-1], [0, 2]])
@pytest.mark.parametrize("op", list(REDUCTIONS))
def test_reduction_kernel_matches_torch(op, axes, keep_dims):
    x = values(4, (2, 3, 4), 0.1 if op == "reduce_log_sum" else -2, 2)
    dims = tuple(a % 3 for a in axes)
    (out,) = KERNELS[op](x, axes=np.array(axes), keep_dims=keep_dims)
    assert_same(out, REDUCTIONS[op](torch.from_numpy(x), dims, keep_dims).numpy())


def test_reduction_over_all_axes():
    x = values(5, (2, 3))
    assert_same(KERNELS["reduce_sum"](x)[0], torch_of(torch.sum, x))


@pytest.mark.parametrize("keep_dims", [False, True])
def test_reduce_argmin_matches_torch(keep_dims):
    x = values(6, (3, 5))
    (out,) = KERNELS["reduce_argmin"](x, axis=1, keep_dims=keep_dims)
    assert_same(out, torch.argmin(torch.from_numpy(x), 1, keepdim=keep_dims).numpy().astype(np.int32))


def test_cast_truncates_like_torch():
    x = values(7, (9,), -4, 4)
    assert_same(KERNELS["cast"](x, dtype="int32")[0], torch_of(lambda t: t.to(torch.int32), x))
    assert KERNELS["cast"](x, dtype="fp16")[0].dtype == np.float16


def test_shape_and_layout_kernels_match_torch():
    x = values(8, (2, 3, 4))
    t = torch.from_numpy(x)
    assert_same(KERNELS["reshape"](x, shape=np.array([4, -1]))[0], t.reshape(4, -1).numpy())
    assert_same(KERNELS["transpose"](x, perm=np.array([2, 0, 1]))[0], t.permute(2, 0, 1).numpy())
    assert_same(KERNELS["expand_dims"](x, axes=np.array([0, -1]))[0], t.unsqueeze(0).unsqueeze(-1).numpy())
    assert_same(KERNELS["squeeze"](x[:, :1], axes=np.array([1]))[0], t[:, :1].squeeze(1).numpy())
    assert_same(KERNELS["squeeze"](x[:1, :1])[0], t[:1, :1].squeeze().numpy())
    assert_same(KERNELS["flatten2d"](x, axis=2)[0], t.reshape(6, 4).numpy())
    assert_same(KERNELS["reverse"](x, axes=np.array([0, 2]))[0], torch.flip(t, (0, 2)).numpy())
    assert_same(KERNELS["tile"](x, reps=np.array([1, 2, 3]))[0], torch.tile(t, (1, 2, 3)).numpy())
    assert_same(KERNELS["slice_by_size"](x, begin=np.array([1, 0, 1]), size=np.array([1, -1, 2]))[0],
                t[1:2, :, 1:3].numpy())
    assert_same(KERNELS["stack"]([x, 2 * x], axis=1)[0], torch.stack([t, 2 * t], 1).numpy())
    assert_same(KERNELS["shape"](x)[0], np.array([2, 3, 4], np.int32))


def test_creation_kernels_match_torch():
    assert_same(KERNELS["fill"](shape=np.array([2, 3]), value=1.5)[0], torch.full((2, 3), 1.5).numpy())
    x = values(9, (3, 2))
    assert_same(KERNELS["fill_like"](ref_tensor=x, value=-2.0)[0], torch.full_like(torch.from_numpy(x), -2.0).numpy())
    assert_same(KERNELS["range_1d"](end=7, start=1, step=2)[0], torch.arange(1, 7, 2).numpy())
    assert_same(KERNELS["range_1d"](end=0.0, start=1.0, step=-0.25)[0],
                torch.arange(1.0, 0.0, -0.25, dtype=torch.float32).numpy())


def test_select_matches_torch_where():
    cond = values(10, (3, 4)) > 0
    a, b = values(11, (3, 4)), values(12, (1, 4))
    assert_same(KERNELS["select"](cond, a, b)[0], torch_of(torch.where, cond, a, b))


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum_matches_torch(exclusive, reverse):
    x = values(13, (3, 5))
    t = torch.from_numpy(x)
    flipped = torch.flip(t, (1,)) if reverse else t
    expected = torch.cumsum(flipped, 1)
    if exclusive:
        expected = torch.cat([torch.zeros(3, 1), expected[:, :-1]], 1)
    expected = torch.flip(expected, (1,)) if reverse else expected
    assert_same(KERNELS["cumsum"](x, axis=1, exclusive=exclusive, reverse=reverse)[0], expected.numpy())


def test_einsum_matches_torch():
    a, b = values(14, (2, 3, 4)), values(15, (2, 4, 5))
    expected = torch.einsum("bij,bjk->bik", torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert_same(KERNELS["einsum"]([a, b], equation="bij,bjk->bik")[0], expected)


def test_non_zero_matches_torch():
    x = np.round(values(19, (3, 4), -1, 1))
    assert_same(KERNELS["non_zero"](x)[0], torch.nonzero(torch.from_numpy(x)).numpy().astype(np.int32))


def test_instance_norm_matches_torch():
    x, gamma, beta = values(16, (2, 3, 6)), values(17, (3,)), values(18, (3,))
    expected = F.instance_norm(torch.from_numpy(x), weight=torch.from_numpy(gamma), bias=torch.from_numpy(beta),
                               eps=1e-5)
    assert_same(KERNELS["instance_norm"](x, gamma=gamma, beta=beta, epsilon=1e-5)[0], expected.numpy())


def test_every_kernel_has_a_direct_test():
    """Coverage: each registered kernel is named in this file's tables or in test_kernels.py /
    test_layer_kernels.py / test_converted_modules.py (kernels run from a saved MIL program)."""
    here = Path(__file__).parent
    sources = "".join((here / name).read_text() for name in
                      ("test_kernel_table.py", "test_kernels.py", "test_layer_kernels.py", "test_converted_modules.py",
                       "test_compressed_weights.py"))
    named = set(re.findall(r'"([a-z0-9_]+)"', sources))
    assert sorted(set(KERNELS) - named) == []
