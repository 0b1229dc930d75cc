"""Kernels of layers beyond the Parakeet graphs, found missing by coremltools' own torch-op tests run through
the executor (scripts/executor_holdout.py): pooling, resizing and grid sampling, transposed convolution, rnn,
the scatter ops, pixel shuffles, crop, per-channel activations, random tensors; checked against torch's own
ops, or against the examples of the MIL op definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exporters.runtime.mil import KERNELS


def run(op_type: str, **inputs):
    """The first output of the registered kernel of `op_type`, called with MIL-named inputs."""
    return KERNELS[op_type](**inputs)[0]


def randn(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_of(function, x: np.ndarray, *args, **options) -> np.ndarray:
    return function(torch.from_numpy(x), *args, **options).numpy()


def close(actual, expected, atol: float = 1e-5) -> None:
    assert np.shape(actual) == np.shape(expected)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-5)


MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_with_symmetric_pads_matches_torch(spatial, ceil_mode):
    x = randn(spatial, 2, 3, *[9 - spatial] * spatial)
    out = run("max_pool", x=x, kernel_sizes=np.array([3] * spatial), strides=np.array([2] * spatial),
              pad_type="custom", pad=np.array([1] * 2 * spatial), ceil_mode=ceil_mode)
    close(out, torch_of(MAX_POOL[spatial], x, 3, 2, 1, ceil_mode=ceil_mode))


@pytest.mark.parametrize("spatial", [1, 2])
@pytest.mark.parametrize("exclude_padding", [False, True])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool_with_symmetric_pads_matches_torch(spatial, exclude_padding, ceil_mode):
    x = randn(spatial + 10, 2, 3, *[8] * spatial)
    out = run("avg_pool", x=x, kernel_sizes=np.array([3] * spatial), strides=np.array([2] * spatial),
              pad_type="custom", pad=np.array([1] * 2 * spatial), exclude_padding_from_average=exclude_padding,
              ceil_mode=ceil_mode)
    close(out, torch_of(AVG_POOL[spatial], x, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=not exclude_padding))


def test_pools_with_asymmetric_pads_match_torch_on_the_padded_input():
    """pad_type same over 6 columns, window 4, stride 2: 1 column before and 2 after (MIL's same: the extra
    after). Max ignores the padding; the mean counts it as zeros, or not with exclude_padding_from_average."""
    x = randn(20, 1, 2, 5, 6)
    common = dict(x=x, kernel_sizes=np.array([2, 4]), strides=np.array([1, 2]), pad_type="same")
    padded = F.pad(torch.from_numpy(x), (1, 2, 0, 1))
    close(run("max_pool", **common), F.max_pool2d(F.pad(torch.from_numpy(x), (1, 2, 0, 1), value=-np.inf),
                                                  (2, 4), (1, 2)).numpy())
    close(run("avg_pool", **common), F.avg_pool2d(padded, (2, 4), (1, 2)).numpy())
    counts = F.avg_pool2d(F.pad(torch.ones_like(torch.from_numpy(x)), (1, 2, 0, 1)), (2, 4), (1, 2))
    close(run("avg_pool", **common, exclude_padding_from_average=True),
          (F.avg_pool2d(padded, (2, 4), (1, 2)) / counts).numpy())


@pytest.mark.parametrize("scales", [(2, 3), (1.5, 2.5)])
@pytest.mark.parametrize("rank", [3, 4, 5])
def test_upsample_nearest_neighbor_matches_torch(scales, rank):
    x = randn(rank, *[2] * (rank - 2), 4, 5)
    out = run("upsample_nearest_neighbor", x=x, scale_factor_height=scales[0], scale_factor_width=scales[1])
    images = torch.from_numpy(x).reshape(-1, 1, 4, 5)
    expected = F.interpolate(images, scale_factor=scales, mode="nearest", recompute_scale_factor=False)
    close(out, expected.reshape(*x.shape[:-2], *expected.shape[-2:]).numpy())


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("scales", [(2, 3), (1.5, 0.5), (4.1, 1)])
def test_upsample_bilinear_matches_torch_at_the_output_size(align_corners, scales):
    """MIL's grid is recomputed from the sizes: torch's bilinear interpolation to floor(size * scale)."""
    x = randn(3, 2, 3, 4, 6)
    out = run("upsample_bilinear", x=x, scale_factor_height=scales[0], scale_factor_width=scales[1],
              align_corners=align_corners)
    size = (int(4 * scales[0]), int(6 * scales[1]))
    close(out, torch_of(F.interpolate, x, size=size, mode="bilinear", align_corners=align_corners))


def test_upsample_bilinear_without_half_pixel_centers_samples_at_i_times_spacing():
    """align_corners and half_pixel_centers both False: output i samples input i * in / out (TF's legacy
    resize), here 0, 0.5, 1, ... clamped to the last pixel."""
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    out = run("upsample_bilinear", x=x, scale_factor_height=1, scale_factor_width=2, align_corners=False,
              half_pixel_centers=False)
    np.testing.assert_array_equal(out[0, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])


@pytest.mark.parametrize("sampling_mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_resample_matches_torch_grid_sample(sampling_mode, padding_mode, align_corners):
    """The torch frontend's mapping: zeros -> constant 0, torch's reflection -> MIL's reflection with
    align_corners and MIL's symmetric without."""
    x = randn(30, 2, 3, 5, 6)
    grid = np.random.default_rng(31).uniform(-1.6, 1.6, (2, 4, 7, 2)).astype(np.float32)
    mil_padding = {"zeros": "constant", "border": "border", "reflection": "reflection"}[padding_mode]
    if padding_mode == "reflection" and not align_corners:
        mil_padding = "symmetric"
    out = run("resample", x=x, coordinates=grid, sampling_mode=sampling_mode, padding_mode=mil_padding,
              padding_value=0.0, coordinates_mode="normalized_minus_one_to_one", align_corners=align_corners)
    expected = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=sampling_mode,
                             padding_mode=padding_mode, align_corners=align_corners)
    close(out, expected.numpy())


