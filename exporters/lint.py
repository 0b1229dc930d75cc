"""`parakeet-coreml lint`: static Neural Engine and Core ML checks of exported packages, on any OS.

Severities say what happens on device:
- error: the package misbehaves or fails (empty transcripts from a flexible length that may be 1,
  wrapped gather indices, inf weights, tensors the runtime rejects, compute units that cannot work).
- warning: it runs, but not as intended. A tensor dimension over 16384 makes the Neural Engine
  compiler reject the model ("Tensor dimensions N1D1C1H1W240000 are not within supported range") and
  Core ML falls back to CPU/GPU, so such packages must not recommend CPU_AND_NE or ALL.
- info: worth knowing (ops that run off the Neural Engine, fp32 islands in fp16 programs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from google.protobuf.message import DecodeError

from exporters.contract import NEURAL_ENGINE_MAX_DIMENSION
from exporters.errors import UserError
from exporters.metadata import read_metadata, write_metadata

if TYPE_CHECKING:
    from coremltools.proto import MIL_pb2, Model_pb2

    from exporters.runtime.mil.program import MilPackage, ShapeRule, ValueDecoder

ERROR, WARNING, INFO = "error", "warning", "info"
DEFAULT_TARGET = "iOS17"
MAX_RANK = 5
NEURAL_ENGINE_UNITS = ("CPU_AND_NE", "ALL")
# MIL ops the Neural Engine has no kernel for: Core ML runs them on CPU (or GPU) and splits the model
# into segments, copying tensors between devices at each boundary. Extend as device compute plans show.
NO_NEURAL_ENGINE_KERNEL = {
    "lstm": "recurrent cell",
    "gru": "recurrent cell",
    "rnn": "recurrent cell",
}
GATHER_OPS = ("gather", "gather_along_axis")
# fp16 conversion may narrow gather indices; each narrow dtype reaches only this many rows.
INDEX_DTYPE_ROWS = {np.dtype(t): int(np.iinfo(t).max) + 1 for t in (np.int8, np.uint8, np.int16, np.uint16)}

RULE_DIMENSION = "ane-dimension"
RULE_FLEXIBLE = "flexible-shape"
RULE_NO_ANE_KERNEL = "ane-fallback-op"
RULE_GATHER_INDICES = "gather-index-range"
RULE_FP16_OVERFLOW = "fp16-overflow"
RULE_FP32_OPS = "fp32-in-fp16"
RULE_RANK = "rank"
RULE_SPEC_VERSION = "spec-version"
RULE_UNREADABLE = "unreadable"
RULE_COMPUTE_UNITS = "compute-units"
RULE_COMPRESSION = "compression-layout"
RULE_OP_TARGET = "op-newer-than-target"
# per_grouped_channel palettes: coremltools' palettization performance guide reports runtime slowing as
# a tensor's LUT count grows, and recommends groups of 8 or 16 channels.
MIN_PALETTE_GROUP = 8


@dataclass(frozen=True)
class Finding:
    """One problem (or fact) found in one package."""

    package: str
    severity: str  # "error" | "warning" | "info"
    rule: str
    op: str | None  # "type name" of the op concerned, None for model-level findings
    message: str
    function: str | None = None  # the function of a multifunction package it was found in

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items()
                if key != "package" and (key != "function" or value is not None)}


@dataclass(frozen=True)
class Program:
    """A package's main function flattened: every op (nested blocks too) and every variable's type."""

    package: str
    mil: MilPackage
    spec: Model_pb2.Model
    ops: tuple[MIL_pb2.Operation, ...]
    var_types: dict[str, MIL_pb2.ValueType]
    producers: dict[str, MIL_pb2.Operation]  # variable name → the op that outputs it
    values: ValueDecoder
    function: str | None = None  # set for one function of a multifunction package

    def finding(self, severity: str, rule: str, op: MIL_pb2.Operation | None, message: str) -> Finding:
        return Finding(self.package, severity, rule, describe_op(op), message, self.function)

    def constant(self, op: MIL_pb2.Operation, argument: str):
        """The value bound to an op argument: inline, or the output of a const op; None otherwise."""
        if argument not in op.inputs:
            return None
        binding = op.inputs[argument].arguments[0]
        if binding.WhichOneof("binding") == "value":
            return self.values.decode(binding.value)
        producer = self.producers.get(binding.name)
        if producer is None or producer.type != "const":
            return None
        return self.values.decode(producer.attributes["val"])

    def input_type(self, op: MIL_pb2.Operation, argument: str) -> MIL_pb2.ValueType | None:
        """The type of an op argument, bound inline or by name."""
        if argument not in op.inputs:
            return None
        binding = op.inputs[argument].arguments[0]
        return binding.value.type if binding.WhichOneof("binding") == "value" else self.var_types.get(binding.name)

    def input_var(self, op: MIL_pb2.Operation, argument: str) -> str | None:
        if argument not in op.inputs:
            return None
        binding = op.inputs[argument].arguments[0]
        return binding.name if binding.WhichOneof("binding") == "name" else None


def describe_op(op: MIL_pb2.Operation | None) -> str | None:
    from exporters.runtime.mil.program import op_name

    return None if op is None else f"{op.type} {op_name(op)}"


def walk_ops(block: MIL_pb2.Block) -> Iterator[MIL_pb2.Operation]:
    """Every op of a block, then of the blocks nested in it (cond, while_loop)."""
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from walk_ops(nested)


def read_programs(path: Path) -> list[Program]:
    """Parse a package's spec and each of its functions (coremltools is imported here: it takes seconds)."""
    import coremltools as ct

    from exporters.runtime.mil.program import function_names

    spec = ct.utils.load_spec(str(path))
    names = function_names(spec)
    return [read_program(path, spec, name if len(names) > 1 else None) for name in names]


