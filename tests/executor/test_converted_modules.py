"""Small torch modules converted to .mlpackage, executed from disk by MilExecutor, compared with torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.proto import MIL_pb2, Model_pb2

from exporters.runtime.mil import MilExecutor, UnsupportedOpError, WeightFileError
from exporters.runtime.mil.program import BLOB_READERS, MIL_DTYPES, BlobFile, root_model_file

PRECISIONS = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}


class ConvBlock(torch.nn.Module):
    """Grouped and depthwise conv1d, layer norm over channels, SiLU."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 32, 3, padding=1, groups=2)
        self.depthwise = torch.nn.Conv1d(32, 32, 5, padding=2, groups=32)
        self.norm = torch.nn.LayerNorm(32)

    def forward(self, x):
        y = self.depthwise(self.conv(x)).transpose(1, 2)
        return torch.nn.functional.silu(self.norm(y))


class LstmBlock(torch.nn.Module):
    """Two-layer LSTM with explicit states in and out."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(12, 24, num_layers=2)

    def forward(self, x, h, c):
        out, (h_out, c_out) = self.lstm(x, (h, c))
        return out, h_out, c_out


class GatherBlock(torch.nn.Module):
    """Embedding lookup, projection, argmax; a 4-element scale small enough to be an immediate const."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(40, 64)
        self.projection = torch.nn.Linear(64, 4)
        self.scale = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 1.5]))

    def forward(self, tokens):
        logits = self.projection(self.embedding(tokens)) * self.scale
        return logits, torch.argmax(logits, dim=-1).int()


class OverflowBlock(torch.nn.Module):
    """Squares a scaled input past the fp16 range (up to ~2e5), then shrinks it back."""

    def forward(self, x):
        scaled = x * 300.0
        return (scaled * scaled) * 1e-3


def example_inputs(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if name == "conv":
        return {"x": torch.randn(1, 8, 24, generator=generator)}
    if name == "lstm":
        return {name: torch.randn(*shape, generator=generator)
                for name, shape in (("x", (7, 1, 12)), ("h", (2, 1, 24)), ("c", (2, 1, 24)))}
    if name == "gather":
        return {"tokens": torch.randint(0, 40, (1, 9), generator=generator, dtype=torch.int32)}
    return {"x": torch.rand(1, 16, generator=generator) + 0.5}


MODULES = {
    "conv": (ConvBlock, ["y"]),
    "lstm": (LstmBlock, ["out", "h_out", "c_out"]),
    "gather": (GatherBlock, ["logits", "token"]),
    "overflow": (OverflowBlock, ["y"]),
}


def convert(name: str, precision: str, path: Path) -> torch.nn.Module:
    """Trace, convert and save MODULES[name] at `precision`; return the torch module."""
    module_class, output_names = MODULES[name]
    torch.manual_seed(0)
    module = module_class().eval()
    examples = example_inputs(name)
    inputs = [
        ct.TensorType(name=key, shape=tuple(value.shape), dtype=np.int32 if value.dtype == torch.int32 else np.float32)
        for key, value in examples.items()
    ]
    model = ct.convert(
        torch.jit.trace(module, tuple(examples.values())), inputs=inputs,
        outputs=[ct.TensorType(name=output) for output in output_names], convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17, compute_precision=PRECISIONS[precision],
    )
    model.save(str(path))
    return module


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, torch.nn.Module]]:
    """Every module converted once per precision: (name, precision) -> (package path, torch module)."""
    root = tmp_path_factory.mktemp("packages")
    return {
        (name, precision): (path, convert(name, precision, path))
        for name in MODULES
        for precision in PRECISIONS
        for path in [root / f"{name}_{precision}.mlpackage"]
    }


