"""Read a saved .mlpackage from disk: model description, MIL main function, const values."""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from coremltools.proto import MIL_pb2, Model_pb2
from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

from exporters.tensors import DTYPE_NAMES, TensorSpec
from exporters.runtime.mil.ops.compression import unpack_bits

MODEL_PATH_PREFIX = "@model_path/"
# Ops whose inputs are all constants and whose output is a constant (compressed weights).
CONSTEXPR_PREFIX = "constexpr_"
_D = MIL_pb2.DataType
MIL_DTYPES = {
    _D.BOOL: np.dtype(bool),
    _D.FLOAT16: np.dtype(np.float16),
    _D.FLOAT32: np.dtype(np.float32),
    _D.FLOAT64: np.dtype(np.float64),
    _D.INT8: np.dtype(np.int8),
    _D.INT16: np.dtype(np.int16),
    _D.INT32: np.dtype(np.int32),
    _D.INT64: np.dtype(np.int64),
    _D.UINT8: np.dtype(np.uint8),
    _D.UINT16: np.dtype(np.uint16),
    _D.UINT32: np.dtype(np.uint32),
    _D.UINT64: np.dtype(np.uint64),
    # Sub-byte types (compressed weights) are held unpacked, one value per byte.
    _D.INT4: np.dtype(np.int8),
    _D.UINT1: np.dtype(np.uint8),
    _D.UINT2: np.dtype(np.uint8),
    _D.UINT3: np.dtype(np.uint8),
    _D.UINT4: np.dtype(np.uint8),
    _D.UINT6: np.dtype(np.uint8),
}
SUB_BYTE_BITS = {_D.INT4: 4, _D.UINT1: 1, _D.UINT2: 2, _D.UINT3: 3, _D.UINT4: 4, _D.UINT6: 6}
# Weight file (MILBlob storage v2) metadata: its sentinel, and the blob dtype codes of fp16 and fp32, the
# blobs read by mapping the file.
BLOB_SENTINEL = 0xDEADBEEF
MAPPED_BLOB_DTYPES = {_D.FLOAT16: 1, _D.FLOAT32: 2}
# coremltools' blob reader method per stored MIL dtype (sub-byte readers return unpacked values).
BLOB_READERS = {
    _D.FLOAT16: "read_fp16_data",
    _D.FLOAT32: "read_float_data",
    _D.UINT8: "read_uint8_data",
    _D.INT8: "read_int8_data",
    _D.INT16: "read_int16_data",
    _D.UINT16: "read_uint16_data",
    _D.INT32: "read_int32_data",
    _D.UINT32: "read_uint32_data",
    _D.INT4: "read_int4_data",
    _D.UINT1: "read_uint1_data",
    _D.UINT2: "read_uint2_data",
    _D.UINT3: "read_uint3_data",
    _D.UINT4: "read_uint4_data",
    _D.UINT6: "read_uint6_data",
}

_A = ArrayFeatureType.ArrayDataType
FEATURE_DTYPES = {
    _A.FLOAT32: np.dtype(np.float32),
    _A.FLOAT16: np.dtype(np.float16),
    _A.DOUBLE: np.dtype(np.float64),
    _A.INT32: np.dtype(np.int32),
}


class WeightFileError(Exception):
    """A weight file referenced by the program is missing or corrupt."""


class UnsupportedOpError(Exception):
    """The program contains an op type the executor has no kernel for."""


