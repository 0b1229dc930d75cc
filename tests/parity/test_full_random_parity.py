"""Every gate on the full-width random model's packages (marker: full)."""

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.parity.diff import assert_passed
from exporters.parity.gates import GateContext, clip_gates, default_tokens

pytestmark = pytest.mark.full


def test_full_random_packages_pass_every_gate(full_model, full_contract, full_packages, backend, precision,
                                              open_or_skip):
    """Coverage: every full-width package vs NeMo on the 16 s speech clip, per precision."""
    samples = load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", full_contract.model.sample_rate)
    audio_signal, audio_length = fit_window(samples, full_contract.window_samples)

    def open_package(name):
        return open_or_skip(full_packages / full_contract[name].package_name, backend)

    assert_passed(clip_gates(GateContext(full_model, full_contract, precision), open_package, "long_16s",
                             audio_signal, audio_length, default_tokens(full_contract), list(full_contract.components)))
