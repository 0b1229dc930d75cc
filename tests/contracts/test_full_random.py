"""The full-width random model exports with parakeet-tdt-0.6b-v3's real dimensions (marker: full)."""

from __future__ import annotations

import pytest

from exporters.components import COMPONENTS
from exporters.runtime import package_io

pytestmark = pytest.mark.full

# parakeet-tdt-0.6b-v3's published widths (independent of our code).
V3_D_MODEL = 1024
V3_PRED_HIDDEN = 640
V3_VOCAB = 8192
V3_DURATIONS = 5


def test_full_random_has_v3_dimensions(full_model, full_contract):
    """Coverage: inspected widths and parameter count of the full-random build."""
    spec = full_contract.model
    assert (spec.d_model, spec.pred_hidden, spec.vocab_size, len(spec.durations)) == \
        (V3_D_MODEL, V3_PRED_HIDDEN, V3_VOCAB, V3_DURATIONS)
    parameters = sum(p.numel() for p in full_model.parameters())
    assert 600e6 < parameters < 650e6


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_full_random_packages_equal_contract(full_packages, full_contract, name):
    """Coverage: every full-width package at both precisions declares the contract (1024/640/8192+1+5)."""
    component = full_contract[name]
    inputs, outputs = package_io(full_packages / component.package_name)
    assert [d.interface for d in inputs] == [s.interface for s in component.inputs]
    assert [d.interface for d in outputs] == [s.interface for s in component.outputs]
    if name == "joint":
        assert outputs[0].shape == (1, 188, 1, V3_VOCAB + 1 + V3_DURATIONS)
    if name == "encoder":
        assert outputs[0].shape == (1, V3_D_MODEL, 188)