def read_program(path: Path, spec: Model_pb2.Model, function: str | None = None) -> Program:
    """One function of a package (None: its only one) flattened."""
    from exporters.runtime.mil.program import ValueDecoder, load_package

    mil = load_package(path, function)
    ops = tuple(walk_ops(mil.main_block))
    var_types = {value.name: value.type for value in mil.main.inputs}
    var_types.update({output.name: output.type for op in ops for output in op.outputs})
    producers = {output.name: op for op in ops for output in op.outputs}
    return Program(path.name, mil, spec, ops, var_types, producers, ValueDecoder(mil.model_file), function)


def dtype_of(value_type: MIL_pb2.ValueType) -> np.dtype | None:
    from exporters.runtime.mil.program import tensor_type

    return tensor_type(value_type)[0]


def known_dims(value_type: MIL_pb2.ValueType) -> list[int]:
    """The constant dimensions of a tensor type (symbolic ones left out)."""
    if value_type.WhichOneof("type") != "tensorType":
        return []
    return [int(d.constant.size) for d in value_type.tensorType.dimensions if d.WhichOneof("dimension") == "constant"]


def rank(value_type: MIL_pb2.ValueType) -> int:
    return value_type.tensorType.rank if value_type.WhichOneof("type") == "tensorType" else 0


def largest_shapes(rule: ShapeRule) -> list[tuple[int, ...]]:
    """Every shape an input can take at its largest: default, enumerated, bounded range tops."""
    tops = [tuple(high if high >= 0 else low for low, high in rule.ranges)] if rule.ranges else []
    return [rule.default, *rule.enumerated, *tops]


def check_dimensions(program: Program) -> Iterator[Finding]:
    """Tensors with a dimension over 16384 are rejected by the Neural Engine compiler."""
    consequence = f"> {NEURAL_ENGINE_MAX_DIMENSION}: no Neural Engine, Core ML falls back to CPU/GPU"
    features = [(f"input {spec.name}", shape) for spec in program.mil.inputs
                for shape in largest_shapes(program.mil.input_rules[spec.name])]
    features += [(f"output {spec.name}", spec.shape) for spec in program.mil.outputs]
    for label, shape in features:
        if max(shape, default=0) > NEURAL_ENGINE_MAX_DIMENSION:
            yield program.finding(WARNING, RULE_DIMENSION, None, f"{label} {list(shape)} {consequence}")
    for op in program.ops:
        for output in op.outputs:
            dims = known_dims(output.type)
            if max(dims, default=0) > NEURAL_ENGINE_MAX_DIMENSION:
                yield program.finding(WARNING, RULE_DIMENSION, op, f"{output.name} {dims} {consequence}")


def flexible_lower_bounds(rule: ShapeRule) -> list[int]:
    """Smallest size of each dimension that is allowed to vary."""
    if rule.ranges:
        return [low for low, high in rule.ranges if low != high]
    columns = zip(*rule.enumerated)
    return [min(sizes) for sizes in columns if len(set(sizes)) > 1]


