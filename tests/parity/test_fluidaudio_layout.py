"""The FluidAudio layout's packages pass the same parity gates as the default layout's."""

from __future__ import annotations

import pytest

from exporters.parity.diff import assert_passed
from exporters.parity.gates import clip_gates, default_tokens
from exporters.runtime import BackendUnavailable, load


def test_fluidaudio_packages_pass_every_gate(load_subject, backend, precision, clip):
    """Coverage: Preprocessor, Encoder, Decoder and JointDecisionv3 of `convert --layout fluidaudio` (tiny)
    against NeMo's modules on each speech clip, under the table's tolerances."""
    case, audio_signal, audio_length = clip
    tiny = load_subject("tiny")
    export = tiny.packages(precision, "fluidaudio")
    contract = tiny.contract.with_layout("fluidaudio")

    def open_package(name):
        try:
            return load(export / contract[name].package_name, backend)
        except BackendUnavailable as reason:
            pytest.skip(str(reason))

    assert_passed(clip_gates(tiny.model, contract, open_package, precision, case, audio_signal, audio_length,
                             default_tokens(contract), list(contract.components)))
