"""Run one function of a saved ML program (`main`, or any function of a multifunction package by name) op by
op with the numpy kernels."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from coremltools.proto import MIL_pb2
from threadpoolctl import ThreadpoolController

from exporters.runtime import with_defaults
from exporters.tensors import TensorSpec

from .ops import KERNELS, SAME_SHAPE_OPS
from .program import (
    CONSTEXPR_PREFIX,
    UnsupportedOpError,
    attribute_inputs,
    ValueDecoder,
    load_package,
    op_name,
    tensor_dims,
    tensor_type,
)

FP16 = np.dtype(np.float16)
FP16_MAX = float(np.finfo(np.float16).max)
# Up to this many elements numpy's cast is faster than a torch call (most op outputs of a decode step).
FP16_NUMPY_MAX = 512
CONTROL_FLOW_OPS = ("cond", "while_loop")
# Inputs declared as MIL TupleInputType: always passed to kernels as a list.
TUPLE_INPUTS = {("concat", "values"), ("stack", "values"), ("einsum", "values"), ("while_loop", "loop_vars")}

Ref = tuple[bool, Any]  # (is a variable name, name or constant value)


class OpExecutionError(RuntimeError):
    """A kernel failed; the message names the op."""


class InvalidProgramError(RuntimeError):
    """The saved program is not valid MIL (Core ML refuses to load such a model); the message says why."""


@dataclass(frozen=True)
class TraceEntry:
    """One op output recorded by `MilExecutor.trace`, in its declared dtype."""

    name: str
    op_type: str
    op_name: str
    value: np.ndarray
    max_abs: float

    @property
    def overflows_fp16(self) -> bool:
        """Whether this is an fp16 tensor holding inf/nan or magnitudes beyond 65504."""
        return self.value.dtype == FP16 and not self.max_abs <= FP16_MAX


@dataclass
class Trace:
    """Every op output of one run in execution order, plus the model outputs."""

    entries: list[TraceEntry] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        """The (last) value recorded under an op output name."""
        for entry in reversed(self.entries):
            if entry.name == name:
                return entry.value
        raise KeyError(name)

    def first_fp16_overflow(self) -> TraceEntry | None:
        """The first fp16 op output that overflowed (inf/nan or |x| > 65504)."""
        return next((entry for entry in self.entries if entry.overflows_fp16), None)

    def first_nonfinite(self) -> TraceEntry | None:
        """The first op output of any float dtype containing inf or nan."""
        return next((entry for entry in self.entries if not np.isfinite(entry.max_abs)), None)


@dataclass(frozen=True)
class _Step:
    op_type: str
    op_name: str
    kernel: Callable[..., tuple] | None
    const_args: dict[str, Any]
    var_args: tuple[tuple[str, str], ...]
    tuple_args: tuple[tuple[str, tuple[Ref, ...]], ...]
    outputs: tuple[tuple[str, np.dtype | None], ...]
    blocks: tuple[_Block, ...]
    release: tuple[str, ...]


@dataclass(frozen=True)
class _Block:
    inputs: tuple[str, ...]
    steps: tuple[_Step, ...]
    outputs: tuple[Ref, ...]
    free_names: frozenset[str]


class MilExecutor:
    """Executes a saved .mlpackage ML program from its files on disk, without Core ML."""

    def __init__(self, package_path: str | Path, function: str | None = None):
        self.package_path = Path(package_path)
        package = load_package(self.package_path, function)
        declared = {value.name: tensor_type(value.type) for value in package.main.inputs}  # (dtype, shape)
        _check_program(package.main_block, _default_input_dims(package))
        self.inputs: list[TensorSpec] = package.inputs
        self.outputs: list[TensorSpec] = package.outputs
        self._input_rules = package.input_rules
        self._program_input_dtypes = {name: dtype for name, (dtype, _) in declared.items()}
        self._block_output_names = list(package.main_block.outputs)
        _check_interface(package)
        compiler = _Compiler(ValueDecoder(package.model_file, widen_fp16=True))  # kernels compute fp16 in fp32
        self._block = compiler.block(package.main_block, tuple(self._program_input_dtypes))
        self.decompressed = {name: compiler.consts[name] for name in compiler.folded}
        _check_defined_before_use(self._block, frozenset())

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model outputs by name, in the dtypes of the model description."""
        return self._run(inputs, None)

    def trace(self, inputs: dict[str, np.ndarray]) -> Trace:
        """Run once, recording every op output with its max |value|."""
        trace = Trace()
        trace.outputs = self._run(inputs, trace)
        return trace

    def _run(self, inputs: dict[str, np.ndarray], trace: Trace | None) -> dict[str, np.ndarray]:
        env = self._bind_inputs(inputs)
        with np.errstate(all="ignore"), _numpy_blas().limit(limits=1):
            results = _run_block(self._block, env, trace)
        by_name = dict(zip(self._block_output_names, results))
        return {spec.name: _output_array(by_name[spec.name], spec) for spec in self.outputs}

    def _bind_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        expected = [spec.name for spec in self.inputs]
        inputs = with_defaults(inputs, self.inputs)
        if set(inputs) != set(expected):
            raise ValueError(f"inputs {sorted(inputs)} do not match the model inputs {expected}")
        env = {}
        for spec in self.inputs:
            array = np.asarray(inputs[spec.name])
            rule = self._input_rules[spec.name]
            if not rule.allows(array.shape):
                raise ValueError(f"input {spec.name!r} has shape {array.shape}, the model accepts {rule.describe()}")
            env[spec.name] = _stored(array.astype(spec.numpy_dtype), self._program_input_dtypes[spec.name])
        return env


