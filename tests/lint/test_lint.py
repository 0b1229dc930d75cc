"""`parakeet-coreml lint`: each rule on the tiny exports and on small synthetic packages, and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters import lint
from exporters.cli import app
from exporters.metadata import read_metadata

FLAT_WAVEFORM_PACKAGE = "Preprocessor.mlpackage"  # the fluidaudio layout's: FluidAudio feeds [1, 240000]
runner = CliRunner()


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def tiny_export(request):
    """A tiny export directory, once per precision."""
    return request.getfixturevalue(f"tiny_packages_{request.param}")


@pytest.fixture(scope="module")
def tiny_findings(tiny_export):
    return lint.lint_directory(tiny_export)


@pytest.fixture(scope="module")
def fluidaudio_export(load_subject):
    return load_subject("tiny").packages("fp32", "fluidaudio")


@pytest.fixture(scope="module")
def fluidaudio_findings(fluidaudio_export):
    return lint.lint_directory(fluidaudio_export)


@pytest.fixture
def export_copy(tmp_path, tiny_packages_fp32):
    """A writable copy of the tiny fp32 export (lint writes into metadata.json)."""
    return shutil.copytree(tiny_packages_fp32, tmp_path / "export")


def rules(findings, rule, severity=None):
    return [f for f in findings if f.rule == rule and severity in (None, f.severity)]


def save_mil_program(program, path, precision="fp32"):
    """Convert a MIL builder program and save it as an iOS 17 mlpackage."""
    import coremltools as ct

    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=program.functions["main"].opset_version,
               compute_precision=compute, skip_model_load=True).save(str(path))
    return path


def test_no_package_exceeds_the_neural_engine_dimension_limit(tiny_findings, tiny_export):
    """Coverage: every package of the default layout (framed waveform), both precisions: no tensor dimension
    over 16384, and metadata recommends ALL for each."""
    assert [f for findings in tiny_findings.values() for f in rules(findings, lint.RULE_DIMENSION)] == []
    assert {entry["recommended_compute_units"] for entry in read_metadata(tiny_export)["packages"].values()} == {"ALL"}


def test_flat_waveform_input_flagged_for_dimensions(fluidaudio_findings, fluidaudio_export):
    """Coverage: the fluidaudio layout's flat [1, 240000] waveform input is flagged (only the input: the graph
    frames it at once), and its metadata recommends CPU_AND_GPU."""
    flagged = rules(fluidaudio_findings[FLAT_WAVEFORM_PACKAGE], lint.RULE_DIMENSION, lint.WARNING)
    assert [(f.op, "audio_signal [1, 240000]" in f.message) for f in flagged] == [(None, True)]
    others = {name: rules(findings, lint.RULE_DIMENSION) for name, findings in fluidaudio_findings.items()
              if name != FLAT_WAVEFORM_PACKAGE}
    assert all(found == [] for found in others.values()), others
    metadata = read_metadata(fluidaudio_export)
    assert metadata["packages"]["preprocessor"]["recommended_compute_units"] == "CPU_AND_GPU"


def test_tiny_exports_have_no_errors(tiny_findings):
    """Coverage: the tiny exports (both precisions) raise warnings and info only."""
    errors = [f for findings in tiny_findings.values() for f in findings if f.severity == lint.ERROR]
    assert errors == []


def test_decoder_lstm_falls_back(tiny_findings):
    """Coverage: the decoder's two LSTM layers are reported as ops without a Neural Engine kernel."""
    fallbacks = rules(tiny_findings["parakeet_decoder.mlpackage"], lint.RULE_NO_ANE_KERNEL, lint.INFO)
    assert [f.op.split()[0] for f in fallbacks] == ["lstm", "lstm"]


def test_fp32_front_end_reported_in_fp16_mel_encoder(tiny_packages_fp16):
    """Coverage: the fp16 mel_encoder keeps its front end in fp32, reported as a count."""
    findings = lint.lint_package(tiny_packages_fp16 / "parakeet_mel_encoder.mlpackage")
    [finding] = rules(findings, lint.RULE_FP32_OPS, lint.INFO)
    assert "compute ops stay fp32" in finding.message


def convert_flexible(path, shape):
    import coremltools as ct
    import torch

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    traced = torch.jit.trace(Double().eval(), torch.zeros(1, 8))
    ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram",
               minimum_deployment_target=ct.target.iOS17, skip_model_load=True).save(str(path))
    return path


@pytest.mark.parametrize("flexible, severity", [
    ("range from 1", lint.ERROR), ("enumerated with 1", lint.ERROR), ("range from 4", lint.INFO)])
