"""MIL kernels of the numpy executor checked against torch's own ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from exporters.runtime.mil import KERNELS
from exporters.runtime.mil.executor import FP16_NUMPY_MAX, _round_to_fp16
from exporters.runtime.mil.ops.linalg import SPLIT_MAX_ROWS, SPLIT_MIN_WEIGHT_ELEMENTS, WEIGHT_LEFT_MAX_ROWS


def run(op_type: str, **inputs):
    """Call the registered kernel of `op_type` with MIL-named inputs."""
    return KERNELS[op_type](**inputs)


def randn(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def torch_threads(request):
    """torch's intra-op thread count for the test (restored after): the products split the weight into one
    block per thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture
def batched_calls(monkeypatch) -> list[str]:
    """Names of the batched torch products called during the test."""
    calls = []
    for name in ("bmm", "baddbmm"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *args, _name=name, _original=original, **kwargs:
                            calls.append(_name) or _original(*args, **kwargs))
    return calls


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow-style SAME padding: output ceil(size / stride), extra padding after."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


conv_cases = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 2),
        "groups": st.integers(1, 3),
        "in_per_group": st.integers(1, 3),
        "out_per_group": st.integers(1, 3),
        "kernel": st.integers(1, 4),
        "stride": st.integers(1, 3),
        "dilation": st.integers(1, 2),
        "pad_type": st.sampled_from(["valid", "same", "custom"]),
        "custom": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "seed": st.integers(0, 2**16),
    }
)


def conv_reference(x, weight, bias, case, spatial_pads):
    """torch convNd on an explicitly padded input."""
    torch_pad = [p for pads in reversed(spatial_pads) for p in pads]
    padded = F.pad(torch.from_numpy(x), torch_pad)
    conv = F.conv1d if x.ndim == 3 else F.conv2d
    return conv(padded, torch.from_numpy(weight), torch.from_numpy(bias), stride=case["stride"],
                dilation=case["dilation"], groups=case["groups"]).numpy()


def conv_pads(case, sizes):
    if case["pad_type"] == "valid":
        return [(0, 0)] * len(sizes)
    if case["pad_type"] == "custom":
        return [case["custom"]] * len(sizes)
    return [same_pads(size, case["kernel"], case["stride"], case["dilation"]) for size in sizes]


def check_conv(case, sizes):
    channels = case["groups"] * case["in_per_group"]
    out_channels = case["groups"] * case["out_per_group"]
    x = randn(case["seed"], case["batch"], channels, *sizes)
    weight = randn(case["seed"] + 1, out_channels, case["in_per_group"], *[case["kernel"]] * len(sizes))
    bias = randn(case["seed"] + 2, out_channels)
    pads = conv_pads(case, sizes)
    (out,) = run(
        "conv", x=x, weight=weight, bias=bias, strides=np.array([case["stride"]] * len(sizes)),
        pad_type=case["pad_type"], pad=np.array([p for pair in pads for p in pair]),
        dilations=np.array([case["dilation"]] * len(sizes)), groups=case["groups"],
    )
    expected = conv_reference(x, weight, bias, case, pads)
    if case["pad_type"] == "same":
        assert out.shape[2:] == tuple(math.ceil(s / case["stride"]) for s in sizes)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@given(case=conv_cases, length=st.integers(8, 20))
def test_conv1d_matches_torch(case, length):
    """conv 1-D: groups, strides, dilations and valid/same/custom padding vs torch conv1d."""
    check_conv(case, (length,))


