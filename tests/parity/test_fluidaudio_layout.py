"""The FluidAudio layout's packages pass the same parity gates as the default layout's."""

from __future__ import annotations

from exporters.parity.diff import assert_passed
from exporters.parity.gates import GateContext, clip_gates, default_tokens


def test_fluidaudio_packages_pass_every_gate(load_subject, backend, precision, clip, open_or_skip):
    """Coverage: Preprocessor, Encoder, Decoder and JointDecisionv3 of `convert --layout fluidaudio` (tiny)
    against NeMo's modules on each speech clip, under the table's tolerances."""
    case, audio_signal, audio_length = clip
    tiny = load_subject("tiny")
    export = tiny.packages(precision, "fluidaudio")
    contract = tiny.contract.with_layout("fluidaudio")

    def open_package(name):
        return open_or_skip(export / contract[name].package_name, backend)

    assert_passed(clip_gates(GateContext(tiny.model, contract, precision), open_package, case, audio_signal,
                             audio_length, default_tokens(contract), list(contract.components)))
