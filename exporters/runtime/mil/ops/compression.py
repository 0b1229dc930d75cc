"""Compressed weights: the constexpr ops coremltools' weight compression emits.

The executor folds them once when a program loads (Core ML decompresses at load or on the fly); the
arithmetic is the ops' definition in fp32, and the executor rounds the result to the declared dtype.
"""

from __future__ import annotations

import numpy as np

from .registry import CAST_DTYPES, kernel


def _along(vector, rank: int, axis: int) -> np.ndarray:
    """A scalar or a vector laid along `axis` of a rank-`rank` tensor, for broadcasting."""
    vector = np.asarray(vector, dtype=np.float32)
    if vector.ndim == 0:
        return vector
    shape = [1] * rank
    shape[axis] = vector.size
    return vector.reshape(shape)


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """scale · (quantized_data − zero_point); scale and zero_point are scalars or vectors along axis (iOS16)."""
    data = np.asarray(quantized_data)
    axis = int(axis) % data.ndim
    return ((data.astype(np.float32) - _along(zero_point, data.ndim, axis)) * _along(scale, data.ndim, axis),)


def _blocks(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-block values [s0, s1, …] repeated to `shape` (each dim of shape a multiple of the block count)."""
    for axis, (size, count) in enumerate(zip(shape, values.shape)):
        values = np.repeat(values, size // count, axis=axis)
    return values


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """scale · (data − offset) with one scale (and offset) per block; data's dims are multiples of
    scale's, and each block is data.shape / scale.shape elements (iOS18; data may be int4/uint4)."""
    data = np.asarray(data)
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim != data.ndim or any(size % count for size, count in zip(data.shape, scale.shape)):
        raise ValueError(f"scale shape {scale.shape} does not tile data shape {data.shape}")
    values = data.astype(np.float32)
    if offset is not None:
        values = values - _blocks(np.asarray(offset, dtype=np.float32), data.shape)
    return (values * _blocks(scale, data.shape),)


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool = False) -> np.ndarray:
    """`count` nbits-wide values packed LSB first, one byte after another (two's complement if signed)."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if bits.size < nbits * count:
        raise ValueError(f"{np.size(packed)} bytes hold fewer than {count} {nbits}-bit values")
    values = bits[: nbits * count].reshape(count, nbits).astype(np.int64) @ (1 << np.arange(nbits, dtype=np.int64))
    return np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values) if signed else values


@kernel("constexpr_lut_to_dense")
def constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None):
    """Palettized weights: each value is lut[index].

    iOS16 form (`shape` given): lut [2^n] and indices packed n bits each into bytes.
    iOS18 form: indices an unpacked tensor; lut [g0, …, gk, 2^n, vector] holds one table per block
    (block = indices.shape / g) and entries of `vector` values, laid along vector_axis.
    """
    lut = np.asarray(lut)
    if shape is not None:
        shape = tuple(int(s) for s in np.ravel(shape))
        nbits = int(np.log2(lut.size))
        return (lut[unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape),)
    indices = np.asarray(indices).astype(np.int64)
    rank = indices.ndim
    groups = [(np.arange(size) // (size // count)).reshape([-1 if i == axis else 1 for i in range(rank)])
              for axis, (size, count) in enumerate(zip(indices.shape, lut.shape[:rank]))]
    entries = lut[(*groups, indices)]  # indices.shape + (vector,)
    if entries.shape[-1] == 1:
        return (entries[..., 0],)
    axis = int(vector_axis) % rank
    out_shape = list(indices.shape)
    out_shape[axis] *= entries.shape[-1]
    return (np.moveaxis(entries, -1, axis + 1).reshape(out_shape),)


@kernel("constexpr_cast")
def constexpr_cast(source, output_dtype):
    """source (fp16) stored, used as output_dtype."""
    return (np.asarray(source).astype(CAST_DTYPES[output_dtype]),)
