"""The executor refuses programs that are not valid MIL, as Core ML refuses to load them: a RuntimeError
naming what is wrong, at load time, never a KeyError mid-run."""

from __future__ import annotations

import shutil

import pytest
from coremltools.proto import Model_pb2

from exporters.runtime.mil import InvalidProgramError, MilExecutor
from exporters.runtime.mil.program import root_model_file


@pytest.fixture
def decoder_copy(tiny_packages_fp32, tiny_contract, tmp_path):
    """A writable copy of the tiny fp32 decoder package and its parsed spec."""
    package = shutil.copytree(tiny_packages_fp32 / tiny_contract["decoder"].package_name, tmp_path / "p.mlpackage")
    spec = Model_pb2.Model()
    spec.ParseFromString(root_model_file(package).read_bytes())
    return package, spec


def save(package, spec) -> None:
    root_model_file(package).write_bytes(spec.SerializeToString())


def main_block(spec):
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset]


def first_op_reading_a_variable(block):
    return next(op for op in block.operations if op.type != "const"
                and any(a.WhichOneof("binding") == "name" for arg in op.inputs.values() for a in arg.arguments))


def test_a_valid_package_loads(decoder_copy):
    package, spec = decoder_copy
    save(package, spec)
    assert MilExecutor(package).outputs


def test_reading_an_undefined_variable(decoder_copy):
    package, spec = decoder_copy
    op = first_op_reading_a_variable(main_block(spec))
    argument = next(a for arg in op.inputs.values() for a in arg.arguments if a.WhichOneof("binding") == "name")
    argument.name = "nowhere"
    save(package, spec)
    with pytest.raises(RuntimeError, match="reads 'nowhere', which no input, const or earlier op defines"):
        MilExecutor(package)


def test_reading_a_variable_before_it_is_defined(decoder_copy):
    package, spec = decoder_copy
    block = main_block(spec)
    ops = [op for op in block.operations if op.type != "const"]
    first, later = ops[0], ops[-1]
    argument = next(a for arg in first.inputs.values() for a in arg.arguments if a.WhichOneof("binding") == "name")
    argument.name = later.outputs[0].name
    save(package, spec)
    with pytest.raises(InvalidProgramError, match=f"reads '{later.outputs[0].name}'"):
        MilExecutor(package)


def test_op_missing_a_required_input(decoder_copy):
    package, spec = decoder_copy
    op = first_op_reading_a_variable(main_block(spec))
    dropped = next(iter(op.inputs))
    del op.inputs[dropped]
    save(package, spec)
    with pytest.raises(InvalidProgramError, match=f"lacks its required input '{dropped}'"):
        MilExecutor(package)


def test_returning_an_undefined_name(decoder_copy):
    package, spec = decoder_copy
    block = main_block(spec)
    block.outputs[0] = "ghost"
    save(package, spec)
    with pytest.raises(InvalidProgramError):
        MilExecutor(package)


def test_description_and_function_disagree(decoder_copy):
    package, spec = decoder_copy
    spec.description.input[0].name = "renamed"
    save(package, spec)
    with pytest.raises(InvalidProgramError, match="declares inputs"):
        MilExecutor(package)