@given(case=conv_cases, height=st.integers(8, 12), width=st.integers(8, 12))
def test_conv2d_matches_torch(case, height, width):
    """conv 2-D: groups, strides, dilations and valid/same/custom padding vs torch conv2d."""
    check_conv(case, (height, width))


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("positions", [(32,), (WEIGHT_LEFT_MAX_ROWS,), (WEIGHT_LEFT_MAX_ROWS + 1,), (4, 8)])
def test_pointwise_conv_matches_torch(positions, with_bias):
    """1x1 conv of one item (the conformer's pointwise convolutions; a product with the weight on the left up to
    WEIGHT_LEFT_MAX_ROWS positions, torch's convolution above), 1-D and 2-D, with a custom pad, vs torch."""
    channels, outputs = 512, 1024
    x = randn(0, 1, channels, *positions)
    weight, bias = randn(1, outputs, channels, *(1,) * len(positions)), randn(2, outputs)
    pad = np.array([1, 0] * len(positions))
    (out,) = run("conv", x=x, weight=weight, bias=bias if with_bias else None, pad_type="custom", pad=pad)
    padded = F.pad(torch.from_numpy(x), [1, 0] * len(positions))
    torch_conv = F.conv1d if len(positions) == 1 else F.conv2d
    expected = torch_conv(padded, torch.from_numpy(weight), torch.from_numpy(bias) if with_bias else None)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_depthwise_conv_matches_torch():
    """conv with groups == channels (depthwise, as in the conformer conv module) vs torch."""
    x, weight, bias = randn(0, 1, 16, 30), randn(1, 16, 1, 9), randn(2, 16)
    (out,) = run("conv", x=x, weight=weight, bias=bias, pad_type="custom", pad=np.array([4, 4]), groups=16)
    expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), padding=4, groups=16)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def torch_lstm_to_mil(lstm: torch.nn.LSTM, suffix: str = "_l0") -> dict[str, np.ndarray]:
    """MIL lstm weights from a torch layer: gates reordered i,f,g,o -> i,f,o,g; biases summed."""

    def ifog(tensor):
        i, f, g, o = tensor.detach().numpy().reshape(4, -1, *tensor.shape[1:])
        return np.concatenate([i, f, o, g])

    return {
        "weight_ih": ifog(getattr(lstm, f"weight_ih{suffix}")),
        "weight_hh": ifog(getattr(lstm, f"weight_hh{suffix}")),
        "bias": ifog(getattr(lstm, f"bias_ih{suffix}") + getattr(lstm, f"bias_hh{suffix}")),
    }