def torch_outputs(module: torch.nn.Module, name: str, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        results = module(*inputs.values())
    results = results if isinstance(results, tuple) else (results,)
    return {output: value.numpy() for output, value in zip(MODULES[name][1], results, strict=True)}


def run_package(path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return MilExecutor(path).predict({key: value.numpy() for key, value in inputs.items()})


def copy_package(converted, name: str, tmp_path: Path) -> Path:
    source, _ = converted[(name, "fp32")]
    return Path(shutil.copytree(source, tmp_path / source.name))


def weight_file(package: Path) -> Path:
    return root_model_file(package).parent / "weights" / "weight.bin"


def program_ops(package: Path) -> list[MIL_pb2.Operation]:
    spec = Model_pb2.Model()
    spec.ParseFromString(root_model_file(package).read_bytes())
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


@pytest.mark.parametrize("name", ["conv", "lstm", "gather"])
def test_fp32_package_matches_torch(converted, name):
    """fp32 packages run from disk match torch within 1e-4, in the described output dtypes."""
    path, module = converted[(name, "fp32")]
    inputs = example_inputs(name, seed=1)
    outputs = run_package(path, inputs)
    for key, expected in torch_outputs(module, name, inputs).items():
        assert outputs[key].dtype == expected.dtype
        np.testing.assert_allclose(outputs[key], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["conv", "lstm", "gather"])
def test_fp16_package_is_finite_and_close_to_torch(converted, name):
    """fp16 packages give finite outputs within fp16-level error of torch."""
    path, module = converted[(name, "fp16")]
    inputs = example_inputs(name, seed=1)
    outputs = run_package(path, inputs)
    for key, expected in torch_outputs(module, name, inputs).items():
        if expected.dtype.kind != "f":
            continue
        got = outputs[key].astype(np.float32)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, atol=2e-2 * max(1.0, np.abs(expected).max()), rtol=0)


def test_fp16_argmax_is_taken_over_fp16_logits(converted):
    """In the fp16 gather package the argmax agrees with the fp16 logits it returns."""
    path, _ = converted[("gather", "fp16")]
    outputs = run_package(path, example_inputs("gather", seed=2))
    np.testing.assert_array_equal(outputs["token"], np.argmax(outputs["logits"], axis=-1))


def test_immediate_and_blob_consts_are_both_decoded(converted):
    """The fp16 gather package stores its 4-element scale as immediate fp16 bytes and the rest in weight.bin."""
    path, _ = converted[("gather", "fp16")]
    values = [op.attributes["val"] for op in program_ops(path) if op.type == "const"]
    kinds = {value.WhichOneof("value") for value in values if value.type.tensorType.dataType == MIL_pb2.FLOAT16}
    assert kinds == {"immediateValue", "blobFileValue"}
    assert any(value.immediateValue.tensor.WhichOneof("value") == "bytes" for value in values
               if value.WhichOneof("value") == "immediateValue")


def test_unsupported_op_is_rejected_at_construction(converted, tmp_path):
    """An op type without a kernel raises UnsupportedOpError naming the op type and op."""
    package = copy_package(converted, "conv", tmp_path)
    model_file = root_model_file(package)
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    function = spec.mlProgram.functions["main"]
    op = next(op for op in function.block_specializations[function.opset].operations if op.type == "silu")
    op.type = "mystery_op"
    model_file.write_bytes(spec.SerializeToString())
    with pytest.raises(UnsupportedOpError, match=r"'mystery_op'.*op '"):
        MilExecutor(package)


def test_missing_weight_file_raises(converted, tmp_path):
    """A missing weight.bin raises WeightFileError naming the file."""
    package = copy_package(converted, "conv", tmp_path)
    weight_file(package).unlink()
    with pytest.raises(WeightFileError, match=r"weight\.bin: weight file is missing"):
        MilExecutor(package)


def test_truncated_weight_file_raises(converted, tmp_path):
    """A truncated weight.bin raises WeightFileError saying it is truncated."""
    package = copy_package(converted, "conv", tmp_path)
    weights = weight_file(package)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightFileError, match=r"weight\.bin: truncated"):
        MilExecutor(package)


def test_mapped_weights_equal_what_coremltools_reads(converted, precision):
    """Every fp32/fp16 weight blob, read as a view of the memory-mapped weight.bin, holds exactly the values
    coremltools' own blob reader returns for it, in the const's shape."""
    path, _ = converted[("conv", precision)]
    blobs = BlobFile(weight_file(path))
    consts = [op.attributes["val"] for op in program_ops(path) if op.type == "const"]
    stored = [value for value in consts if value.WhichOneof("value") == "blobFileValue"]
    assert stored
    for value in stored:
        offset, dtype = int(value.blobFileValue.offset), value.type.tensorType.dataType
        shape = tuple(dim.constant.size for dim in value.type.tensorType.dimensions)
        mapped = blobs._mapped(offset, dtype, shape)
        assert mapped is not None and not mapped.flags.writeable
        read = np.asarray(getattr(blobs.reader, BLOB_READERS[dtype])(offset)).view(MIL_DTYPES[dtype])
        np.testing.assert_array_equal(mapped, read.reshape(shape))


def test_corrupt_blob_sentinel_raises(converted, tmp_path):
    """A blob whose metadata lacks the 0xDEADBEEF sentinel raises WeightFileError."""
    package = copy_package(converted, "conv", tmp_path)
    weights = weight_file(package)
    data = bytearray(weights.read_bytes())
    data[64:68] = b"\0\0\0\0"
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="corrupt"):
        MilExecutor(package)


def test_trace_records_every_op_output(converted):
    """trace() lists every non-const op output in program order with its max |value|, and the outputs."""
    path, _ = converted[("conv", "fp32")]
    inputs = {key: value.numpy() for key, value in example_inputs("conv").items()}
    executor = MilExecutor(path)
    trace = executor.trace(inputs)
    expected_names = [output.name for op in program_ops(path) if op.type != "const" for output in op.outputs]
    assert [entry.name for entry in trace.entries] == expected_names
    for entry in trace.entries:
        assert entry.max_abs == pytest.approx(float(np.abs(entry.value).max()))
    np.testing.assert_array_equal(trace.outputs["y"], executor.predict(inputs)["y"])
    assert trace.first_fp16_overflow() is None