def _output_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """A model output as Core ML returns it: in the model description's dtype, a rank-0 result as shape [1]
    (Core ML has no scalar outputs; coremltools' compare_shapes allows exactly that difference)."""
    array = np.asarray(value).astype(spec.numpy_dtype)
    return array.reshape(1) if array.ndim == 0 else array


@cache
def _numpy_blas() -> ThreadpoolController:
    """The BLAS libraries loaded outside torch (numpy's, scipy's). The heavy kernels run on torch's threads;
    numpy's BLAS does only small products (an LSTM step), and left multi-threaded its idle workers spin on the
    cores torch computes on: on 2 cores that made a small model's transcription 2x slower."""
    controller = ThreadpoolController()
    torch_dir = Path(torch.__file__).parent
    numpy_side = [info["filepath"] for info in controller.info()
                  if info["user_api"] == "blas" and torch_dir not in Path(info["filepath"]).parents]
    return controller.select(filepath=numpy_side)


def _check_program(block: MIL_pb2.Block, dims: dict[str, tuple[int | None, ...] | None]) -> None:
    """Raise for the first op (at any depth, in program order) that no kernel can run or that breaks its op's
    rules; `dims` holds the dims of the names visible here: declared, and the inputs' default sizes where they
    are not, carried through elementwise ops."""
    for op in block.operations:
        dims.update((value.name, tensor_dims(value.type)) for value in op.outputs)
        if op.type in SAME_SHAPE_OPS and op.outputs:
            dims[op.outputs[0].name] = _known(dims[op.outputs[0].name], _input_dims(op, "x", dims))
        if op.type != "const":
            _check_op(op)
        if op.type == "stack":
            _check_stack_shapes(op, dims)
        for nested in op.blocks:
            inner = {value.name: tensor_dims(value.type) for value in nested.inputs}
            _check_program(nested, {**dims, **inner})


def _input_dims(op: MIL_pb2.Operation, param: str, dims: dict) -> tuple[int | None, ...] | None:
    """The dims of the op's input `param` (a named value or an immediate), None if unknown."""
    argument = op.inputs.get(param)
    if argument is None or len(argument.arguments) != 1:
        return None
    return _binding_dims(argument.arguments[0], dims)


def _binding_dims(binding: MIL_pb2.Argument.Binding, dims: dict) -> tuple[int | None, ...] | None:
    return dims.get(binding.name) if binding.WhichOneof("binding") == "name" else tensor_dims(binding.value.type)


