"""Compressed weights in the executor: each constexpr kernel bit for bit against coremltools' own
decompression, and every compression variant's package run end to end.

Kernels: random compressed data through our kernel and through the coremltools op's `decompress`,
rounded to the op's output dtype, compared as bits. Packages: a small linear + conv model exported and
compressed by `exporters.compression` (as `convert --compress` does), loaded from disk by the executor
and by coremltools' milproto loader; each constexpr op's folded value equals coremltools'
`materialized_val_inference` for that op, and the package's output equals torch on those weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
from coremltools.optimize import _utils as optimize_utils

from exporters.compression import VARIANTS, CompressionSettings, compress, weight_names
from exporters.runtime.mil import KERNELS, InvalidProgramError, MilExecutor

FP_DTYPES = [np.float16, np.float32]


def bits(array: np.ndarray, dtype) -> np.ndarray:
    """The array rounded to dtype, viewed as unsigned integers (bitwise comparison, NaN-safe)."""
    rounded = np.asarray(array).astype(dtype)
    return rounded.view(np.uint16 if rounded.dtype == np.float16 else np.uint32)


def assert_bit_exact(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(bits(ours, theirs.dtype), bits(theirs, theirs.dtype))


@pytest.mark.parametrize("dtype", FP_DTYPES)
@pytest.mark.parametrize("data_type, per_axis, axis", [(np.int8, True, 0), (np.uint8, True, 1),
                                                       (np.int8, False, 0), (np.uint8, True, -1)])
def test_affine_dequantize_matches_coremltools(dtype, data_type, per_axis, axis):
    rng = np.random.default_rng(0)
    info = np.iinfo(data_type)
    data = rng.integers(info.min, info.max + 1, (6, 5, 4), dtype=data_type)
    size = data.shape[axis] if per_axis else 1
    scale = rng.uniform(1e-3, 1e-1, size).astype(dtype)
    zero_point = rng.integers(info.min, info.max + 1, size, dtype=data_type)
    if not per_axis:
        scale, zero_point = scale[0], zero_point[0]
    (ours,) = KERNELS["constexpr_affine_dequantize"](data, zero_point, scale, axis)
    assert_bit_exact(ours, ios16.constexpr_affine_dequantize.decompress(data, zero_point, scale, axis))


@pytest.mark.parametrize("dtype", FP_DTYPES)
@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_ios16_lut_to_dense_matches_coremltools(dtype, nbits):
    rng = np.random.default_rng(nbits)
    shape = (7, 9)  # 63 elements: packed indices end mid-byte for every nbits but 8
    indices = rng.integers(0, 2 ** nbits, int(np.prod(shape)), dtype=np.uint8)
    packed = optimize_utils.pack_elements_into_bits(indices, nbits)
    lut = rng.standard_normal(2 ** nbits).astype(dtype)
    (ours,) = KERNELS["constexpr_lut_to_dense"](packed, lut, shape=np.array(shape, np.uint32))
    assert_bit_exact(ours, ios16.constexpr_lut_to_dense.decompress(lut, packed, np.array(shape)))


@pytest.mark.parametrize("dtype", FP_DTYPES)
@pytest.mark.parametrize("groups, vector, vector_axis", [((1, 1), 1, None), ((3, 1), 1, None),
                                                         ((1, 2), 1, None), ((2, 1), 2, 0), ((1, 1), 4, 1)])
def test_ios18_lut_to_dense_matches_coremltools(dtype, groups, vector, vector_axis):
    """Per-block tables (groups of rows or columns) and vector palettization along an axis."""
    rng = np.random.default_rng(vector)
    nbits = 3
    indices = rng.integers(0, 2 ** nbits, (6, 4), dtype=np.uint8)
    lut = rng.standard_normal((*groups, 2 ** nbits, vector)).astype(dtype)
    (ours,) = KERNELS["constexpr_lut_to_dense"](indices, lut, vector_axis=vector_axis)
    assert_bit_exact(ours, ios18.constexpr_lut_to_dense.decompress(indices, lut, vector_axis))


@pytest.mark.parametrize("dtype", FP_DTYPES)
@pytest.mark.parametrize("data_range, scale_shape, with_offset", [((-8, 8), (4, 2), False), ((-8, 8), (4, 2), True),
                                                                  ((0, 16), (1, 4), True), ((-128, 128), (4, 1), True)])
def test_blockwise_shift_scale_matches_coremltools(dtype, data_range, scale_shape, with_offset):
    """int4/uint4/int8 data, blocks along either axis, with and without an (integer) offset."""
    rng = np.random.default_rng(1)
    data = rng.integers(*data_range, (4, 64)).astype(np.int8 if data_range[0] < 0 else np.uint8)
    scale = rng.uniform(1e-3, 1e-1, scale_shape).astype(dtype)
    offset = rng.integers(*data_range, scale_shape).astype(data.dtype) if with_offset else None
    (ours,) = KERNELS["constexpr_blockwise_shift_scale"](data, scale, offset)
    assert_bit_exact(ours, ios18.constexpr_blockwise_shift_scale.decompress(data, scale, offset))


def test_constexpr_cast_widens_fp16():
    source = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float16)
    (ours,) = KERNELS["constexpr_cast"](source, output_dtype="fp32")
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, source.astype(np.float32))


class LinearConv(torch.nn.Module):
    """A layer of each kind compression touches, plus a front-end-like unnamed constant it must not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(64, 96)
        self.conv = torch.nn.Conv1d(96, 64, kernel_size=3, padding=1)

    def forward(self, x):
        basis = torch.linspace(-1, 1, 64 * 64).reshape(64, 64, 1)  # an unnamed constant (a DFT basis' role)
        y = self.conv(self.linear(x).transpose(1, 2))
        return torch.nn.functional.conv1d(y, basis)