@dataclass(frozen=True)
class ShapeRule:
    """Which shapes a model input accepts (fixed, enumerated or ranged)."""

    default: tuple[int, ...]
    enumerated: tuple[tuple[int, ...], ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()

    def allows(self, shape: tuple[int, ...]) -> bool:
        """Whether `shape` is accepted by this input."""
        if self.enumerated:
            return shape in self.enumerated
        if self.ranges:
            return len(shape) == len(self.ranges) and all(
                low <= size and (high < 0 or size <= high) for size, (low, high) in zip(shape, self.ranges)
            )
        return shape == self.default

    def describe(self) -> str:
        """The accepted shapes in words."""
        if self.enumerated:
            return f"one of the shapes {list(self.enumerated)}"
        if self.ranges:
            bounds = (f"[{low}, {high if high >= 0 else 'inf'}]" for low, high in self.ranges)
            return "shapes within " + " x ".join(bounds)
        return f"shape {self.default}"


@dataclass(frozen=True)
class MilPackage:
    """The parts of a saved mlpackage the executor needs."""

    model_file: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_rules: dict[str, ShapeRule]
    main: MIL_pb2.Function

    @property
    def main_block(self) -> MIL_pb2.Block:
        """The block of `main` specialised for its opset."""
        return self.main.block_specializations[self.main.opset]


def load_package(package_path: str | Path, function: str | None = None) -> MilPackage:
    """Parse the root model spec of an mlpackage and pick one MIL function: `function` by name, else the
    default one (`main`, or a multifunction package's declared default)."""
    model_file = root_model_file(Path(package_path))
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{model_file} is not an ML program (found {spec.WhichOneof('Type')})")
    name, description = function_description(spec, function)
    return MilPackage(
        model_file=model_file,
        inputs=[_feature_spec(feature) for feature in description.input],
        outputs=[_feature_spec(feature) for feature in description.output],
        input_rules={feature.name: _shape_rule(feature) for feature in description.input},
        main=spec.mlProgram.functions[name],
    )


def function_names(spec: Model_pb2.Model) -> list[str]:
    """The functions a package offers: its declared ones, or `main` alone."""
    return [f.name for f in spec.description.functions] or ["main"]


def function_description(spec: Model_pb2.Model, function: str | None):
    """(name, description with input/output) of the chosen function of a model spec."""
    described = {f.name: f for f in spec.description.functions}
    if not described:
        if function not in (None, "main"):
            raise ValueError(f"the package has a single function (main), not {function!r}")
        return "main", spec.description
    name = function or spec.description.defaultFunctionName
    if name not in described or name not in spec.mlProgram.functions:
        raise ValueError(f"the package has no function {name!r}; it has {', '.join(described)}")
    return name, described[name]


def root_model_file(package_path: Path) -> Path:
    """Path of the root model.mlmodel named by the package manifest."""
    manifest = json.loads((package_path / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    return package_path / "Data" / root["path"]


def _feature_spec(feature) -> TensorSpec:
    array = _array_type(feature)
    return TensorSpec(feature.name, tuple(int(d) for d in array.shape), DTYPE_NAMES[FEATURE_DTYPES[array.dataType]],
                      default=optional_default(feature))


def optional_default(feature) -> float | None:
    """The value an optional multi-array input takes when left out (None for a required one)."""
    if not feature.type.isOptional:
        return None
    which = feature.type.multiArrayType.WhichOneof("defaultOptionalValue")
    if which is None:
        raise ValueError(f"optional input {feature.name!r} declares no default value")
    return getattr(feature.type.multiArrayType, which)


def _shape_rule(feature) -> ShapeRule:
    array = _array_type(feature)
    flexibility = array.WhichOneof("ShapeFlexibility")
    default = tuple(int(d) for d in array.shape)
    if flexibility == "enumeratedShapes":
        shapes = tuple(tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes)
        return ShapeRule(default, enumerated=shapes)
    if flexibility == "shapeRange":
        ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges)
        return ShapeRule(default, ranges=ranges)
    return ShapeRule(default)


def _array_type(feature) -> ArrayFeatureType:
    if feature.type.WhichOneof("Type") != "multiArrayType":
        raise ValueError(f"feature {feature.name!r} is not a multi-array ({feature.type.WhichOneof('Type')})")
    return feature.type.multiArrayType


def tensor_type(value_type: MIL_pb2.ValueType) -> tuple[np.dtype | None, tuple[int, ...] | None]:
    """Dtype and static shape of a MIL tensor type; None for non-tensors or unknown dims."""
    if value_type.WhichOneof("type") != "tensorType":
        return None, None
    tensor = value_type.tensorType
    dims = [d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tensor.dimensions]
    shape = None if None in dims else tuple(int(d) for d in dims)
    return MIL_DTYPES.get(tensor.dataType), shape


def tensor_dims(value_type: MIL_pb2.ValueType) -> tuple[int | None, ...] | None:
    """The dims of a MIL tensor type, None for each unknown one; None for non-tensors."""
    if value_type.WhichOneof("type") != "tensorType":
        return None
    return tuple(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None
                 for d in value_type.tensorType.dimensions)


def attribute_inputs(op: MIL_pb2.Operation) -> dict:
    """Inputs serialised as attributes: iOS16 constexpr ops keep their constant inputs there."""
    if not op.type.startswith(CONSTEXPR_PREFIX):
        return {}
    return {name: value for name, value in op.attributes.items() if name != "name"}


def op_name(op: MIL_pb2.Operation) -> str:
    """The op's `name` attribute, falling back to its first output name."""
    if "name" in op.attributes:
        return op.attributes["name"].immediateValue.tensor.strings.values[0]
    return op.outputs[0].name if op.outputs else op.type


# Blobs already read, by (weight file identity, offset, dtype, shape, widened): the functions of a multifunction
# package share their weights' blobs, so opening several functions (or one package twice) reads and holds each
# weight once, for as long as something holds it.
_READ_BLOBS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class BlobFile:
    """A MIL blob storage file (weight.bin) read with coremltools' own blob reader."""

    def __init__(self, path: Path):
        from coremltools.libmilstoragepython import _BlobStorageReader

        self.path = path
        if not path.is_file():
            raise WeightFileError(f"{path}: weight file is missing")
        stat = path.stat()
        self.identity = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        self.reader = _BlobStorageReader(str(path))
        self.mapped = np.memmap(path, dtype=np.uint8, mode="r") if stat.st_size else None

    def read(self, offset: int, mil_dtype: int, shape: tuple[int, ...], widen_fp16: bool = False) -> np.ndarray:
        """The array (read-only) stored by the blob whose metadata starts at `offset`; fp16 as fp32 if
        `widen_fp16`."""
        key = (self.identity, offset, mil_dtype, shape, widen_fp16)
        array = _READ_BLOBS.get(key)
        if array is None:
            array = self._read(offset, mil_dtype, shape)
            array = widened(array) if widen_fp16 else array
            array.flags.writeable = False
            _READ_BLOBS[key] = array
        return array

    def _read(self, offset: int, mil_dtype: int, shape: tuple[int, ...]) -> np.ndarray:
        mapped = self._mapped(offset, mil_dtype, shape)
        if mapped is not None:
            return mapped
        method = BLOB_READERS.get(mil_dtype)
        if method is None:
            raise WeightFileError(f"{self.path}: no blob reader for dtype {MIL_pb2.DataType.Name(mil_dtype)}")
        try:
            values = np.asarray(getattr(self.reader, method)(offset))
        except (RuntimeError, ValueError, IndexError) as error:
            problem = "truncated" if isinstance(error, (ValueError, IndexError)) else "corrupt"
            raise WeightFileError(f"{self.path}: {problem}: blob at offset {offset}: {error}") from error
        count = math.prod(shape)
        if values.size != count:
            raise WeightFileError(f"{self.path}: corrupt: blob at offset {offset} holds {values.size} values, "
                                  f"shape {shape} needs {count}")
        return values.view(MIL_DTYPES[mil_dtype]).reshape(shape)

    def _mapped(self, offset: int, mil_dtype: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """An fp32/fp16 blob as a read-only view of the memory-mapped file (no copy: coremltools' reader copies,
        2.4 GB in ~2.6 s for the full-width encoder), or None unless its metadata (MILBlob's blob_metadata:
        sentinel, dtype, size, data offset) checks out; then the reader reads it and reports what is wrong."""
        if mil_dtype not in MAPPED_BLOB_DTYPES or self.mapped is None or offset + 24 > self.mapped.size:
            return None
        sentinel, blob_dtype = self.mapped[offset:offset + 8].view(np.uint32)
        size, start = (int(value) for value in self.mapped[offset + 8:offset + 24].view(np.uint64))
        dtype = MIL_DTYPES[mil_dtype]
        if (sentinel != BLOB_SENTINEL or blob_dtype != MAPPED_BLOB_DTYPES[mil_dtype] or start % dtype.itemsize
                or size != math.prod(shape) * dtype.itemsize or start + size > self.mapped.size):
            return None
        return self.mapped[start:start + size].view(dtype).reshape(shape)


class ValueDecoder:
    """Decodes MIL `Value` protos (immediate or blob-file) into numpy values; `widen_fp16`: fp16 weights
    come as fp32 (how the executor computes)."""

    def __init__(self, model_file: Path, widen_fp16: bool = False):
        self.model_dir = model_file.parent
        self.widen_fp16 = widen_fp16
        self.blob_files: dict[str, BlobFile] = {}

    def decode(self, value: MIL_pb2.Value) -> Any:
        """Numpy array (read-only), str, or list for a tensor/list/tuple value."""
        dtype, shape = tensor_type(value.type)
        if value.WhichOneof("value") == "blobFileValue":
            blob = value.blobFileValue
            return self._blob_file(blob.fileName).read(int(blob.offset), value.type.tensorType.dataType, shape,
                                                       self.widen_fp16)
        immediate = value.immediateValue
        kind = immediate.WhichOneof("value")
        if kind == "tensor":
            array = _decode_tensor(immediate.tensor, value.type, dtype, shape)
            return widened(array) if self.widen_fp16 else array
        if kind in ("list", "tuple"):
            return [self.decode(item) for item in getattr(immediate, kind).values]
        raise ValueError(f"unsupported immediate value kind {kind!r}")

    def _blob_file(self, file_name: str) -> BlobFile:
        if file_name not in self.blob_files:
            relative = file_name.removeprefix(MODEL_PATH_PREFIX)
            self.blob_files[file_name] = BlobFile(self.model_dir / relative)
        return self.blob_files[file_name]


def widened(value: Any) -> Any:
    """An fp16 array as a read-only fp32 copy; anything else as it is. torch's cast is exact like numpy's and
    vectorised: the full-width fp16 encoder opens in ~1 s instead of ~5-7 s."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float16:
        return value
    value = torch.from_numpy(np.ascontiguousarray(value)).float().numpy()  # ops.linalg quiets the read-only warning
    value.flags.writeable = False
    return value


def _decode_tensor(tensor: MIL_pb2.TensorValue, value_type, dtype, shape) -> Any:
    field = tensor.WhichOneof("value")
    if field == "strings":
        strings = list(tensor.strings.values)
        return strings[0] if value_type.tensorType.rank == 0 else strings
    if dtype is None or shape is None:
        raise ValueError(f"immediate tensor with unsupported type {value_type}")
    if field == "bytes" and value_type.tensorType.dataType in SUB_BYTE_BITS:
        data_type = value_type.tensorType.dataType
        array = unpack_bits(np.frombuffer(tensor.bytes.values, np.uint8), SUB_BYTE_BITS[data_type],
                                math.prod(shape), signed=data_type == _D.INT4).astype(dtype)
    elif field == "bytes":
        # fp16 and 8-bit immediates are serialised as packed little-endian bytes.
        array = np.frombuffer(tensor.bytes.values, dtype=dtype)
    else:
        array = np.array(list(getattr(tensor, field).values), dtype=dtype)
    array = array.reshape(shape)
    array.flags.writeable = False
    return array

