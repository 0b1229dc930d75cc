"""fp16 audit: where half precision breaks, and proof that shipped fp16 packages avoid it."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.components import COMPONENTS
from exporters.example_inputs import example_inputs
from exporters.export import convert, trace
from exporters.parity.audit import audit_fp16
from exporters.parity.diff import assert_passed, continuous_tolerance
from exporters.parity.gates import GateContext, audio_gate
from exporters.reference import nemo_runtime


@pytest.fixture(scope="module")
def loud_bursts(tiny_contract):
    """Half-second bursts of full-scale noise between digital silence: the widest log-mel variance."""
    rate = tiny_contract.model.sample_rate
    samples = np.random.default_rng(0).uniform(-1, 1, tiny_contract.window_samples).astype(np.float32)
    seconds = np.arange(tiny_contract.window_samples) / rate
    samples[(seconds % 1.0) >= 0.5] = 0.0
    return samples[None, :], np.array([tiny_contract.window_samples], np.int32)


def audit_inputs(name, model, contract, loud):
    """Loud audio for waveform packages, its NeMo mel for the encoder, contract examples otherwise."""
    audio = contract.audio_feed(*loud)
    if contract[name].waveform_input:
        return audio
    if name == "encoder":
        return contract["encoder"].pick_inputs(nemo_runtime(model, contract, "preprocessor").predict(audio))
    return example_inputs(contract[name], seed=11)


@pytest.fixture(scope="module")
def all_fp16_preprocessor(tiny_model, tiny_contract, tmp_path_factory):
    """The preprocessor converted with every op in fp16 (no fp32 front end), for the audit only."""
    path = tmp_path_factory.mktemp("unprotected") / "preprocessor_all_fp16.mlpackage"
    convert(trace(tiny_model, tiny_contract, "preprocessor"), tiny_contract["preprocessor"], "fp16").save(str(path))
    return path


def test_all_fp16_front_end_exceeds_fp16_range_on_loud_audio(tiny_contract, tiny_packages_fp32,
                                                             all_fp16_preprocessor, loud_bursts):
    """Coverage: an all-fp16 preprocessor overflows (per-feature sum of squares) and diverges: why it stays fp32."""
    tol = continuous_tolerance("preprocessor", "fp32")
    audit = audit_fp16(tiny_packages_fp32 / tiny_contract["preprocessor"].package_name, all_fp16_preprocessor,
                       tiny_contract.audio_feed(*loud_bursts), tol.atol, tol.rtol)
    print(audit.describe())
    assert audit.first_divergent is not None
    assert any(finding.op_type == "reduce_sum" for finding in audit.overflows), audit.describe()


@pytest.mark.parametrize("name", ["preprocessor", "mel_encoder"])
def test_shipped_fp16_front_end_passes_gate_on_loud_audio(tiny_model, tiny_contract, tiny_packages_fp16,
                                                          loud_bursts, backend, name):
    """Coverage: the fp16 exports' fp32 front end meets the fp16 table on loud bursts."""
    from exporters.runtime import load

    package = load(tiny_packages_fp16 / tiny_contract[name].package_name, backend)
    assert_passed(audio_gate(GateContext(tiny_model, tiny_contract, "fp16"), name, package, "loud bursts", *loud_bursts))


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_fp16_package_stays_in_fp16_range(tiny_model, tiny_contract, tiny_packages_fp32, tiny_packages_fp16,
                                          loud_bursts, name):
    """Coverage: no op of a shipped fp16 package exceeds fp16 range on loud input; reports the first divergent op."""
    package = tiny_contract[name].package_name
    tol = continuous_tolerance(name, "fp16")
    audit = audit_fp16(tiny_packages_fp32 / package, tiny_packages_fp16 / package,
                       audit_inputs(name, tiny_model, tiny_contract, loud_bursts), tol.atol, tol.rtol)
    print(audit.describe())
    assert not audit.overflows, audit.describe()
