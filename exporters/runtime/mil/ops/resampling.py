"""Image resizing: upsample_nearest_neighbor, upsample_bilinear (the last two dims), resample (grid sampling)."""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F

from .linalg import _as_torch
from .registry import kernel


def _scaled_size(size: int, scale) -> int:
    """floor(size * scale): the output size MIL's upsample ops give."""
    return int(math.floor(size * float(scale)))


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """x [*D, H, W] -> [*D, floor(H * sh), floor(W * sw)]: output row i reads input row floor(i / sh), as
    torch's nearest interpolation with these scale factors."""
    (x_t,) = _as_torch(x)
    *batch, height, width = x_t.shape
    images = x_t.reshape(-1, 1, height, width)
    scales = (float(scale_factor_height), float(scale_factor_width))
    out = F.interpolate(images, scale_factor=scales, mode="nearest", recompute_scale_factor=False)
    return (out.reshape(*batch, *out.shape[-2:]).numpy(),)


def _source_positions(size: int, out_size: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """Where each output position samples the input, as MIL's upsample_bilinear defines its grid."""
    positions = np.arange(out_size, dtype=np.float64)
    if align_corners:
        spacing = (size - 1) / (out_size - 1) if out_size > 1 else 0.0
        positions = positions * spacing
    elif half_pixel_centers:
        positions = (positions + 0.5) * (size / out_size) - 0.5
    else:
        positions = positions * (size / out_size)
    return np.clip(positions, 0, size - 1)


def _linear_along(x: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """x linearly interpolated along axis at the (fractional) positions."""
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    weight = (positions - low).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim))
    return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight


@kernel("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    """x [*D, H, W] -> [*D, floor(H * sh), floor(W * sw)], bilinear; the grid spacing is recomputed from the
    sizes (MIL's definition: in / out, or (in - 1) / (out - 1) with align_corners)."""
    x = np.asarray(x)
    half_pixel = not align_corners if half_pixel_centers is None else bool(half_pixel_centers)
    for axis, scale in ((-2, scale_factor_height), (-1, scale_factor_width)):
        size = x.shape[axis]
        positions = _source_positions(size, _scaled_size(size, scale), bool(align_corners), half_pixel)
        x = _linear_along(x, axis, positions)
    return (x,)


def _pixel_positions(coordinates: np.ndarray, sizes: np.ndarray, mode: str, align_corners: bool) -> np.ndarray:
    """Coordinates (x, y) in `mode` as pixel positions (0 the first pixel's center, size - 1 the last's)."""
    if mode == "unnormalized":
        return coordinates
    if mode == "normalized_zero_to_one":
        coordinates = 2 * coordinates - 1
    elif mode != "normalized_minus_one_to_one":
        raise NotImplementedError(f"resample coordinates_mode {mode!r} is not supported")
    if align_corners:
        return (coordinates + 1) / 2 * (sizes - 1)
    return ((coordinates + 1) * sizes - 1) / 2


@kernel("resample")
def resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """x [B, C, H, W] sampled at coordinates [B, H2, W2, (x, y)]: bilinear or nearest, outside the image
    a constant, the border, or a reflection without (reflection) or with (symmetric) the edge pixel; through
    torch's grid_sample, whose reflection about the pixel centers (align_corners) is MIL's reflection and
    about the image edges MIL's symmetric."""
    sizes = np.array(np.shape(x)[:1:-1], dtype=np.float64)  # (W, H), the order of the coordinates
    pixels = _pixel_positions(np.asarray(coordinates, dtype=np.float64), sizes, coordinates_mode, bool(align_corners))
    edges = padding_mode == "symmetric"
    grid = (2 * pixels + 1) / sizes - 1 if edges else 2 * pixels / np.maximum(sizes - 1, 1) - 1
    modes = {"constant": "zeros", "border": "border", "reflection": "reflection", "symmetric": "reflection"}
    if padding_mode not in modes or sampling_mode not in ("bilinear", "nearest"):
        raise NotImplementedError(f"resample with {sampling_mode!r} sampling and {padding_mode!r} padding")
    shift = float(padding_value) if padding_mode == "constant" else 0.0
    x_t, grid_t = _as_torch(np.asarray(x) - shift, grid.astype(np.result_type(x)))
    out = F.grid_sample(x_t, grid_t, mode=sampling_mode, padding_mode=modes[padding_mode], align_corners=not edges)
    return (out.numpy() + shift,)