@pytest.mark.parametrize("padding_mode, padded", [
    ("constant", [7, 7, 7, 1, 2, 3, 7, 7, 7]),
    ("border", [1, 1, 1, 1, 2, 3, 3, 3, 3]),
    ("reflection", [2, 3, 2, 1, 2, 3, 2, 1, 2]),
    ("symmetric", [3, 2, 1, 1, 2, 3, 3, 2, 1]),
])
@pytest.mark.parametrize("align_corners", [True, False])
def test_resample_padding_modes_follow_the_mil_examples(padding_mode, padded, align_corners):
    """The MIL definition's examples: |1, 2, 3| padded by 3 each side, sampled at the unnormalized pixel
    positions -3 .. 5 (constant with padding_value 7)."""
    x = np.array([[[[1, 2, 3]]]], dtype=np.float32)
    coordinates = np.stack([np.arange(-3, 6), np.zeros(9)], axis=-1).reshape(1, 1, 9, 2).astype(np.float32)
    out = run("resample", x=x, coordinates=coordinates, sampling_mode="nearest", padding_mode=padding_mode,
              padding_value=7.0, coordinates_mode="unnormalized", align_corners=align_corners)
    np.testing.assert_array_equal(out[0, 0, 0], padded)


def test_resample_coordinate_modes_address_the_same_pixels():
    """With align_corners the corner pixels' centers are the extremes: c in [0, 1] (normalized_zero_to_one),
    c * (size - 1) (unnormalized) and 2c - 1 (torch's grid) name the same point."""
    x = randn(33, 1, 2, 4, 5)
    grid = np.random.default_rng(34).uniform(0, 1, (1, 3, 3, 2)).astype(np.float32)
    expected = F.grid_sample(torch.from_numpy(x), torch.from_numpy(2 * grid - 1), align_corners=True).numpy()
    common = dict(x=x, sampling_mode="bilinear", padding_mode="border", padding_value=0.0, align_corners=True)
    close(run("resample", coordinates=grid, coordinates_mode="normalized_zero_to_one", **common), expected)
    pixels = grid * np.array([4, 3], np.float32)  # (x, y): width 5, height 4
    close(run("resample", coordinates=pixels, coordinates_mode="unnormalized", **common), expected)


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("stride, padding, output_padding, dilation, groups", [
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 0, 2, 2), (2, 0, 0, 1, 3),
])
def test_conv_transpose_matches_torch(spatial, stride, padding, output_padding, dilation, groups):
    """Torch's padding as MIL custom pads, its output size (output_padding included) as output_shape."""
    x = randn(40, 2, 3 * groups, *[5 - spatial] * spatial)
    weight = randn(41, 3 * groups, 2, *[3] * spatial)
    bias = randn(42, 2 * groups)
    torch_conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
    expected = torch_conv(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                          padding=padding, output_padding=output_padding, groups=groups, dilation=dilation).numpy()
    out = run("conv_transpose", x=x, weight=weight, bias=bias, pad_type="custom",
              pad=np.array([padding] * 2 * spatial), output_shape=np.array(expected.shape),
              strides=np.array([stride] * spatial), dilations=np.array([dilation] * spatial), groups=groups)
    close(out, expected, atol=1e-4)


