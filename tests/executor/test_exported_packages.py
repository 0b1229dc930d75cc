"""Every exported package runs through the selected backend from disk and matches its torch wrapper (the
full-width encoder: NeMo's own)."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.components import COMPONENTS
from exporters.example_inputs import example_inputs
from exporters.parity.diff import assert_passed, compare
from exporters.parity.gates import valid_encoder_frames
from exporters.reference import nemo_runtime, wrapper_runtime

WRAPPER_ATOL = 1e-4  # issue #3's bar for fp32 packages vs the traced torch wrapper


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_fp32_package_matches_torch_wrapper(tiny_model, tiny_contract, tiny_packages_fp32, backend, name,
                                            open_or_skip):
    """Coverage: each tiny fp32 package on the backend vs the torch wrapper it was traced from, atol 1e-4."""
    package = open_or_skip(tiny_packages_fp32 / tiny_contract[name].package_name, backend)
    inputs = example_inputs(tiny_contract[name], seed=21)
    expected = wrapper_runtime(tiny_model, tiny_contract, name).predict(inputs)
    actual = package.predict(inputs)
    assert list(actual) == list(expected)
    for output, value in expected.items():
        assert actual[output].dtype == value.dtype, output
        np.testing.assert_allclose(actual[output], value, rtol=0, atol=WRAPPER_ATOL, err_msg=f"{name}.{output}")


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_fp16_package_runs_end_to_end(tiny_contract, tiny_packages_fp16, backend, name, open_or_skip):
    """Coverage: each tiny fp16 package runs with fp32/int32 outputs of the contract's shapes, all finite."""
    package = open_or_skip(tiny_packages_fp16 / tiny_contract[name].package_name, backend)
    outputs = package.predict(example_inputs(tiny_contract[name], seed=22))
    for spec in tiny_contract[name].outputs:
        assert outputs[spec.name].shape == spec.shape
        assert np.all(np.isfinite(outputs[spec.name])), spec.name


@pytest.mark.full
def test_full_random_encoder_runs_on_backend(full_model, full_contract, full_packages, backend, precision,
                                             open_or_skip):
    """Coverage: the 24-layer full-width encoder package through the backend vs NeMo's encoder on random
    features (NeMo's output is computed once for both precisions: `nemo_runtime` remembers it)."""
    package = open_or_skip(full_packages / full_contract["encoder"].package_name, backend)
    inputs = example_inputs(full_contract["encoder"], seed=23)
    expected = nemo_runtime(full_model, full_contract, "encoder").predict(inputs)
    actual = package.predict(inputs)
    valid_encoder_frames(expected, actual)
    assert_passed([compare("encoder", output, precision, "full-random vs wrapper", expected[output], actual[output])
                   for output in expected])