def check_flexible_inputs(program: Program) -> Iterator[Finding]:
    """Flexible input shapes; a flexible dimension that may be 1 has produced empty transcripts on device."""
    for name, rule in program.mil.input_rules.items():
        bounds = flexible_lower_bounds(rule)
        if not bounds:
            continue
        if 1 in bounds:
            yield program.finding(ERROR, RULE_FLEXIBLE, None,
                                  f"input {name} accepts {rule.describe()}: a flexible dimension with lower bound 1 "
                                  f"has produced empty transcripts on device; raise it or fix the shape")
        else:
            yield program.finding(INFO, RULE_FLEXIBLE, None, f"input {name} accepts {rule.describe()}")


def check_fallback_ops(program: Program) -> Iterator[Finding]:
    """Ops Core ML must run off the Neural Engine."""
    for op in program.ops:
        if op.type in NO_NEURAL_ENGINE_KERNEL:
            yield program.finding(INFO, RULE_NO_ANE_KERNEL, op,
                                  f"no Neural Engine kernel ({NO_NEURAL_ENGINE_KERNEL[op.type]}): runs on CPU/GPU, "
                                  f"splitting the model across devices")


def check_op_targets(program: Program) -> Iterator[Finding]:
    """Ops the package's declared target does not have, in coremltools' op registry: an op type that
    first exists in a later iOS, or an op whose inputs are not those of its form at the declared target
    (a later version's signature). Core ML refuses such a model on the declared OS."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    from exporters.runtime.mil.program import attribute_inputs

    declared = program.spec.specificationVersion
    for op in program.ops:
        versions = SSAOpRegistry.core_ops.get(op.type)
        if op.type == "const" or not versions:
            continue
        available = [target for target in versions if target.value <= declared]
        if not available:
            first = min(target.value for target in versions)
            yield program.finding(ERROR, RULE_OP_TARGET, op, f"{op.type} exists from {target_name(first)}; the "
                                  f"package declares {target_name(declared)}")
            continue
        spec = versions[max(available, key=lambda target: target.value)].input_spec.input_types
        given = set(op.inputs) | set(attribute_inputs(op))
        required = {name for name, kind in spec.items() if not kind.optional}
        if (unknown := sorted(given - set(spec))) or (missing := sorted(required - given)):
            what = f"takes {unknown}" if unknown else f"lacks {missing}"
            yield program.finding(ERROR, RULE_OP_TARGET, op, f"{op.type} {what}: not its {target_name(declared)} "
                                  "form (a later OS's signature)")


def check_compression(program: Program) -> Iterator[Finding]:
    """Compressed-weight layouts known to fail or slow down on the Neural Engine.

    - error: constexpr_blockwise_shift_scale over float data (what palettization with a per-channel
      scale emits): the Neural Engine's load-time lowering expects quantized integers and fails
      verification (apple/coremltools#2688, macOS 26); CPU and GPU run it.
    - warning: per-grouped-channel palettes with fewer than MIN_PALETTE_GROUP channels per LUT.
    - info: block-wise quantization (iOS18), whose documented latency gains are on the GPU.
    """
    for op in program.ops:
        if op.type == "constexpr_blockwise_shift_scale":
            data = program.input_type(op, "data")
            if data is not None and dtype_of(data) is not None and dtype_of(data).kind == "f":
                yield program.finding(ERROR, RULE_COMPRESSION, op,
                                      "block-wise scale over float data (a per-channel-scaled palette): the Neural "
                                      "Engine fails to load it (apple/coremltools#2688); fold the scale into the LUT")
            else:
                yield program.finding(INFO, RULE_COMPRESSION, op,
                                      "block-wise quantized weight: coremltools documents its latency gains on the "
                                      "GPU; check the compute plan before relying on the Neural Engine")
        elif op.type == "constexpr_lut_to_dense" and "shape" not in op.inputs and "shape" not in op.attributes:
            indices, lut = program.input_type(op, "indices"), program.input_type(op, "lut")
            if indices is None or lut is None:
                continue
            group = min((size // count for size, count in zip(known_dims(indices), known_dims(lut)) if count > 1),
                        default=None)
            if group is not None and group < MIN_PALETTE_GROUP:
                yield program.finding(WARNING, RULE_COMPRESSION, op,
                                      f"a palette per {group} channels: runtime slows as LUTs multiply (coremltools "
                                      f"recommends groups of {MIN_PALETTE_GROUP} or 16)")


def gathered_rows(program: Program, op: MIL_pb2.Operation) -> int | None:
    """Size of the axis a gather op indexes into, when static."""
    source = program.input_var(op, "x")
    dims = known_dims(program.var_types[source]) if source in program.var_types else []
    axis = program.constant(op, "axis")
    axis = 0 if axis is None else int(axis)
    if not dims or not -len(dims) <= axis < len(dims):
        return None
    return dims[axis]


# Ops that carry index values through unchanged in range (coremltools 9 wraps gather indices in
# cast → greater_equal/add → select to resolve negative ids, after any narrowing cast).
INDEX_CARRIERS = {"cast": ("x",), "select": ("a", "b"), "add": ("x", "y"), "sub": ("x", "y"),
                  "identity": ("x",), "reshape": ("x",), "squeeze": ("x",), "expand_dims": ("x",)}


def narrowest_index_dtype(program: Program, var: str, depth: int = 8):
    """The narrowest integer dtype an index value passed through on its way to `var`, if any."""
    narrowest = None
    pending, seen = [(var, 0)], set()
    while pending:
        name, level = pending.pop()
        if name in seen or name not in program.var_types:
            continue
        seen.add(name)
        dtype = dtype_of(program.var_types[name])
        if dtype in INDEX_DTYPE_ROWS and (narrowest is None or INDEX_DTYPE_ROWS[dtype] < INDEX_DTYPE_ROWS[narrowest]):
            narrowest = dtype
        producer = program.producers.get(name)
        if producer is not None and level < depth:
            for argument in INDEX_CARRIERS.get(producer.type, ()):
                source = program.input_var(producer, argument)
                if source is not None:
                    pending.append((source, level + 1))
    return narrowest


def check_gather_indices(program: Program) -> Iterator[Finding]:
    """Indices narrowed to 8/16 bits, anywhere on their way in, cannot reach every row of a larger table."""
    for op in program.ops:
        indices = program.input_var(op, "indices") if op.type in GATHER_OPS else None
        if indices is None:
            continue
        dtype = narrowest_index_dtype(program, indices)
        rows = gathered_rows(program, op)
        if dtype is not None and rows is not None and rows > INDEX_DTYPE_ROWS[dtype]:
            yield program.finding(ERROR, RULE_GATHER_INDICES, op,
                                  f"indices {indices} pass through {dtype} (rows 0..{INDEX_DTYPE_ROWS[dtype] - 1}) "
                                  f"but the gathered axis has {rows} rows: larger ids wrap or fail")


def check_fp16_constants(program: Program) -> Iterator[Finding]:
    """fp16 tops out at 65504; anything larger was stored as inf and poisons every result it touches."""
    for op in program.ops:
        if op.type != "const" or dtype_of(op.outputs[0].type) != np.float16:
            continue
        value = np.asarray(program.values.decode(op.attributes["val"]))
        overflowed = int(np.count_nonzero(np.isinf(value)))
        if overflowed:
            yield program.finding(ERROR, RULE_FP16_OVERFLOW, op,
                                  f"{overflowed} of {value.size} fp16 values are inf (|value| beyond 65504)")


def computes_in(op: MIL_pb2.Operation, dtype) -> bool:
    return any(dtype_of(output.type) == np.dtype(dtype) for output in op.outputs)


def check_fp32_ops(program: Program) -> Iterator[Finding]:
    """Count compute ops still in fp32 when the program otherwise computes in fp16."""
    compute = [op for op in program.ops if op.type not in ("const", "cast")]
    if not any(computes_in(op, np.float16) for op in compute):
        return
    fp32 = Counter(op.type for op in compute if computes_in(op, np.float32))
    if fp32:
        kinds = ", ".join(f"{kind} ×{count}" for kind, count in fp32.most_common(5))
        yield program.finding(INFO, RULE_FP32_OPS, None,
                              f"{sum(fp32.values())} of {len(compute)} compute ops stay fp32 in this fp16 program "
                              f"({kinds})")


def check_ranks(program: Program) -> Iterator[Finding]:
    """Core ML tensors are at most rank 5."""
    features = [*program.mil.inputs, *program.mil.outputs]
    for spec in features:
        if len(spec.shape) > MAX_RANK:
            yield program.finding(ERROR, RULE_RANK, None, f"{spec.name} has rank {len(spec.shape)} > {MAX_RANK}")
    for op in program.ops:
        for output in op.outputs:
            if rank(output.type) > MAX_RANK:
                yield program.finding(ERROR, RULE_RANK, op,
                                      f"{output.name} has rank {rank(output.type)} > {MAX_RANK}")


def spec_version(target: str) -> int:
    """Core ML specification version of a deployment target name (iOS17 → 8)."""
    import coremltools as ct

    try:
        return ct.target[target].value
    except KeyError:
        raise UserError(f"unknown deployment target {target!r}; choose one of "
                        f"{', '.join(t.name for t in ct.target)}") from None


def target_name(version: int) -> str:
    import coremltools as ct

    return next((t.name for t in ct.target if t.value == version), f"specification version {version}")


def check_spec_version(program: Program, target: str) -> Iterator[Finding]:
    """The package's specification version must be the deployment target's."""
    found, expected = program.spec.specificationVersion, spec_version(target)
    if found != expected:
        relation = "older than" if found < expected else "newer than"
        yield program.finding(WARNING, RULE_SPEC_VERSION, None,
                              f"specification version {found} ({target_name(found)}) is {relation} the "
                              f"{target} deployment target (version {expected})")


def lint_package(path: Path, target: str = DEFAULT_TARGET) -> list[Finding]:
    """Every finding for one .mlpackage; an unreadable package is one error finding."""
    from exporters.runtime.mil.program import WeightFileError

    path = Path(path)
    try:
        programs = read_programs(path)
        return [*check_spec_version(programs[0], target),
                *(finding for program in programs for finding in function_findings(program))]
    except (OSError, ValueError, KeyError, DecodeError, WeightFileError) as error:
        return [Finding(path.name, ERROR, RULE_UNREADABLE, None, f"cannot read package: {error}")]


def function_findings(program: Program) -> list[Finding]:
    """Every finding within one function."""
    return [*check_dimensions(program), *check_flexible_inputs(program), *check_fallback_ops(program),
            *check_gather_indices(program), *check_fp16_constants(program), *check_fp32_ops(program),
            *check_ranks(program), *check_compression(program), *check_op_targets(program)]


def package_paths(directory: Path) -> list[Path]:
    """The .mlpackage directories of an export directory; bad directories are a UserError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    paths = sorted(directory.glob("*.mlpackage"))
    if not paths:
        raise UserError(f"no .mlpackage files in {directory}")
    return paths


def lint_directory(directory: Path, target: str = DEFAULT_TARGET) -> dict[str, list[Finding]]:
    """Findings per package file name, for every .mlpackage in directory."""
    return {path.name: lint_package(path, target) for path in package_paths(directory)}


def check_compute_units(metadata: dict, findings: dict[str, list[Finding]]) -> list[Finding]:
    """Packages whose recommended compute units include the Neural Engine although lint says it rejects them."""
    inconsistent = []
    for entry in metadata["packages"].values():
        units = entry.get("recommended_compute_units")
        rejected = [f for f in findings.get(entry["file"], []) if f.rule == RULE_DIMENSION]
        if units in NEURAL_ENGINE_UNITS and rejected:
            inconsistent.append(Finding(entry["file"], ERROR, RULE_COMPUTE_UNITS, None,
                                        f"metadata recommends {units}, but the Neural Engine rejects "
                                        f"{len(rejected)} of its tensors (dimension > {NEURAL_ENGINE_MAX_DIMENSION}); "
                                        f"recommend CPU_AND_GPU"))
    return inconsistent


def record_findings(metadata: dict, findings: dict[str, list[Finding]]) -> None:
    """Store each package's findings under packages[<component>]["lint"]."""
    for entry in metadata["packages"].values():
        if entry["file"] in findings:
            entry["lint"] = [f.to_dict() for f in findings[entry["file"]]]


def lint_export(directory: Path, target: str = DEFAULT_TARGET) -> dict[str, list[Finding]]:
    """Lint every package of an export directory (compute units included) and record the findings in its
    metadata.json; bad directories and targets are a UserError."""
    metadata = read_metadata(directory)
    spec_version(target)
    findings = lint_directory(directory, target)
    for finding in check_compute_units(metadata, findings):
        findings[finding.package].append(finding)
    record_findings(metadata, findings)
    write_metadata(directory, metadata)
    return findings


def severity_counts(findings: dict[str, list[Finding]]) -> Counter:
    return Counter(f.severity for package_findings in findings.values() for f in package_findings)