def test_conv_transpose_without_output_shape_cuts_the_pads():
    """Without output_shape: the full output less pad[2i] before and pad[2i + 1] after (here 1 and 2)."""
    x, weight = randn(43, 1, 2, 6), randn(44, 2, 3, 4)
    full = torch_of(F.conv_transpose1d, x, torch.from_numpy(weight), stride=2)
    out = run("conv_transpose", x=x, weight=weight, pad_type="custom", pad=np.array([1, 2]), strides=np.array([2]))
    close(out, full[..., 1:-2])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_rnn_matches_torch(activation, direction):
    """rnn over 5 steps from a given state: the sequence and the last state equal torch's RNN (reverse: torch
    over the time-reversed input, its outputs reversed back)."""
    torch.manual_seed(5)
    layer = torch.nn.RNN(3, 4, nonlinearity=activation).eval()
    x, h0 = randn(50, 5, 2, 3), randn(51, 2, 4)
    weights = {"weight_ih": layer.weight_ih_l0.detach().numpy(), "weight_hh": layer.weight_hh_l0.detach().numpy(),
               "bias": (layer.bias_ih_l0 + layer.bias_hh_l0).detach().numpy()}
    sequence, h = KERNELS["rnn"](x=x, initial_h=h0, direction=direction, output_sequence=True,
                                 activation=activation, **weights)
    steps = x[::-1].copy() if direction == "reverse" else x
    with torch.no_grad():
        expected, last = layer(torch.from_numpy(steps), torch.from_numpy(h0)[None])
    expected = expected.numpy()[::-1] if direction == "reverse" else expected.numpy()
    close(sequence, expected)
    close(h, last[0].numpy())


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_matches_torch_index_ops(axis):
    """scatter: update as index_copy, add as index_add (a repeated index adds twice), mul as index_reduce."""
    data = randn(60, 4, 5, 6)
    size = data.shape[axis]
    indices = np.array([size - 1, 0, -1], dtype=np.int32)  # -1 wraps to the last slice
    updates = randn(61, *(3 if i == axis % 3 else n for i, n in enumerate(data.shape)))
    wrapped = torch.from_numpy(indices.astype(np.int64) % size)
    t_data, t_updates, dim = torch.from_numpy(data), torch.from_numpy(updates), axis % 3
    close(run("scatter", data=data, indices=indices[:2], updates=np.take(updates, [0, 1], axis=axis), axis=axis,
              mode="update"),
          t_data.index_copy(dim, wrapped[:2], t_updates.index_select(dim, torch.tensor([0, 1]))).numpy())
    close(run("scatter", data=data, indices=indices, updates=updates, axis=axis, mode="add"),
          t_data.index_add(dim, wrapped, t_updates).numpy())
    close(run("scatter", data=data, indices=indices, updates=updates, axis=axis, mode="mul"),
          t_data.index_reduce(dim, wrapped, t_updates, "prod").numpy())


@pytest.mark.parametrize("mode, reduce", [("add", "sum"), ("mul", "prod"), ("max", "amax"), ("min", "amin")])
def test_scatter_along_axis_matches_torch_scatter_reduce(mode, reduce):
    data = randn(62, 3, 4)
    indices = np.random.default_rng(63).integers(0, 4, (3, 6)).astype(np.int32)
    updates = randn(64, 3, 6)
    expected = torch.from_numpy(data).scatter_reduce(1, torch.from_numpy(indices).long(), torch.from_numpy(updates),
                                                     reduce)
    close(run("scatter_along_axis", data=data, indices=indices, updates=updates, axis=1, mode=mode), expected.numpy())


def test_scatter_along_axis_update_matches_torch_scatter():
    data, updates = randn(65, 4, 3), randn(66, 2, 3)
    indices = np.array([[0, 3, 1], [2, 1, 3]], dtype=np.int32)  # distinct per column: no write order involved
    expected = torch.from_numpy(data).scatter(0, torch.from_numpy(indices).long(), torch.from_numpy(updates))
    close(run("scatter_along_axis", data=data, indices=indices, updates=updates, axis=0, mode="update"),
          expected.numpy())


def test_scatter_nd_adds_at_coordinates_like_index_put():
    data, updates = randn(67, 3, 4, 2), randn(68, 5, 2)
    indices = np.array([[0, 1], [2, 3], [0, 1], [1, 0], [-1, -1]], dtype=np.int32)
    rows, columns = (torch.from_numpy(indices[:, i].astype(np.int64) % n) for i, n in enumerate((3, 4)))
    expected = torch.from_numpy(data).index_put((rows, columns), torch.from_numpy(updates), accumulate=True)
    close(run("scatter_nd", data=data, indices=indices, updates=updates), expected.numpy())


