"""One description of a named tensor, used everywhere one is named: the contract declares every package
input and output with it, a saved package's interface is read into it, and every runtime (Core ML, the
MIL executor, the NeMo reference) takes and returns arrays by it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP32 = "fp32"
FP16 = "fp16"
INT32 = "int32"
NUMPY_DTYPES = {FP32: np.float32, FP16: np.float16, INT32: np.int32, "fp64": np.float64}
DTYPE_NAMES = {np.dtype(numpy_type): name for name, numpy_type in NUMPY_DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of an interface."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a key of NUMPY_DTYPES: "fp32" | "int32" in every contract, whatever a package declares
    description: str = ""
    max_value: int | None = None  # inclusive upper bound of an int32 input (lengths, token ids)
    default: float | None = None  # an optional input: the value every element takes when it is left out

    @property
    def optional(self) -> bool:
        return self.default is not None

    @property
    def numpy_dtype(self) -> type:
        return NUMPY_DTYPES[self.dtype]

    @property
    def interface(self) -> tuple:
        """What a package declares of it: name, shape, dtype and optional default."""
        return self.name, self.shape, self.dtype, self.default

    def to_dict(self) -> dict:
        bound = {} if self.max_value is None else {"max_value": self.max_value}
        default = {} if self.default is None else {"optional": True, "default": self.default}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "description": self.description, **bound, **default}