def test_flexible_input_lower_bound(tmp_path, flexible, severity):
    """Coverage: a flexible dimension that may be 1 is an error; other flexible shapes are info."""
    import coremltools as ct

    shape = {"range from 1": ct.Shape((1, ct.RangeDim(1, 64, default=8))),
             "enumerated with 1": ct.EnumeratedShapes([(1, 1), (1, 8)]),
             "range from 4": ct.Shape((1, ct.RangeDim(4, 64, default=8)))}[flexible]
    findings = lint.lint_package(convert_flexible(tmp_path / "flexible.mlpackage", shape))
    assert [f.severity for f in rules(findings, lint.RULE_FLEXIBLE)] == [severity]


@pytest.mark.parametrize("constant, flagged", [(np.inf, True), (65504.0, False)])
def test_fp16_constant_overflow(tmp_path, constant, flagged):
    """Coverage: an fp16 constant that overflowed to inf is an error; fp16's largest finite value is not."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4), dtype=types.fp16)], opset_version=ct.target.iOS17)
    def program(x):
        return mb.add(x=x, y=np.array([[1, constant, 3, 4]], dtype=np.float16))

    findings = lint.lint_package(save_mil_program(program, tmp_path / "constant.mlpackage", "fp16"))
    assert len(rules(findings, lint.RULE_FP16_OVERFLOW, lint.ERROR)) == int(flagged)


@pytest.mark.parametrize("rows, flagged", [(40000, True), (129, False)])
def test_gather_with_int16_indices(tmp_path, rows, flagged):
    """Coverage: int16 gather indices cannot address a vocabulary over 32768 rows; a small one is fine."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2), dtype=types.int32)], opset_version=ct.target.iOS17)
    def program(ids):
        table = np.zeros((rows, 2), dtype=np.float32)
        return mb.gather(x=table, indices=mb.cast(x=ids, dtype="int16"), axis=0)

    findings = lint.lint_package(save_mil_program(program, tmp_path / "gather.mlpackage"))
    assert len(rules(findings, lint.RULE_GATHER_INDICES, lint.ERROR)) == int(flagged)


def test_older_spec_version_warned(tmp_path):
    """Coverage: a package built for iOS 16 (specification version 7) is older than the iOS 17 target."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4), dtype=types.fp32)], opset_version=ct.target.iOS16)
    def program(x):
        return mb.mul(x=x, y=2.0)

    findings = lint.lint_package(save_mil_program(program, tmp_path / "old.mlpackage"))
    [finding] = rules(findings, lint.RULE_SPEC_VERSION, lint.WARNING)
    assert "iOS16" in finding.message


def test_rank_above_five_is_an_error(tmp_path, tiny_packages_fp32):
    """Coverage: a tensor of rank 6 (coremltools refuses to build one, so the saved spec is edited)."""
    from coremltools.proto import Model_pb2

    from exporters.runtime.mil.program import root_model_file

    package = shutil.copytree(tiny_packages_fp32 / "parakeet_joint.mlpackage", tmp_path / "joint.mlpackage")
    model_file = root_model_file(package)
    spec = Model_pb2.Model.FromString(model_file.read_bytes())
    block = spec.mlProgram.functions["main"].block_specializations["CoreML7"]
    relu = next(op for op in block.operations if op.type == "relu")
    tensor = relu.outputs[0].type.tensorType
    tensor.dimensions.add().constant.size = 1
    tensor.dimensions.add().constant.size = 1
    tensor.rank = len(tensor.dimensions)
    model_file.write_bytes(spec.SerializeToString())
    [finding] = rules(lint.lint_package(package), lint.RULE_RANK, lint.ERROR)
    assert finding.op.startswith("relu")


def test_metadata_compute_units_consistent_with_lint(tiny_export, tiny_findings):
    """Coverage: exported metadata never recommends the Neural Engine for a package lint says it rejects."""
    assert lint.check_compute_units(read_metadata(tiny_export), tiny_findings) == []


def test_neural_engine_recommendation_for_flat_waveform_package_is_an_error(fluidaudio_export, fluidaudio_findings):
    """Coverage: recommending ALL for a flat-waveform preprocessor contradicts its dimension finding."""
    metadata = read_metadata(fluidaudio_export)
    metadata["packages"]["preprocessor"]["recommended_compute_units"] = "ALL"
    [finding] = lint.check_compute_units(metadata, fluidaudio_findings)
    assert (finding.package, finding.severity) == (FLAT_WAVEFORM_PACKAGE, lint.ERROR)


def test_cli_passes_tiny_export_and_records_findings(export_copy):
    """Coverage: the tiny export lints with exit 0 and every package's findings land in metadata.json."""
    result = runner.invoke(app, ["lint", "--packages", str(export_copy)])
    assert result.exit_code == 0, result.output
    assert "ane-dimension" not in result.output
    packages = json.loads((export_copy / "metadata.json").read_text())["packages"]
    assert all("lint" in entry for entry in packages.values())
    assert packages["decoder"]["lint"][0]["rule"] == lint.RULE_NO_ANE_KERNEL


