"""Shape and layout ops (reshape, transpose, concat, slice, pad, non_zero, …) and tensor creation (fill, range_1d)."""

from __future__ import annotations

import math

import numpy as np

from .registry import _axes, kernel


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
    return (np.asarray(x)[slice_index(np.ndim(x), begin, end, stride, begin_mask, end_mask, squeeze_mask)],)


@kernel("slice_update")
def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """A copy of x with the slice slice_by_index would take replaced by update."""
    updated = np.array(x, copy=True)
    index = slice_index(updated.ndim, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    updated[index] = np.reshape(update, updated[index].shape)
    return (updated,)


def slice_index(rank: int, begin, end, stride, begin_mask, end_mask, squeeze_mask) -> tuple:
    """slice_by_index's inputs as a numpy index."""
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
    return tuple(index)


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


@kernel("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """[N, C * f * f, H, W] -> [N, C, H * f, W * f], as torch's PixelShuffle."""
    f = int(upscale_factor)
    n, channels, height, width = np.shape(x)
    blocks = np.reshape(x, (n, channels // (f * f), f, f, height, width))
    return (np.transpose(blocks, (0, 1, 4, 2, 5, 3)).reshape(n, channels // (f * f), height * f, width * f),)


@kernel("pixel_unshuffle")
def pixel_unshuffle(x, downscale_factor):
    """[N, C, H * f, W * f] -> [N, C * f * f, H, W], as torch's PixelUnshuffle."""
    f = int(downscale_factor)
    n, channels, height, width = np.shape(x)
    blocks = np.reshape(x, (n, channels, height // f, f, width // f, f))
    return (np.transpose(blocks, (0, 1, 3, 5, 2, 4)).reshape(n, channels * f * f, height // f, width // f),)


@kernel("crop")
def crop(x, crop_height, crop_width):
    """x [*D, H, W] without crop_height's (top, bottom) rows and crop_width's (left, right) columns."""
    (top, bottom), (left, right) = (tuple(int(c) for c in np.ravel(pair)) for pair in (crop_height, crop_width))
    height, width = np.shape(x)[-2:]
    return (np.asarray(x)[..., top:height - bottom, left:width - right],)
