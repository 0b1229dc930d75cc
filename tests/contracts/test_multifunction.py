"""Multifunction packages merged one weight at a time (exporters/multifunction.py) against coremltools' own
save_multifunction of the same single-window packages: the same functions, interfaces and outputs, the shared
weights stored once."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.compression import CompressionSettings
from exporters.example_inputs import example_inputs
from exporters.export import ExportSettings, converted, directory_size
from exporters.multifunction import merge_functions
from exporters.runtime import load

WINDOWS = (2.5, 15.0)


def single_window_packages(model, contract, settings, directory) -> dict:
    singles = {}
    for window in contract.window_contracts():
        singles[window.function_name] = directory / f"{window.function_name}.mlpackage"
        converted(model, window, "encoder", settings, "iOS18").save(str(singles[window.function_name]))
    return singles


def coremltools_merge(singles: dict, default: str, path) -> None:
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    descriptor = MultiFunctionDescriptor()
    for function, single in singles.items():
        descriptor.add_function(str(single), "main", function)
    descriptor.default_function_name = default
    save_multifunction(descriptor, str(path))


@pytest.mark.parametrize("stored, variant", [("fp32", "none"), ("fp16", "none"), ("fp16", "int8"),
                                                ("fp16", "palette4"), ("fp16", "palette6")])
def test_merged_encoder_equals_coremltools_merge(load_subject, tmp_path, stored, variant):
    """Coverage: the tiny encoder's 2.5 s and 15 s functions (fp32, fp16, and weights stored as int8, 4- and
    6-bit palettes: every blob kind the exports write) merged by merge_functions and by save_multifunction:
    the same function descriptions and default, outputs bit for bit equal per function on the executor, no
    more weight bytes than coremltools stores (the weights the windows share once), and within 1 % of its
    package size."""
    import coremltools as ct

    tiny = load_subject("tiny")
    contract = tiny.window_contract(WINDOWS)
    settings = ExportSettings(precision=stored, compression=CompressionSettings(variant))
    singles = single_window_packages(tiny.model, contract, settings, tmp_path)
    ours, theirs = tmp_path / "ours.mlpackage", tmp_path / "theirs.mlpackage"
    merge_functions(singles, contract.function_name, ours)
    coremltools_merge(singles, contract.function_name, theirs)
    ours_spec, theirs_spec = ct.utils.load_spec(str(ours)), ct.utils.load_spec(str(theirs))
    assert ours_spec.description.defaultFunctionName == theirs_spec.description.defaultFunctionName
    assert list(ours_spec.description.functions) == list(theirs_spec.description.functions)
    assert ours_spec.specificationVersion == theirs_spec.specificationVersion
    for window in contract.window_contracts():
        inputs = example_inputs(window["encoder"], seed=5)
        expected = load(theirs, "mil", function=window.function_name).predict(inputs)
        actual = load(ours, "mil", function=window.function_name).predict(inputs)
        assert expected.keys() == actual.keys()
        for name in expected:
            np.testing.assert_array_equal(actual[name], expected[name])
    assert directory_size(ours) <= 1.01 * directory_size(theirs)  # theirs also merges equal consts in a function
    assert weight_bytes(ours) <= weight_bytes(theirs) < sum(weight_bytes(single) for single in singles.values())


def weight_bytes(package) -> int:
    return sum(path.stat().st_size for path in package.rglob("weight.bin"))
