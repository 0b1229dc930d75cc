"""The gates fail when a package drifts: one changed weight trips exactly its component's gate."""

from __future__ import annotations

import shutil

import pytest

from exporters.parity.diff import ParityError
from exporters.parity.gates import GateContext, clip_gates, default_tokens


@pytest.mark.parametrize("drifted", ["encoder", "decoder", "joint"])
def test_one_changed_weight_fails_only_its_gate(tiny_model, tiny_contract, tiny_packages_fp32, backend, clip,
                                                 tmp_path, drifted, perturb_package, open_or_skip):
    """Coverage: a 5% change to one weight tensor fails that component's gate and no other."""
    perturbed = tmp_path / tiny_contract[drifted].package_name
    shutil.copytree(tiny_packages_fp32 / tiny_contract[drifted].package_name, perturbed)
    perturb_package(perturbed)

    def open_package(name):
        return open_or_skip(perturbed if name == drifted else tiny_packages_fp32 / tiny_contract[name].package_name,
                            backend)

    case, audio_signal, audio_length = clip
    diffs = clip_gates(GateContext(tiny_model, tiny_contract, "fp32"), open_package, case, audio_signal, audio_length,
                       default_tokens(tiny_contract), ["encoder", "decoder", "joint"])
    failed = {d.component for d in diffs if not d.passed}
    assert failed == {drifted}, [d.describe() for d in diffs if not d.passed]


def test_unknown_component_has_no_gate(tiny_model, tiny_contract, clip):
    """Coverage: a component without a gate is a ParityError, never judged by another component's gate."""
    case, audio_signal, audio_length = clip
    with pytest.raises(ParityError, match="no parity gate for component 'vocoder'"):
        clip_gates(GateContext(tiny_model, tiny_contract, "fp32"), lambda name: None, case, audio_signal,
                   audio_length, default_tokens(tiny_contract), ["vocoder"])