def test_trace_flags_fp16_overflow_at_the_squaring_op(converted):
    """In fp16, trace shows inf first at the squaring op; in fp32 that op only exceeds 65504."""
    inputs = {key: value.numpy() for key, value in example_inputs("overflow").items()}
    fp16_trace = MilExecutor(converted[("overflow", "fp16")][0]).trace(inputs)
    overflow = fp16_trace.first_fp16_overflow()
    assert overflow is not None and overflow.op_type == "mul" and overflow.value.dtype == np.float16
    assert np.isinf(overflow.value).any()
    assert fp16_trace.first_nonfinite() is overflow
    assert all(entry.max_abs <= 65504 for entry in fp16_trace.entries[: fp16_trace.entries.index(overflow)])
    fp32_trace = MilExecutor(converted[("overflow", "fp32")][0]).trace(inputs)
    assert max(entry.max_abs for entry in fp32_trace.entries) > 65504
    assert fp32_trace.first_fp16_overflow() is None and fp32_trace.first_nonfinite() is None


def test_inputs_are_validated(converted):
    """predict rejects missing inputs and wrong shapes, and casts to the declared dtype."""
    path, module = converted[("conv", "fp32")]
    executor = MilExecutor(path)
    with pytest.raises(ValueError, match="do not match"):
        executor.predict({})
    with pytest.raises(ValueError, match="shape"):
        executor.predict({"x": np.zeros((1, 8, 25), np.float32)})
    x = example_inputs("conv")["x"]
    as_float64 = executor.predict({"x": x.numpy().astype(np.float64)})["y"]
    np.testing.assert_allclose(as_float64, torch_outputs(module, "conv", {"x": x})["y"], atol=1e-4)


@pytest.fixture(scope="module")
def control_flow_package(tmp_path_factory) -> Path:
    """A MIL program doubling x n times in a while_loop, then adding or subtracting 100 in a cond."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(2,)), mb.TensorSpec(shape=(1,), dtype=types.int32)],
                opset_version=ct.target.iOS17)
    def program(x, n):
        _, doubled = mb.while_loop(
            _cond=lambda i, acc: mb.less(x=i, y=n),
            _body=lambda i, acc: (mb.add(x=i, y=np.int32(1)), mb.mul(x=acc, y=np.float32(2.0))),
            loop_vars=(np.array([0], np.int32), x),
        )
        positive = mb.greater(x=mb.reduce_sum(x=doubled), y=np.float32(0.0))
        return mb.cond(pred=positive, _true_fn=lambda: mb.add(x=doubled, y=np.float32(100.0)),
                       _false_fn=lambda: mb.sub(x=doubled, y=np.float32(100.0)))

    path = tmp_path_factory.mktemp("control_flow") / "loop.mlpackage"
    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               compute_precision=ct.precision.FLOAT32).save(str(path))
    return path


@pytest.mark.parametrize("x, n", [([1.0, 2.0], 3), ([-1.0, -2.0], 1), ([0.5, 0.25], 0)])
def test_while_loop_and_cond_blocks(control_flow_package, x, n):
    """Nested while_loop and cond blocks run like the equivalent python."""
    executor = MilExecutor(control_flow_package)
    (output,) = executor.predict({"x": np.array(x, np.float32), "n": np.array([n], np.int32)}).values()
    doubled = np.array(x, np.float32) * 2.0**n
    np.testing.assert_array_equal(output, doubled + (100.0 if doubled.sum() > 0 else -100.0))


@pytest.fixture(scope="module")
def scalar_and_index_package(tmp_path_factory) -> Path:
    """A MIL program joining rank-0 values with concat and listing nonzero positions with non_zero."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 4)), mb.TensorSpec(shape=(2,))],
                opset_version=ct.target.iOS17)
    def program(x, pair):
        first = mb.reduce_sum(x=pair, axes=[0], keep_dims=False)  # rank 0
        second = mb.reduce_max(x=pair, axes=[0], keep_dims=False)  # rank 0
        joined = mb.concat(values=[first, second, first], axis=0, name="joined")
        indices = mb.non_zero(x=mb.greater(x=x, y=np.float32(0.0)), name="indices")
        return joined, mb.identity(x=indices, name="positions")

    path = tmp_path_factory.mktemp("scalars") / "scalars.mlpackage"
    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               compute_precision=ct.precision.FLOAT32).save(str(path))
    return path


def test_concat_of_rank0_values_and_non_zero(scalar_and_index_package):
    """concat of rank-0 values gives a vector (MIL's rule); non_zero lists indices as torch.nonzero does."""
    x = np.array([[0.5, -1.0, 0.0, 2.0], [0.0, 0.0, 3.0, -4.0], [1.0, 1.0, 0.0, 0.0]], np.float32)
    pair = np.array([1.5, -0.5], np.float32)
    outputs = MilExecutor(scalar_and_index_package).predict({"x": x, "pair": pair})
    joined, positions = outputs.values()
    np.testing.assert_array_equal(joined, [pair.sum(), pair.max(), pair.sum()])
    np.testing.assert_array_equal(positions, torch.nonzero(torch.from_numpy(x) > 0).numpy())
    assert positions.dtype == np.int32
