"""Every window of a multi-window export against NeMo on the unpadded file, under the tolerance table:
each window-sized package, run by function name, on speech that fills most of the window and on a short
file padded into it."""

from __future__ import annotations

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.parity.diff import assert_passed
from exporters.parity.gates import GateContext, clip_gates, default_tokens

WINDOWED = ("preprocessor", "encoder", "mel_encoder", "joint", "joint_decision")
FUNCTIONS = ("window_2500ms", "window_5000ms", "window_10000ms", "window_15000ms")


@pytest.fixture(scope="session")
def tiny_windows(load_subject):
    return {contract.function_name: contract for contract in load_subject("tiny").window_contract().window_contracts()}


@pytest.mark.parametrize("fill", [0.9, 0.3])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_window_functions_match_nemo(load_subject, tiny_windows, precision, backend, open_or_skip, function, fill):
    """Coverage: preprocessor, encoder, mel_encoder, joint and joint_decision of one window's function vs NeMo on
    the first `fill` of the window's length of the 16 s speech clip, unpadded."""
    tiny = load_subject("tiny")
    contract = tiny_windows[function]
    packages = tiny.windowed(precision)
    samples = load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", contract.model.sample_rate)
    audio_signal, audio_length = fit_window(samples[:int(contract.window_samples * fill)], contract.window_samples)

    def open_function(name):
        return open_or_skip(packages / contract[name].package_name, backend, function=function)

    diffs = clip_gates(GateContext(tiny.model, contract, precision), open_function, f"{function} {fill:.0%}",
                       audio_signal, audio_length, default_tokens(contract), WINDOWED)
    assert_passed(diffs)