def export_small(tmp_path_factory, precision: str, variant: str):
    import coremltools as ct

    traced = torch.jit.trace(LinearConv().eval(), torch.zeros(1, 10, 64))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 10, 64))], convert_to="mlprogram",
                         minimum_deployment_target=getattr(ct.target, VARIANTS[variant].minimum_target),
                         compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                         skip_model_load=True)
    path = tmp_path_factory.mktemp(f"{variant}-{precision}") / "small.mlpackage"
    compress(mlmodel, CompressionSettings(variant, ("small",))).save(str(path))
    return path


COMPRESSED = [name for name in VARIANTS if name not in ("none", "mixed")]


def coremltools_decompressed(path) -> dict[str, np.ndarray]:
    """Each constexpr op's value as coremltools itself decompresses it, from the saved package."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load(spec, spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)
    return {op.outputs[0].name: op.materialized_val_inference() for op in program.functions["main"].operations
            if op.op_type.startswith("constexpr_")}


@pytest.mark.parametrize("variant", COMPRESSED)
def test_compressed_package_weights_equal_coremltools_decompression(tmp_path_factory, precision, variant):
    path = export_small(tmp_path_factory, precision, variant)
    executor = MilExecutor(path)
    theirs = coremltools_decompressed(path)
    assert len(theirs) == 2, f"expected the linear and conv weights compressed, got {sorted(theirs)}"
    assert sorted(executor.decompressed) == sorted(theirs)
    for name, value in theirs.items():
        assert_bit_exact(executor.decompressed[name], value)


@pytest.mark.parametrize("variant", COMPRESSED)
def test_compressed_package_runs_like_torch_on_its_weights(tmp_path_factory, variant):
    """fp32 package output = the torch module with the decompressed weights (the unnamed constant intact)."""
    path = export_small(tmp_path_factory, "fp32", variant)
    executor = MilExecutor(path)
    module = LinearConv().eval()
    weights = {name: torch.from_numpy(np.asarray(value, np.float32)) for name, value in executor.decompressed.items()}
    module.linear.weight.data = next(w for name, w in weights.items() if "linear" in name)
    module.conv.weight.data = next(w for name, w in weights.items() if "conv" in name)
    x = np.random.default_rng(3).standard_normal((1, 10, 64)).astype(np.float32)
    (output,) = executor.predict({"x": x}).values()
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)


def test_weight_selection_leaves_unnamed_constants_alone(tmp_path_factory):
    import coremltools as ct

    path = export_small(tmp_path_factory, "fp32", "int8")
    names = weight_names(ct.models.MLModel(str(path), skip_model_load=True))
    assert names == [], "a compressed program has no plain layer weights left"
    uncompressed = export_small(tmp_path_factory, "fp32", "none")
    names = weight_names(ct.models.MLModel(str(uncompressed), skip_model_load=True))
    assert len(names) == 2 and all("weight" in name for name in names), names


def test_constexpr_with_a_variable_input_is_invalid(tmp_path_factory):
    """A constexpr op must read constants only; Core ML refuses such a program, and so does the executor."""
    from coremltools.proto import Model_pb2

    from exporters.runtime.mil.program import root_model_file

    path = export_small(tmp_path_factory, "fp32", "int8")
    model_file = root_model_file(path)
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    block = spec.mlProgram.functions["main"].block_specializations[spec.mlProgram.functions["main"].opset]
    op = next(op for op in block.operations if op.type == "constexpr_affine_dequantize")
    op.inputs["scale"].arguments.add().name = "x"
    model_file.write_bytes(spec.SerializeToString())
    with pytest.raises(InvalidProgramError, match="non-constant input"):
        MilExecutor(path)