def test_cli_exits_1_on_errors(fluidaudio_export, tmp_path):
    """Coverage: a compute-unit contradiction is an error: exit 1, findings still recorded."""
    export = shutil.copytree(fluidaudio_export, tmp_path / "export")
    metadata_file = export / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["packages"]["preprocessor"]["recommended_compute_units"] = "CPU_AND_NE"
    metadata_file.write_text(json.dumps(metadata))
    result = runner.invoke(app, ["lint", "--packages", str(export)])
    assert result.exit_code == 1, result.output
    recorded = json.loads(metadata_file.read_text())["packages"]["preprocessor"]["lint"]
    assert any(f["rule"] == lint.RULE_COMPUTE_UNITS for f in recorded)


@pytest.mark.parametrize("problem", ["missing directory", "no metadata.json", "unknown target"])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, export_copy, problem, one_line_error):
    """Coverage: a missing directory, a directory that is no export, or a bad target: one error line, exit 2."""
    args = {"missing directory": ["--packages", str(tmp_path / "absent")],
            "no metadata.json": ["--packages", str(tmp_path)],
            "unknown target": ["--packages", str(export_copy), "--target", "iOS99"]}[problem]
    one_line_error(runner.invoke(app, ["lint", *args]))


def compressed_linear(tmp_path, op_config, target: str):
    """A 256×64 linear layer converted for `target` and compressed by coremltools with `op_config`."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    traced = torch.jit.trace(torch.nn.Linear(64, 256).eval(), torch.zeros(1, 64))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 64))], convert_to="mlprogram",
                         minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
    family = cto.palettize_weights if isinstance(op_config, cto.OpPalettizerConfig) else cto.linear_quantize_weights
    path = tmp_path / "linear.mlpackage"
    family(mlmodel, cto.OptimizationConfig(op_config)).save(str(path))
    return path


def test_compression_layouts(tmp_path):
    """Coverage: per-channel-scaled palettes (error: the Neural Engine cannot load them), small palette groups
    (warning), block-wise int4 (info), and int8 / per-tensor palettes (no finding)."""
    import coremltools.optimize.coreml as cto

    cases = {
        "error": (cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=16,
                                         enable_per_channel_scale=True), "iOS18"),
        "warning": (cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=4), "iOS18"),
        "info": (cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32), "iOS18"),
        None: (cto.OpPalettizerConfig(nbits=6), "iOS17"),
        "none either": (cto.OpLinearQuantizerConfig(dtype="int8", granularity="per_channel"), "iOS17"),
    }
    for severity, (config, target) in cases.items():
        folder = tmp_path / str(severity).replace(" ", "-")
        folder.mkdir()
        findings = rules(lint.lint_package(compressed_linear(folder, config, target), target), lint.RULE_COMPRESSION)
        found = {f.severity for f in findings}
        if severity == lint.ERROR:  # its per-channel scale also makes one LUT per channel: a warning too
            assert found == {lint.ERROR, lint.WARNING}, findings
        else:
            assert found == ({severity} if severity in (lint.WARNING, lint.INFO) else set()), (severity, findings)


def declare_target(package, version: int) -> None:
    """Rewrite a package's declared specification version (its ops unchanged)."""
    from coremltools.proto import Model_pb2

    from exporters.runtime.mil.program import root_model_file

    model_file = root_model_file(package)
    spec = Model_pb2.Model.FromString(model_file.read_bytes())
    spec.specificationVersion = version
    model_file.write_bytes(spec.SerializeToString())


def test_ops_newer_than_the_declared_target(tmp_path, tiny_packages_fp32):
    """Coverage: an op type that first exists in iOS18 and an op in its iOS18 form, each in a package that
    declares iOS17, are errors; the same packages declaring iOS18, and every tiny package, have none."""
    import coremltools.optimize.coreml as cto

    cases = {"constexpr_blockwise_shift_scale exists from iOS18":
             cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32),
             "constexpr_lut_to_dense lacks ['shape']":
             cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=16)}
    for index, (message, config) in enumerate(cases.items()):
        folder = tmp_path / str(index)
        folder.mkdir()
        package = compressed_linear(folder, config, "iOS18")
        assert rules(lint.lint_package(package, "iOS18"), lint.RULE_OP_TARGET) == []
        declare_target(package, 8)
        findings = rules(lint.lint_package(package), lint.RULE_OP_TARGET, lint.ERROR)
        assert len(findings) == 1 and message in findings[0].message, findings
    for package in sorted(tiny_packages_fp32.glob("*.mlpackage")):
        assert rules(lint.lint_package(package), lint.RULE_OP_TARGET) == []