def _known(declared: tuple[int | None, ...] | None, other: tuple[int | None, ...] | None):
    """The declared dims with each unknown one taken from `other` (the same shape, known elsewhere)."""
    if declared is None or other is None or len(declared) != len(other):
        return declared
    return tuple(other[i] if size is None else size for i, size in enumerate(declared))


def _default_input_dims(package) -> dict[str, tuple[int | None, ...] | None]:
    """The function inputs' dims as Core ML checks a program when it loads it: a flexible dim (range or
    enumerated shapes) at the model description's default size."""
    defaults = {spec.name: spec.shape for spec in package.inputs}
    dims = {}
    for value in package.main.inputs:
        default = defaults.get(value.name)
        dims[value.name] = _known(tensor_dims(value.type), None if default is None else tuple(default))
    return dims


def _check_op(op: MIL_pb2.Operation) -> None:
    """Raise UnsupportedOpError unless a kernel exists for the op type and accepts all its inputs, and
    InvalidProgramError if the op lacks an input its type requires."""
    if op.type in CONTROL_FLOW_OPS:
        return
    if op.type not in KERNELS:
        raise UnsupportedOpError(f"op type {op.type!r} (op {op_name(op)!r}) has no kernel")
    accepted = inspect.signature(KERNELS[op.type]).parameters
    given = set(op.inputs) | set(attribute_inputs(op))
    unknown = sorted(given - set(accepted))
    if unknown:
        raise UnsupportedOpError(f"op type {op.type!r} (op {op_name(op)!r}) has unsupported inputs {unknown}")
    required = [name for name, parameter in accepted.items() if parameter.default is inspect.Parameter.empty]
    if missing := sorted(set(required) - given):
        raise InvalidProgramError(f"op {op_name(op)!r} ({op.type}) lacks its required input {missing[0]!r}")


def _check_stack_shapes(op: MIL_pb2.Operation, dims: dict[str, tuple[int | None, ...] | None]) -> None:
    """MIL's stack takes values of one shape. Core ML checks that when it loads the program, with each input at
    its default shape, whatever shapes predictions bring later: coremltools' test_stack_dynamic_range_dim expects
    a RuntimeError when a RangeDim input's default size differs from the other values'. Dims still unknown here
    (a flexible input's size through other than elementwise ops) are not compared."""
    shapes = [_binding_dims(binding, dims) for binding in op.inputs["values"].arguments]
    for first, second in combinations([shape for shape in shapes if shape is not None], 2):
        if len(first) != len(second) or any(a is not None and b is not None and a != b for a, b in zip(first, second)):
            raise InvalidProgramError(f"op {op_name(op)!r} (stack): its values have shapes {_shown(first)} and "
                                      f"{_shown(second)} (inputs at their default shapes); stack takes values of "
                                      "one shape")


def _shown(dims: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if size is None else str(size) for size in dims) + "]"


def _check_interface(package) -> None:
    """The model description's inputs are the function's, and its outputs are among the block's."""
    function_inputs = {value.name for value in package.main.inputs}
    described = {spec.name for spec in package.inputs}
    if described != function_inputs:
        raise InvalidProgramError(f"the model declares inputs {sorted(described)} but its function takes "
                                  f"{sorted(function_inputs)}")
    if missing := sorted({spec.name for spec in package.outputs} - set(package.main_block.outputs)):
        raise InvalidProgramError(f"the model declares output {missing[0]!r}, which its function does not return")


def _check_defined_before_use(block: _Block, visible: frozenset[str]) -> None:
    """Every name an op reads is an input, a const or an earlier op's output (in this block or around it),
    and every block output is defined."""
    defined = set(visible) | set(block.inputs)
    for step in block.steps:
        for nested in step.blocks:
            _check_defined_before_use(nested, frozenset(defined))
        direct = {name for _, name in step.var_args}
        direct |= {ref for _, refs in step.tuple_args for is_var, ref in refs if is_var}
        if undefined := sorted(direct - defined):
            raise InvalidProgramError(f"op {step.op_name!r} ({step.op_type}) reads {undefined[0]!r}, which no input, "
                                      "const or earlier op defines")
        defined |= {name for name, _ in step.outputs}
    if undefined := sorted({ref for is_var, ref in block.outputs if is_var} - defined):
        raise InvalidProgramError(f"the block returns {undefined[0]!r}, which nothing defines")