@given(steps=st.integers(1, 6), batch=st.integers(1, 3), inputs=st.integers(1, 5), hidden=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_lstm_matches_torch(steps, batch, inputs, hidden, seed):
    """lstm (MIL gate order i,f,o,z) over several steps with initial states: sequence, h and c vs torch."""
    check_lstm_against_torch(steps, batch, inputs, hidden, seed)


def check_lstm_against_torch(steps: int, batch: int, inputs: int, hidden: int, seed: int) -> None:
    """A random torch LSTM layer and the lstm kernel on its MIL weights: sequence, h and c agree."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(inputs, hidden)
    x, h0, c0 = randn(seed, steps, batch, inputs), randn(seed + 1, batch, hidden), randn(seed + 2, batch, hidden)
    sequence, h, c = run("lstm", x=x, initial_h=h0, initial_c=c0, output_sequence=True, **torch_lstm_to_mil(lstm))
    with torch.no_grad():
        expected, (eh, ec) = lstm(torch.from_numpy(x), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    np.testing.assert_allclose(sequence, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, eh[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, ec[0].numpy(), rtol=1e-5, atol=1e-5)


def test_lstm_last_output_shapes():
    """lstm with output_sequence False returns [1, B, H] (the last h) plus h and c [B, H]."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4)
    x, state = randn(0, 5, 2, 3), np.zeros((2, 4), np.float32)
    last, h, c = run("lstm", x=x, initial_h=state, initial_c=state, **torch_lstm_to_mil(lstm))
    assert last.shape == (1, 2, 4) and h.shape == (2, 4) and c.shape == (2, 4)
    np.testing.assert_array_equal(last[0], h)


@pytest.mark.parametrize("steps", [1, 3])
def test_lstm_at_decoder_width_matches_torch(torch_threads, batched_calls, steps):
    """lstm at the full-width prediction net's size (640 -> 640: weights split by thread), one token as in a
    decode step and a few, vs torch."""
    check_lstm_against_torch(steps, 1, 640, 640, seed=steps)
    assert bool(batched_calls) == (torch_threads > 1)


def test_bidirectional_lstm_matches_torch():
    """lstm direction=bidirectional: outputs [fwd, bwd] concatenated per step, like torch."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    forward, backward = torch_lstm_to_mil(lstm), torch_lstm_to_mil(lstm, "_l0_reverse")
    x, h0, c0 = randn(0, 5, 2, 3), randn(1, 2, 8), randn(2, 2, 8)
    sequence, h, c = run(
        "lstm", x=x, initial_h=h0, initial_c=c0, direction="bidirectional", output_sequence=True, **forward,
        **{f"{name}_back": value for name, value in backward.items()},
    )
    states = [torch.from_numpy(s.reshape(2, 2, 4).transpose(1, 0, 2).copy()) for s in (h0, c0)]
    with torch.no_grad():
        expected, (eh, ec) = lstm(torch.from_numpy(x), tuple(states))
    np.testing.assert_allclose(sequence, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, torch.cat([eh[0], eh[1]], -1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, torch.cat([ec[0], ec[1]], -1).numpy(), rtol=1e-5, atol=1e-5)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), normalized=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_layer_norm_matches_torch(shape, normalized, seed):
    """layer_norm over the trailing axes with gamma, beta and epsilon vs torch layer_norm."""
    normalized = min(normalized, len(shape))
    x = randn(seed, *shape) * 3 + 1
    gamma, beta = randn(seed + 1, *shape[-normalized:]), randn(seed + 2, *shape[-normalized:])
    axes = np.arange(-normalized, 0)
    (out,) = run("layer_norm", x=x, axes=axes, gamma=gamma, beta=beta, epsilon=1e-5)
    expected = F.layer_norm(torch.from_numpy(x), shape[-normalized:], torch.from_numpy(gamma),
                            torch.from_numpy(beta), eps=1e-5)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)


@given(shape=st.lists(st.integers(2, 6), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_layer_norm_over_leading_axes_matches_torch(shape, seed):
    """layer_norm over axes that are not the trailing ones (axis 0, gamma and beta broadcast) vs torch
    layer_norm on the array with that axis moved last."""
    x = randn(seed, *shape) * 3 + 1
    per_channel = (shape[0],) + (1,) * (len(shape) - 1)
    gamma, beta = randn(seed + 1, *per_channel), randn(seed + 2, *per_channel)
    (out,) = run("layer_norm", x=x, axes=[0], gamma=gamma, beta=beta, epsilon=1e-5)
    moved = torch.from_numpy(np.moveaxis(x, 0, -1).copy())
    expected = F.layer_norm(moved, (shape[0],), torch.from_numpy(gamma.ravel()), torch.from_numpy(beta.ravel()),
                            eps=1e-5)
    np.testing.assert_allclose(out, np.moveaxis(expected.numpy(), -1, 0), rtol=1e-4, atol=1e-4)


@given(batch=st.integers(1, 3), channels=st.integers(1, 5), spatial=st.lists(st.integers(1, 5), min_size=1,
       max_size=2), seed=st.integers(0, 2**16))
def test_batch_norm_matches_torch(batch, channels, spatial, seed):
    """batch_norm with running mean/variance, gamma and beta vs torch batch_norm in eval mode."""
    x = randn(seed, batch, channels, *spatial)
    mean, gamma, beta = randn(seed + 1, channels), randn(seed + 2, channels), randn(seed + 3, channels)
    variance = np.abs(randn(seed + 4, channels)) + 0.1
    (out,) = run("batch_norm", x=x, mean=mean, variance=variance, gamma=gamma, beta=beta, epsilon=1e-3)
    expected = F.batch_norm(*(torch.from_numpy(a) for a in (x, mean, variance, gamma, beta)), eps=1e-3)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), axis_choice=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_softmax_matches_torch(shape, axis_choice, seed):
    """softmax along any (possibly negative) axis vs torch softmax."""
    axis = axis_choice % len(shape) - len(shape) * (axis_choice % 2)
    x = randn(seed, *shape) * 10
    (out,) = run("softmax", x=x, axis=axis)
    np.testing.assert_allclose(out, torch.softmax(torch.from_numpy(x), axis).numpy(), rtol=1e-5, atol=1e-6)


@given(lead=st.lists(st.integers(1, 4), max_size=2), d_in=st.integers(1, 8), d_out=st.integers(1, 8),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_torch(lead, d_in, d_out, with_bias, seed):
    """linear (weight [out, in], optional bias) over any leading dims vs torch linear."""
    x, weight, bias = randn(seed, *lead, d_in), randn(seed + 1, d_out, d_in), randn(seed + 2, d_out)
    (out,) = run("linear", x=x, weight=weight, bias=bias if with_bias else None)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias) if with_bias else None)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("lead", [(), (1, 32), (2, 64), (1, WEIGHT_LEFT_MAX_ROWS), (1, WEIGHT_LEFT_MAX_ROWS + 1),
                                  (1, 188)])
def test_linear_on_both_sides_of_the_weight_left_threshold(lead, with_bias):
    """linear at the encoder's widths with row counts on both sides of the one where the kernel changes
    operand order, against torch linear."""
    x, weight, bias = randn(1, *lead, 256), randn(2, 384, 256), randn(3, 384)
    (out,) = run("linear", x=x, weight=weight, bias=bias if with_bias else None)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias) if with_bias else None)
    assert out.shape == (*lead, 384) and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("rows", [1, SPLIT_MAX_ROWS, SPLIT_MAX_ROWS + 1, WEIGHT_LEFT_MAX_ROWS + 1])
@pytest.mark.parametrize("d_out", [1024, 1023])
def test_linear_splits_large_weights_by_thread(torch_threads, batched_calls, rows, d_out, with_bias):
    """linear with a weight of at least SPLIT_MIN_WEIGHT_ELEMENTS: split into one block per thread for up to
    SPLIT_MAX_ROWS rows (a decode step's one row) when the weight's rows divide, else one product; both against
    torch linear."""
    d_in = SPLIT_MIN_WEIGHT_ELEMENTS // 1000 + 1
    x, weight, bias = randn(1, 1, rows, d_in), randn(2, d_out, d_in), randn(3, d_out)
    (out,) = run("linear", x=x, weight=weight, bias=bias if with_bias else None)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias) if with_bias else None)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)
    assert bool(batched_calls) == (torch_threads > 1 and d_out % torch_threads == 0 and rows <= SPLIT_MAX_ROWS)


@given(batch_x=st.sampled_from([(), (1,), (3,), (2, 1)]), batch_y=st.sampled_from([(), (1,), (3,), (1, 3)]),
       m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4), transpose_x=st.booleans(),
       transpose_y=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_matches_torch(batch_x, batch_y, m, k, n, transpose_x, transpose_y, seed):
    """matmul with transpose_x / transpose_y and broadcast batch dims vs torch matmul."""
    x = randn(seed, *batch_x, *((k, m) if transpose_x else (m, k)))
    y = randn(seed + 1, *batch_y, *((n, k) if transpose_y else (k, n)))
    (out,) = run("matmul", x=x, y=y, transpose_x=transpose_x, transpose_y=transpose_y)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    expected = torch.matmul(tx.transpose(-1, -2) if transpose_x else tx, ty.transpose(-1, -2) if transpose_y else ty)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), axis_choice=st.integers(0, 2),
       index_shape=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 2**16))
def test_gather_matches_torch(shape, axis_choice, index_shape, seed):
    """gather along an axis with negative indices (wrapping) vs torch advanced indexing."""
    axis = axis_choice % len(shape)
    x = randn(seed, *shape)
    indices = np.random.default_rng(seed).integers(-shape[axis], shape[axis], size=index_shape).astype(np.int32)
    (out,) = run("gather", x=x, indices=indices, axis=axis - len(shape))
    index = (slice(None),) * axis + (torch.as_tensor(indices.astype(np.int64) % shape[axis]),)
    np.testing.assert_array_equal(out, torch.from_numpy(x)[index].numpy())


def test_gather_with_batch_dims():
    """gather with batch_dims=1 picks per-batch rows, like torch.gather on expanded indices."""
    x = randn(0, 2, 5, 3)
    indices = np.array([[4, -1], [0, 2]], dtype=np.int32)
    (out,) = run("gather", x=x, indices=indices, axis=1, batch_dims=1)
    wrapped = torch.from_numpy(indices.astype(np.int64) % 5)[..., None].expand(2, 2, 3)
    np.testing.assert_array_equal(out, torch.gather(torch.from_numpy(x), 1, wrapped).numpy())


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), depth_choice=st.integers(1, 4),
       batch_choice=st.integers(0, 1), index_shape=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 2**16))
def test_gather_nd_matches_torch(shape, depth_choice, batch_choice, index_shape, seed):
    """gather_nd (K coordinates per index, optional batch_dims, negative coordinates wrapping) vs torch
    advanced indexing with one index tensor per axis."""
    batch_dims = min(batch_choice, len(shape) - 1)
    depth = 1 + (depth_choice - 1) % (len(shape) - batch_dims)
    x = randn(seed, *shape)
    indexed = shape[batch_dims:batch_dims + depth]
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.integers(-size, size, size=shape[:batch_dims] + index_shape) for size in indexed],
                       axis=-1).astype(np.int32)
    (out,) = run("gather_nd", x=x, indices=indices, batch_dims=batch_dims)
    wrapped = [torch.as_tensor(indices[..., k].astype(np.int64) % size) for k, size in enumerate(indexed)]
    tx = torch.from_numpy(x)
    if batch_dims:
        rows = torch.arange(shape[0]).reshape((-1,) + (1,) * len(index_shape))
        expected = tx[(rows, *wrapped)]
    else:
        expected = tx[tuple(wrapped)]
    np.testing.assert_array_equal(out, expected.numpy())


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), axis_choice=st.integers(0, 2),
       picks=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gather_along_axis_matches_torch(shape, axis_choice, picks, seed):
    """gather_along_axis vs torch.gather."""
    axis = axis_choice % len(shape)
    x = randn(seed, *shape)
    index_shape = shape[:axis] + [picks] + shape[axis + 1 :]
    indices = np.random.default_rng(seed).integers(0, shape[axis], size=index_shape).astype(np.int32)
    (out,) = run("gather_along_axis", x=x, indices=indices, axis=axis)
    expected = torch.gather(torch.from_numpy(x), axis, torch.from_numpy(indices.astype(np.int64)))
    np.testing.assert_array_equal(out, expected.numpy())


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), axis_choice=st.integers(0, 2),
       keep_dims=st.booleans(), seed=st.integers(0, 2**16))
def test_reduce_argmax_matches_torch(shape, axis_choice, keep_dims, seed):
    """reduce_argmax with axis and keep_dims returns int32 indices equal to torch.argmax."""
    axis = axis_choice % len(shape)
    x = randn(seed, *shape)
    (out,) = run("reduce_argmax", x=x, axis=axis, keep_dims=keep_dims)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, torch.argmax(torch.from_numpy(x), axis, keepdim=keep_dims).numpy())


@given(shape=st.lists(st.integers(2, 5), min_size=2, max_size=4), padded=st.integers(1, 2),
       amounts=st.lists(st.integers(0, 1), min_size=4, max_size=4), mode=st.sampled_from(["constant", "reflect"]),
       seed=st.integers(0, 2**16))
def test_pad_matches_torch(shape, padded, amounts, mode, seed):
    """pad constant/reflect on the last N dims (MIL pairs in dim order) vs torch pad (reversed order)."""
    if mode == "reflect":
        # torch reflects only the last rank-2 dims of a 3-D or 4-D input.
        shape = shape[:4] if len(shape) > 2 else [1] + shape
        padded = len(shape) - 2
    padded = min(padded, len(shape) - 1)
    x = randn(seed, *shape)
    pairs = [tuple(amounts[2 * i : 2 * i + 2]) for i in range(padded)]
    (out,) = run("pad", x=x, pad=np.array([p for pair in pairs for p in pair]), mode=mode, constant_val=1.5)
    torch_pad = [p for pair in reversed(pairs) for p in pair]
    options = {"value": 1.5} if mode == "constant" else {}
    np.testing.assert_array_equal(out, F.pad(torch.from_numpy(x), torch_pad, mode=mode, **options).numpy())


def test_pad_replicate_matches_torch():
    """pad mode=replicate vs torch replicate padding."""
    x = randn(0, 1, 2, 5)
    (out,) = run("pad", x=x, pad=np.array([2, 1]), mode="replicate")
    np.testing.assert_array_equal(out, F.pad(torch.from_numpy(x), [2, 1], mode="replicate").numpy())


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_silu_matches_torch(shape, seed):
    """silu vs torch silu, including large magnitudes."""
    x = randn(seed, *shape) * 20
    (out,) = run("silu", x=x)
    np.testing.assert_allclose(out, F.silu(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "mask_inputs, expected_index",
    [
        ({}, (slice(1, 3), slice(0, 4, 2))),
        ({"begin_mask": np.array([True, False])}, (slice(None, 3), slice(0, 4, 2))),
        ({"end_mask": np.array([False, True])}, (slice(1, 3), slice(0, None, 2))),
        ({"squeeze_mask": np.array([True, False])}, (1, slice(0, 4, 2))),
    ],
)
def test_slice_by_index_masks(mask_inputs, expected_index):
    """slice_by_index honours begin_mask, end_mask and squeeze_mask like python slicing."""
    x = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    (out,) = run("slice_by_index", x=x.numpy(), begin=np.array([1, 0]), end=np.array([3, 4]),
                 stride=np.array([1, 2]), **mask_inputs)
    np.testing.assert_array_equal(out, x[expected_index].numpy())


def test_slice_by_index_negative_bounds_and_stride():
    """slice_by_index with negative begin/end and a negative stride."""
    x = torch.arange(10, dtype=torch.float32)
    (out,) = run("slice_by_index", x=x.numpy(), begin=np.array([-2]), end=np.array([1]), stride=np.array([-3]))
    np.testing.assert_array_equal(out, x.numpy()[-2:1:-3])


def test_split_sizes_and_num_splits():
    """split by split_sizes and by num_splits vs torch.split / torch.chunk."""
    x = torch.arange(24, dtype=torch.float32).reshape(2, 12)
    by_sizes = run("split", x=x.numpy(), split_sizes=np.array([3, 5, 4]), axis=1)
    by_count = run("split", x=x.numpy(), num_splits=4, axis=-1)
    for got, expected in zip(by_sizes, torch.split(x, [3, 5, 4], dim=1), strict=True):
        np.testing.assert_array_equal(got, expected.numpy())
    for got, expected in zip(by_count, torch.chunk(x, 4, dim=-1), strict=True):
        np.testing.assert_array_equal(got, expected.numpy())


def test_concat_interleave():
    """concat with interleave=True alternates the inputs' slices along the axis."""
    a, b = np.array([[1, 2], [3, 4], [5, 6]]), np.array([[7, 8], [9, 10], [11, 12]])
    (out,) = run("concat", values=[a, b], axis=0, interleave=True)
    np.testing.assert_array_equal(out, [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]])


def test_floor_div_rounds_toward_negative_infinity():
    """floor_div floors for floats and ints, like torch.div(rounding_mode='floor')."""
    x, y = np.array([7.0, -7.0, 7.5], np.float32), np.array([2.0, 2.0, -2.0], np.float32)
    (floats,) = run("floor_div", x=x, y=y)
    (ints,) = run("floor_div", x=x.astype(np.int32), y=y.astype(np.int32))
    np.testing.assert_array_equal(floats, torch.div(torch.from_numpy(x), torch.from_numpy(y), rounding_mode="floor"))
    np.testing.assert_array_equal(ints, [3, -4, -4])


@pytest.mark.parametrize("mode, approximate", [("EXACT", "none"), ("TANH_APPROXIMATION", "tanh")])
def test_gelu_matches_torch(mode, approximate):
    """gelu exact and tanh-approximated vs torch gelu."""
    x = randn(0, 50) * 4
    (out,) = run("gelu", x=x, mode=mode)
    np.testing.assert_allclose(out, F.gelu(torch.from_numpy(x), approximate=approximate).numpy(), atol=1e-6)


def test_topk_and_argsort_match_torch():
    """topk (values, int32 indices) and argsort, descending by default, vs torch."""
    x = randn(0, 3, 7)
    values, indices = run("topk", x=x, k=3, axis=-1)
    expected = torch.topk(torch.from_numpy(x), 3, dim=-1)
    np.testing.assert_array_equal(values, expected.values.numpy())
    np.testing.assert_array_equal(indices, expected.indices.numpy())
    (order,) = run("argsort", x=x, axis=1, ascending=True)
    np.testing.assert_array_equal(order, torch.argsort(torch.from_numpy(x), dim=1).numpy())


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), axis_choice=st.integers(0, 2),
       k_choice=st.integers(0, 5), ascending=st.booleans(), levels=st.sampled_from([3, 1000]),
       seed=st.integers(0, 2**16))
