"""The executor runs any function of a multifunction package, chosen by name."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.example_inputs import example_inputs
from exporters.reference import wrapper_runtime
from exporters.runtime.mil import MilExecutor

WRAPPER_ATOL = 1e-4  # as for single-function packages (test_exported_packages.py)


@pytest.fixture(scope="session")
def tiny_windows(load_subject):
    return load_subject("tiny").window_contract()


@pytest.mark.parametrize("name", ["preprocessor", "encoder", "joint_decision"])
def test_each_function_matches_its_windows_wrapper(load_subject, tiny_windows, name):
    """Coverage: every function of a tiny fp32 windowed package, selected by name, computes what the torch
    wrapper traced for that window computes (atol 1e-4), in that window's shapes."""
    packages = load_subject("tiny").windowed("fp32")
    for window in tiny_windows.window_contracts():
        executor = MilExecutor(packages / window[name].package_name, window.function_name)
        inputs = example_inputs(window[name], seed=23)
        expected = wrapper_runtime(load_subject("tiny").model, window, name).predict(inputs)
        actual = executor.predict(inputs)
        for output, value in expected.items():
            assert actual[output].shape == value.shape == window[name].output(output).shape
            np.testing.assert_allclose(actual[output], value, rtol=0, atol=WRAPPER_ATOL,
                                       err_msg=f"{window.function_name} {name}.{output}")


def test_default_function_and_unknown_names(load_subject, tiny_windows):
    """Coverage: no name runs the package's default function (the largest window); an unknown name, or a
    name other than main for a single-function package, is refused naming what exists."""
    tiny = load_subject("tiny")
    encoder = tiny.windowed("fp32") / tiny_windows["encoder"].package_name
    default = MilExecutor(encoder)
    assert [d.shape for d in default.inputs] == [s.shape for s in tiny_windows["encoder"].inputs]
    with pytest.raises(ValueError, match="no function 'window_3000ms'; it has window_2500ms, window_5000ms"):
        MilExecutor(encoder, "window_3000ms")
    single = tiny.packages("fp32") / tiny.contract["encoder"].package_name
    assert [d.shape for d in MilExecutor(single, "main").inputs] == [d.shape for d in MilExecutor(single).inputs]
    with pytest.raises(ValueError, match="single function \\(main\\), not 'window_2500ms'"):
        MilExecutor(single, "window_2500ms")


def test_functions_opened_together_hold_one_copy_of_each_weight(load_subject, tiny_windows, precision):
    """Coverage: executors of a package's functions, open at once, share each weight blob the functions share
    (one array, fp16 widened once), as Core ML holds one copy; so opening four windows costs one read."""
    tiny = load_subject("tiny")
    encoder = tiny.windowed(precision) / tiny_windows["encoder"].package_name
    executors = [MilExecutor(encoder, window.function_name) for window in tiny_windows.window_contracts()]
    weights = [[step.const_args["weight"] for step in executor._block.steps if step.op_type == "linear"]
               for executor in executors]
    assert weights[0] and all(len(held) == len(weights[0]) for held in weights)
    for held in weights[1:]:
        assert all(mine is first for mine, first in zip(held, weights[0]))
    assert all(weight.dtype == np.float32 and not weight.flags.writeable for weight in weights[0])
