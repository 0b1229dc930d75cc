"""The decision packages' optional inputs: token_bias (a language lock) and fusion_scores (custom vocabulary).
Left out, each changes nothing, bit for bit; token_bias costs one add."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.contract import FUSION_SCORES, TOKEN_BIAS
from exporters.example_inputs import example_inputs
from exporters.runtime.mil.program import load_package

DECISION_PACKAGES = ["joint_decision", "joint_decision_single_step"]
OPTIONAL_INPUTS = [TOKEN_BIAS, FUSION_SCORES]


@pytest.mark.parametrize("optional", OPTIONAL_INPUTS)
@pytest.mark.parametrize("name", [*DECISION_PACKAGES, "decode_step"])
def test_absent_input_equals_zeros(tiny_contract, open_package, precision, name, optional):
    """Coverage: a call without the optional input returns exactly what a call with all zeros returns."""
    inputs = example_inputs(tiny_contract[name], seed=31)
    package = open_package(name)
    without = package.predict({key: value for key, value in inputs.items() if key not in OPTIONAL_INPUTS})
    zeros = np.zeros(tiny_contract[name].input(optional).shape, np.float32)
    with_zeros = package.predict({**{k: v for k, v in inputs.items() if k not in OPTIONAL_INPUTS}, optional: zeros})
    for output in with_zeros:
        np.testing.assert_array_equal(without[output], with_zeros[output], err_msg=output)


def readers_of(operations, name: str) -> list:
    """Every op that reads `name`, and the ops reading theirs, until an op whose output is no longer [V+1]-only."""
    found, frontier = [], {name}
    for op in operations:
        arguments = {a.name for arg in op.inputs.values() for a in arg.arguments if a.WhichOneof("binding") == "name"}
        if arguments & frontier:
            found.append(op)
            if op.type == "cast":  # the fp16 copy of the input is still the bias itself
                frontier |= {output.name for output in op.outputs}
    return found


@pytest.mark.parametrize("name", DECISION_PACKAGES)
def test_bias_costs_one_add(tiny_contract, tiny_packages, precision, name):
    """Coverage: the whole cost of the lock input is one elementwise add over the V+1 token logits (after one
    cast of the [V+1] input in fp16), so a package without a lock pays only that."""
    operations = load_package(tiny_packages / tiny_contract[name].package_name).main_block.operations
    readers = readers_of(operations, TOKEN_BIAS)
    expected_types = ["add"] if precision == "fp32" else ["cast", "add"]
    assert [op.type for op in readers] == expected_types
    add = readers[-1].outputs[0].type.tensorType
    assert add.dimensions[-1].constant.size == tiny_contract.model.num_token_logits
