"""One multifunction package from single-function packages (one per window), written one weight at a time.

coremltools' `save_multifunction` loads every function's program with all its weights, then deduplicates and
re-serializes them: for the four windows of the full-width encoder that is four copies of 2.4 GB at once
(a 13 GB process). The functions' programs need no change to be merged, only their weights' places: each
function's proto is copied as converted, and each weight blob is read from its package with coremltools' blob
reader and written once into the merged weight file with its blob writer (a blob equal to one already written
is shared: the windows' functions hold the same weights). One blob is in memory at a time.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from coremltools.proto import MIL_pb2, Model_pb2

WEIGHT_FILE = "weight.bin"
BLOB_FILE_NAME = f"@model_path/weights/{WEIGHT_FILE}"
MULTIFUNCTION_SPEC_VERSION = 9  # iOS18: the first specification with several functions
_D = MIL_pb2.DataType
# The blob storage's read_<kind>_data and write_<kind>_data per MIL dtype (the reader gives what the writer takes).
BLOB_KINDS = {_D.FLOAT16: "fp16", _D.FLOAT32: "float", _D.UINT8: "uint8", _D.INT8: "int8", _D.INT16: "int16",
              _D.UINT16: "uint16", _D.INT32: "int32", _D.UINT32: "uint32", _D.INT4: "int4", _D.UINT1: "uint1",
              _D.UINT2: "uint2", _D.UINT3: "uint3", _D.UINT4: "uint4", _D.UINT6: "uint6"}


def blob_values(block: MIL_pb2.Block) -> Iterator[MIL_pb2.Value]:
    """Every Value of a block (and its nested blocks) that lives in a weight file."""
    for op in block.operations:
        values = [*op.attributes.values(),
                  *(argument.value for each in op.inputs.values() for argument in each.arguments
                    if argument.WhichOneof("binding") == "value")]
        yield from (value for value in values if value.WhichOneof("value") == "blobFileValue")
        for nested in op.blocks:
            yield from blob_values(nested)


def function_description(spec: Model_pb2.Model, name: str) -> Model_pb2.FunctionDescription:
    """A single-function model's interface, as the description of the function `name`."""
    described = spec.description
    return Model_pb2.FunctionDescription(name=name, input=described.input, output=described.output,
                                         state=described.state, predictedFeatureName=described.predictedFeatureName,
                                         predictedProbabilitiesName=described.predictedProbabilitiesName)


class WeightMerger:
    """Copies blobs from the functions' weight files into one, each distinct blob once."""

    def __init__(self, path: Path):
        from coremltools.libmilstoragepython import _BlobStorageWriter

        self.writer = _BlobStorageWriter(str(path), truncate_file=True)
        self.written: dict[tuple[int, str], int] = {}

    def relocate(self, value: MIL_pb2.Value, source) -> None:
        """Point `value` at its blob's place in the merged file (writing the blob if it is new)."""
        dtype = value.type.tensorType.dataType
        kind = BLOB_KINDS.get(dtype)
        if kind is None:
            raise ValueError(f"no blob reader for weights of dtype {MIL_pb2.DataType.Name(dtype)}")
        data = np.ascontiguousarray(getattr(source, f"read_{kind}_data")(int(value.blobFileValue.offset)))
        key = (dtype, hashlib.sha256(data.tobytes()).hexdigest())
        if key not in self.written:
            self.written[key] = getattr(self.writer, f"write_{kind}_data")(data.ravel())
        value.blobFileValue.fileName = BLOB_FILE_NAME
        value.blobFileValue.offset = self.written[key]


def merge_functions(sources: dict[str, Path], default: str, destination: Path) -> None:
    """Write `destination` (.mlpackage): one function per single-function package of `sources` (function name
    -> package), `default` the default function; metadata from the first package."""
    import coremltools as ct
    from coremltools.libmilstoragepython import _BlobStorageReader
    from coremltools.models.utils import _create_mlpackage, _try_get_weights_dir_path

    specs = {name: ct.utils.load_spec(str(path)) for name, path in sources.items()}
    first = next(iter(specs.values()))
    merged = Model_pb2.Model(specificationVersion=max(MULTIFUNCTION_SPEC_VERSION,
                                                      *(s.specificationVersion for s in specs.values())))
    merged.description.metadata.CopyFrom(first.description.metadata)
    merged.description.defaultFunctionName = default
    merged.mlProgram.version = first.mlProgram.version
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".merge-") as scratch:
        weights = Path(scratch) / "weights"
        weights.mkdir()
        merger = WeightMerger(weights / WEIGHT_FILE)
        for name, spec in specs.items():
            function = spec.mlProgram.functions["main"]
            reader = _BlobStorageReader(str(Path(_try_get_weights_dir_path(str(sources[name]))) / WEIGHT_FILE))
            for block in function.block_specializations.values():
                for value in blob_values(block):
                    merger.relocate(value, reader)
            merged.mlProgram.functions[name].CopyFrom(function)
            merged.description.functions.append(function_description(spec, name))
        del merger  # the writer finishes its file when it is released
        _create_mlpackage(merged, str(weights), str(destination))