def test_pixel_shuffle_and_unshuffle_match_torch():
    x = randn(70, 2, 18, 3, 4)
    shuffled = run("pixel_shuffle", x=x, upscale_factor=3)
    close(shuffled, torch_of(F.pixel_shuffle, x, 3))
    close(run("pixel_unshuffle", x=shuffled, downscale_factor=3), torch_of(F.pixel_unshuffle, shuffled, 3))


def test_crop_cuts_the_last_two_dims():
    x = randn(71, 2, 3, 6, 7)
    close(run("crop", x=x, crop_height=np.array([1, 2]), crop_width=np.array([0, 3])), x[..., 1:4, 0:4])


def test_prelu_and_softplus_parametric_are_per_channel():
    """Channel c on axis 1 takes alpha[c] (and beta[c]): torch's prelu, and alpha * log(1 + exp(beta * x))."""
    x = randn(72, 2, 3, 4, 5)
    alpha, beta = np.array([0.1, 0.5, 2.0], np.float32), np.array([1.0, 0.5, 3.0], np.float32)
    close(run("prelu", x=x, alpha=alpha), torch_of(F.prelu, x, torch.from_numpy(alpha)))
    a, b = (torch.from_numpy(v).reshape(1, 3, 1, 1) for v in (alpha, beta))
    close(run("softplus_parametric", x=x, alpha=alpha, beta=beta), (a * F.softplus(b * torch.from_numpy(x))).numpy())


DISTRIBUTIONS = {
    "random_uniform": ({"low": -2.0, "high": 3.0},
                       lambda v: v.min() >= -2 and v.max() < 3 and abs(v.mean() - 0.5) < 0.1),
    "random_normal": ({"mean": 1.0, "stddev": 2.0}, lambda v: abs(v.mean() - 1) < 0.1 and abs(v.std() - 2) < 0.1),
    "random_bernoulli": ({"prob": 0.25}, lambda v: set(np.unique(v)) <= {0, 1} and abs(v.mean() - 0.25) < 0.02),
}


@pytest.mark.parametrize("op", list(DISTRIBUTIONS))
def test_random_kernels_draw_from_their_distribution(op):
    """The shape asked for, the distribution's range and moments (10 000 draws); a seed repeats a draw."""
    options, check = DISTRIBUTIONS[op]
    draw = run(op, shape=np.array([100, 100]), seed=7, **options)
    assert draw.shape == (100, 100) and draw.dtype == np.float32
    assert check(draw)
    np.testing.assert_array_equal(run(op, shape=np.array([100, 100]), seed=7, **options), draw)


def test_slice_update_matches_torch_slice_scatter():
    """slice_update writes update into the slice slice_by_index takes: strided, and with a squeezed axis."""
    x, update = randn(80, 4, 6, 3), randn(81, 4, 2, 3)
    expected = torch.from_numpy(x).slice_scatter(torch.from_numpy(update), dim=1, start=1, end=5, step=2)
    close(run("slice_update", x=x, update=update, begin=np.array([0, 1, 0]), end=np.array([4, 5, 3]),
              stride=np.array([1, 2, 1])), expected.numpy())
    row = randn(82, 6, 3)
    expected = torch.from_numpy(x).select_scatter(torch.from_numpy(row), dim=0, index=2)
    close(run("slice_update", x=x, update=row, begin=np.array([2, 0, 0]), end=np.array([3, 6, 3]),
              squeeze_mask=np.array([True, False, False]), end_mask=np.array([False, True, True])), expected.numpy())
    assert not np.shares_memory(run("slice_update", x=x, update=update, begin=np.array([0, 1, 0]),
                                    end=np.array([4, 5, 3]), stride=np.array([1, 2, 1])), x)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot_matches_torch_with_the_new_axis_where_asked(axis):
    """one_hot: torch's one_hot moved to `axis`, on/off values and their dtype; an index past the size is all off."""
    indices = np.array([[0, 2, 1], [3, 3, 0]], dtype=np.int32)
    expected = np.moveaxis(F.one_hot(torch.from_numpy(indices).long(), 4).numpy(), -1, axis)
    np.testing.assert_array_equal(run("one_hot", indices=indices, one_hot_vector_size=4, axis=axis), expected)
    scaled = run("one_hot", indices=indices, one_hot_vector_size=4, axis=axis, on_value=np.float32(2.5),
                 off_value=np.float32(-1.0))
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, np.where(expected == 1, 2.5, -1.0))
    assert not run("one_hot", indices=np.array([5], dtype=np.int32), one_hot_vector_size=4).any()