def test_topk_with_ties_matches_torch_stable_sort(shape, axis_choice, k_choice, ascending, levels, seed):
    """topk along any axis, any k: the first k of torch's stable sort (ties: the lower index first), with
    few distinct values (ties everywhere) or many."""
    axis = axis_choice % len(shape)
    k = k_choice % shape[axis] + 1
    x = np.random.default_rng(seed).integers(0, levels, shape).astype(np.float32)
    values, indices = run("topk", x=x, k=k, axis=axis, ascending=ascending)
    expected = torch.sort(torch.from_numpy(x), dim=axis, descending=not ascending, stable=True)
    np.testing.assert_array_equal(indices, expected.indices.narrow(axis, 0, k).numpy())
    np.testing.assert_array_equal(values, expected.values.narrow(axis, 0, k).numpy())


def test_square_is_exact_like_torch():
    """pow with exponent 2 equals torch's pow bit for bit (x * x, exactly rounded), overflow included."""
    x = np.concatenate([randn(0, 10000) * 100, np.float32([3e38, -1e-40, 0.0])])
    with np.errstate(over="ignore"):
        (out,) = run("pow", x=x, y=2.0)
    np.testing.assert_array_equal(out, torch.pow(torch.from_numpy(x), 2.0).numpy())


def test_band_part_matches_torch_triangles():
    """band_part keeps `lower` sub- and `upper` super-diagonals (negative: all), like tril/triu."""
    x = randn(0, 2, 4, 5)
    (lower_only,) = run("band_part", x=x, lower=-1, upper=0)
    (band,) = run("band_part", x=x, lower=1, upper=2)
    tx = torch.from_numpy(x)
    np.testing.assert_array_equal(lower_only, torch.tril(tx).numpy())
    np.testing.assert_array_equal(band, torch.triu(torch.tril(tx, 2), -1).numpy())


