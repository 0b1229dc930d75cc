"""Indexing and ordering: gather, gather_nd, gather_along_axis, one_hot, the scatter ops, argsort, topk, cumsum."""

from __future__ import annotations

import numpy as np

from .registry import CAST_DTYPES, kernel


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


@kernel("gather_nd")
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    """x at the coordinates in indices' last axis (K of them: the first K axes after batch_dims; negative
    coordinates wrap): shape indices.shape[:-1] + x.shape[batch_dims + K:]."""
    batch_dims = int(batch_dims)
    x, indices = np.asarray(x), np.asarray(indices, dtype=np.int64)
    depth = indices.shape[-1]
    if batch_dims == 0:  # one flat take: several times faster than indexing with K coordinate arrays
        flat = np.ravel_multi_index(tuple(np.moveaxis(indices, -1, 0)), x.shape[:depth], mode="wrap")
        return (np.take(x.reshape((-1,) + x.shape[depth:]), flat, axis=0),)
    coordinates = tuple(np.moveaxis(indices % np.array(x.shape[batch_dims:batch_dims + depth]), -1, 0))
    batch = tuple(np.arange(size).reshape((-1,) + (1,) * (indices.ndim - 2 - axis))
                  for axis, size in enumerate(x.shape[:batch_dims]))
    return (x[batch + coordinates],)


@kernel("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    """A new axis of one_hot_vector_size at `axis`: on_value where it equals the index, off_value elsewhere
    (an index outside [0, size) gives no on_value); the output has on_value's dtype."""
    indices = np.asarray(indices, dtype=np.int64)
    axis = int(axis) % (indices.ndim + 1)
    positions = np.arange(int(one_hot_vector_size)).reshape((-1,) + (1,) * (indices.ndim - axis))
    hit = np.expand_dims(indices, axis) == positions
    return (np.where(hit, on_value, off_value).astype(np.asarray(on_value).dtype),)


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


def _first_of_sort_order(x, k: int, axis: int, ascending: bool) -> np.ndarray:
    """The first k indices of `_sort_order` along axis. A partition finds the k candidates and only they are
    sorted; where the k-th value has ties beyond the first k (or a NaN), the full stable sort decides."""
    keys = np.moveaxis(np.asarray(x) if ascending else -np.asarray(x), axis, -1)
    if k < keys.shape[-1]:
        candidates = np.sort(np.argpartition(keys, k - 1, axis=-1)[..., :k], axis=-1)  # in index order
        values = np.take_along_axis(keys, candidates, axis=-1)
        if np.all(np.sum(keys <= values.max(axis=-1, keepdims=True), axis=-1) == k):
            order = np.take_along_axis(candidates, np.argsort(values, axis=-1, kind="stable"), axis=-1)
            return np.moveaxis(order, -1, axis)
    return np.take(_sort_order(x, axis, ascending), np.arange(k), axis=axis)


@kernel("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """The k largest (or smallest) values along axis and their indices (ties: the lower index first)."""
    order = _first_of_sort_order(x, int(k), int(axis), ascending)
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


_SCATTER_MODES = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
                  "min": np.minimum}


def _scattered(data, where: tuple, updates, mode: str) -> np.ndarray:
    """A copy of data with updates written at the index arrays `where` (update: the last write to a position
    wins) or combined into it by `mode` (repeated positions combine each update in turn)."""
    out = np.array(data, copy=True)
    if mode == "update":
        out[where] = updates
    elif mode in _SCATTER_MODES:
        _SCATTER_MODES[mode].at(out, where, np.asarray(updates, dtype=out.dtype))
    else:
        raise NotImplementedError(f"scatter mode {mode!r} is not supported")
    return out


@kernel("scatter")
def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """data with its slices at indices [C] along axis set to (or combined with) updates' C slices."""
    axis = int(axis) % np.ndim(data)
    moved = np.moveaxis(np.asarray(data), axis, 0)
    rows = np.asarray(indices, dtype=np.int64) % moved.shape[0]
    out = _scattered(moved, (rows,), np.moveaxis(np.asarray(updates), axis, 0), mode)
    return (np.moveaxis(out, 0, axis),)


@kernel("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """data with updates written along axis at indices (both updates' shape), as torch's scatter."""
    axis = int(axis) % np.ndim(data)
    where = list(np.indices(np.shape(indices), sparse=True))
    where[axis] = np.asarray(indices, dtype=np.int64) % np.shape(data)[axis]
    return (_scattered(data, tuple(where), updates, mode),)


@kernel("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    """data with updates written at the coordinates in indices' last axis (the first K axes of data)."""
    indices = np.asarray(indices, dtype=np.int64)
    depth = indices.shape[-1]
    where = tuple(np.moveaxis(indices % np.array(np.shape(data)[:depth]), -1, 0))
    return (_scattered(data, where, updates, mode),)