class _Compiler:
    """Turns MIL blocks into steps, folding every const into the steps that use it."""

    def __init__(self, decoder: ValueDecoder):
        self.decoder = decoder
        self.consts: dict[str, Any] = {}
        self.folded: list[str] = []  # outputs of constexpr ops, in program order

    def block(self, block: MIL_pb2.Block, inputs: tuple[str, ...]) -> _Block:
        """Compile a block whose inputs (function or loop variables) are named `inputs`."""
        steps = []
        for op in block.operations:
            if op.type == "const":
                self.consts[op.outputs[0].name] = _kernel_value(self.decoder.decode(op.attributes["val"]))
            elif op.type.startswith(CONSTEXPR_PREFIX):
                self._fold(self._step(op))
            else:
                steps.append(self._step(op))
        outputs = tuple(self._ref(name) for name in block.outputs)
        return _with_releases(inputs, steps, outputs)

    def _step(self, op: MIL_pb2.Operation) -> _Step:
        const_args = {param: _kernel_value(self.decoder.decode(value)) for param, value in attribute_inputs(op).items()}
        var_args, tuple_args = [], []
        for param, argument in op.inputs.items():
            refs = tuple(self._binding(binding) for binding in argument.arguments)
            if (op.type, param) in TUPLE_INPUTS:
                tuple_args.append((param, refs))
            elif refs[0][0]:
                var_args.append((param, refs[0][1]))
            else:
                const_args[param] = refs[0][1]
        blocks = tuple(self.block(nested, tuple(value.name for value in nested.inputs)) for nested in op.blocks)
        return _Step(
            op_type=op.type,
            op_name=op_name(op),
            kernel=KERNELS.get(op.type),
            const_args=const_args,
            var_args=tuple(var_args),
            tuple_args=tuple(tuple_args),
            outputs=tuple((value.name, tensor_type(value.type)[0]) for value in op.outputs),
            blocks=blocks,
            release=(),
        )

    def _fold(self, step: _Step) -> None:
        """Decompress a constexpr op's weights once, as Core ML does when it loads the model."""
        if step.var_args or step.tuple_args:
            raise InvalidProgramError(f"op {step.op_name!r} ({step.op_type}) takes a non-constant input")
        try:
            values = step.kernel(**step.const_args)
        except Exception as error:
            raise InvalidProgramError(f"op {step.op_name!r} ({step.op_type}) cannot decompress: {error}") from error
        for (name, dtype), value in zip(step.outputs, values, strict=True):
            self.consts[name] = _kernel_value(_stored(value, dtype))  # fp16: rounded, held in fp32 as consts are
            self.folded.append(name)

    def _binding(self, binding: MIL_pb2.Argument.Binding) -> Ref:
        if binding.WhichOneof("binding") == "value":
            return False, _kernel_value(self.decoder.decode(binding.value))
        return self._ref(binding.name)

    def _ref(self, name: str) -> Ref:
        return (False, self.consts[name]) if name in self.consts else (True, name)


def _kernel_value(value: Any) -> Any:
    """Const value as kernels take it: rank-0 tensors as python scalars (the decoder already widened fp16)."""
    if isinstance(value, list):
        return [_kernel_value(item) for item in value]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _step_uses(step: _Step) -> set[str]:
    names = {name for _, name in step.var_args}
    names.update(ref for _, refs in step.tuple_args for is_var, ref in refs if is_var)
    for block in step.blocks:
        names |= block.free_names
    return names