def test_fp16_weights_widen_exactly():
    """Every fp16 bit pattern widens to the fp32 numpy's cast gives (torch casts at package load), read-only;
    bit for bit but for NaN payloads."""
    from exporters.runtime.mil.program import widened

    every_pattern = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)[::-1]
    wide, expected = widened(every_pattern), every_pattern.astype(np.float32)
    assert wide.dtype == np.float32 and not wide.flags.writeable
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(wide[numbers].view(np.uint32), expected[numbers].view(np.uint32))
    assert np.isnan(wide[~numbers]).all()
    ints = np.arange(3, dtype=np.int32)
    assert widened(ints) is ints


@pytest.mark.parametrize("size", [FP16_NUMPY_MAX, FP16_NUMPY_MAX + 1, 200_000], ids=["numpy", "torch", "torch large"])
def test_fp16_storage_rounding_matches_ieee_cast(size):
    """Results of fp16 ops are rounded exactly like numpy's fp16 cast: ties, subnormals, overflow, nan."""
    bits = np.random.default_rng(0).integers(0, 2**32, size=size - 10, dtype=np.uint64).astype(np.uint32)
    edges = np.array([65504, 65519.9, 65520, -7e4, 2**-24, 2**-25, 3 * 2**-26, 1 + 2**-11, np.inf, np.nan], np.float32)
    values = np.concatenate([edges, bits.view(np.float32)])
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).astype(np.float32)
    with np.errstate(over="ignore"):  # as inside predict
        rounded, rounded_view = _round_to_fp16(values.copy()), _round_to_fp16(values[::-2])
    np.testing.assert_array_equal(rounded, expected)
    np.testing.assert_array_equal(rounded_view, expected[::-2])
