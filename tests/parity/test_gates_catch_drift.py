"""The gates fail when a package drifts: one changed weight trips exactly its component's gate."""

from __future__ import annotations

import shutil

import pytest

from exporters.parity.gates import clip_gates, default_tokens
from exporters.runtime import BackendUnavailable, load


@pytest.mark.parametrize("drifted", ["encoder", "decoder", "joint"])
def test_one_changed_weight_fails_only_its_gate(tiny_model, tiny_contract, tiny_packages_fp32, backend, clip,
                                                 tmp_path, drifted, perturb_package):
    """Coverage: a 5% change to one weight tensor fails that component's gate and no other."""
    perturbed = tmp_path / tiny_contract[drifted].package_name
    shutil.copytree(tiny_packages_fp32 / tiny_contract[drifted].package_name, perturbed)
    perturb_package(perturbed)

    def open_package(name):
        path = perturbed if name == drifted else tiny_packages_fp32 / tiny_contract[name].package_name
        try:
            return load(path, backend)
        except BackendUnavailable as reason:
            pytest.skip(str(reason))

    case, audio_signal, audio_length = clip
    diffs = clip_gates(tiny_model, tiny_contract, open_package, "fp32", case, audio_signal, audio_length,
                       default_tokens(tiny_contract), ["encoder", "decoder", "joint"])
    failed = {d.component for d in diffs if not d.passed}
    assert failed == {drifted}, [d.describe() for d in diffs if not d.passed]