def _with_releases(inputs: tuple[str, ...], steps: list[_Step], outputs: tuple[Ref, ...]) -> _Block:
    """Attach to each step the names defined in this block that are dead after it."""
    defined = set(inputs) | {name for step in steps for name, _ in step.outputs}
    kept = {ref for is_var, ref in outputs if is_var}
    last_use: dict[str, int] = {}
    free: set[str] = {ref for is_var, ref in outputs if is_var} - defined
    for index, step in enumerate(steps):
        uses = _step_uses(step)
        free |= uses - defined
        last_use.update({name: index for name in uses & defined})
    releases: list[list[str]] = [[] for _ in steps]
    for name, index in last_use.items():
        if name not in kept:
            releases[index].append(name)
    steps = tuple(replace(step, release=tuple(names)) for step, names in zip(steps, releases))
    return _Block(inputs=inputs, steps=steps, outputs=outputs, free_names=frozenset(free))


def _stored(value: Any, dtype: np.dtype | None) -> Any:
    """An op result in its declared dtype; fp16 is rounded to fp16 but kept in an fp32 array."""
    if dtype is None:
        return value
    if dtype == FP16:
        return _round_to_fp16(value)
    return np.asarray(value).astype(dtype, copy=False)


def _round_to_fp16(value: Any) -> np.ndarray:
    """value rounded to fp16 precision, held in a C-contiguous fp32 array."""
    array = np.asarray(value)
    if array.dtype != np.float32 or not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, dtype=np.float32)
    # In place is safe: kernels return an existing array only from dtype-preserving ops, whose fp16
    # inputs are already fp16-exact. torch's cast is vectorised (numpy 1.x's is not) but costs a call.
    if array.size <= FP16_NUMPY_MAX:
        np.copyto(array, array.astype(FP16))
    else:
        flat = torch.from_numpy(array.reshape(-1))
        flat.copy_(flat.half())
    return array


def _run_block(block: _Block, env: dict[str, Any], trace: Trace | None) -> list[Any]:
    for step in block.steps:
        kwargs = dict(step.const_args)
        for param, name in step.var_args:
            kwargs[param] = env[name]
        for param, refs in step.tuple_args:
            kwargs[param] = [env[ref] if is_var else ref for is_var, ref in refs]
        try:
            results = step.kernel(**kwargs) if step.kernel else _CONTROL_FLOW[step.op_type](step, kwargs, env, trace)
            for (name, dtype), value in zip(step.outputs, results, strict=True):
                env[name] = _stored(value, dtype)
        except OpExecutionError:
            raise
        except Exception as error:
            raise OpExecutionError(f"op {step.op_name!r} ({step.op_type}) failed: {error}") from error
        if trace is not None:
            _record(trace, step, env)
        for name in step.release:
            del env[name]
    return [env[ref] if is_var else ref for is_var, ref in block.outputs]


def _record(trace: Trace, step: _Step, env: dict[str, Any]) -> None:
    for name, dtype in step.outputs:
        value = np.asarray(env[name])
        if dtype == FP16:
            value = value.astype(FP16)
        max_abs = float(np.max(np.abs(value), initial=0)) if value.dtype.kind in "fiub" else float("nan")
        trace.entries.append(TraceEntry(name, step.op_type, step.op_name, value, max_abs))


def _run_cond(step: _Step, kwargs: dict[str, Any], env: dict[str, Any], trace: Trace | None) -> list[Any]:
    true_block, false_block = step.blocks
    return _run_block(true_block if bool(np.asarray(kwargs["pred"])) else false_block, env, trace)


def _run_while_loop(step: _Step, kwargs: dict[str, Any], env: dict[str, Any], trace: Trace | None) -> list[Any]:
    cond_block, body_block = step.blocks
    values = kwargs["loop_vars"]
    while True:
        env.update(zip(cond_block.inputs, values))
        (keep_going,) = _run_block(cond_block, env, trace)
        if not bool(np.asarray(keep_going)):
            return values
        env.update(zip(body_block.inputs, values))
        values = _run_block(body_block, env, trace)


_CONTROL_FLOW = {"cond": _run_cond, "while_loop": _run_while_loop}
