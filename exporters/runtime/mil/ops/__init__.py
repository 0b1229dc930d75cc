"""Numpy kernels for MIL ops, one per op type, registered in KERNELS; one module per op family.

Each kernel takes the op's inputs by their MIL names (numpy arrays or python scalars; absent
optional inputs take the MIL default) and returns a tuple with one value per op output.
Float kernels compute in the dtype they receive; the executor feeds fp32 and rounds results.
"""

from . import (  # noqa: F401
    compression, convolution, distributions, elementwise, gather, linalg, normalization, pooling, recurrent,
    reductions, resampling, shape,
)
from .elementwise import SAME_SHAPE_OPS
from .registry import CAST_DTYPES, KERNELS, kernel

__all__ = ["CAST_DTYPES", "KERNELS", "SAME_SHAPE_OPS", "kernel"]
