"""NeMo's encoder-running references are computed once per input and weights, and never served stale."""

import numpy as np
import torch

from exporters.example_inputs import example_inputs
from exporters.reference import RememberedEncoderRuntime, nemo_runtime


def counted(runtime):
    """The runtime, with a count of the times its NeMo function actually ran."""
    calls = []
    function = runtime.function

    def counting(*arguments):
        calls.append(1)
        return function(*arguments)

    runtime.function = counting
    return runtime, calls


def test_same_input_is_computed_once_and_handed_out_as_copies(tiny_model, tiny_contract):
    runtime, calls = counted(nemo_runtime(tiny_model, tiny_contract, "mel_encoder"))
    assert isinstance(runtime, RememberedEncoderRuntime)
    inputs = example_inputs(tiny_contract["mel_encoder"], seed=41)
    first = runtime.predict(inputs)
    first["encoder"][:] = np.nan  # a caller scribbling on its result
    second = runtime.predict(inputs)
    assert len(calls) == 1
    assert np.all(np.isfinite(second["encoder"]))
    other = dict(inputs, audio_length=inputs["audio_length"] // 2)
    runtime.predict(other)
    assert len(calls) == 2


def test_a_changed_weight_is_computed_afresh(tiny_model, tiny_contract):
    runtime, calls = counted(nemo_runtime(tiny_model, tiny_contract, "encoder"))
    inputs = example_inputs(tiny_contract["encoder"], seed=42)
    before = runtime.predict(inputs)["encoder"]
    weight = next(tiny_model.encoder.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.5)
    try:
        changed = runtime.predict(inputs)["encoder"]
    finally:
        with torch.no_grad():
            weight.copy_(original)  # the session's shared model: subtracting 0.5 again would not give it back
    restored = runtime.predict(inputs)["encoder"]
    assert len(calls) == 3
    assert not np.allclose(changed, before)
    np.testing.assert_array_equal(restored, before)


def test_references_without_the_encoder_or_timed_are_not_remembered(tiny_model, tiny_contract):
    assert not isinstance(nemo_runtime(tiny_model, tiny_contract, "joint"), RememberedEncoderRuntime)
    timed = nemo_runtime(tiny_model, tiny_contract, "encoder", remember=False)
    assert not isinstance(timed, RememberedEncoderRuntime)


def test_a_replaced_weight_is_computed_afresh(tiny_model, tiny_contract):
    """A parameter swapped for a new tensor (a reload with assign=True) counts as a change, even when equal."""
    runtime, calls = counted(nemo_runtime(tiny_model, tiny_contract, "encoder"))
    inputs = example_inputs(tiny_contract["encoder"], seed=43)
    runtime.predict(inputs)
    module, name = next((m, n) for m in tiny_model.encoder.modules() for n, _ in m.named_parameters(recurse=False))
    original = getattr(module, name)
    setattr(module, name, torch.nn.Parameter(original.detach().clone()))
    try:
        runtime.predict(inputs)
    finally:
        setattr(module, name, original)
    assert len(calls) == 2


def test_an_inference_mode_buffer_is_seen_by_identity(tiny_model, tiny_contract):
    """NeMo's transcribe() runs under inference mode; on a file longer than any before, the encoder rebuilds its
    positional encodings there, leaving an inference tensor (no in-place version) as the buffer."""
    runtime, calls = counted(nemo_runtime(tiny_model, tiny_contract, "encoder"))
    inputs = example_inputs(tiny_contract["encoder"], seed=43)
    positional = tiny_model.encoder.pos_enc
    before = runtime.predict(inputs)["encoder"]
    original = positional.pe
    with torch.inference_mode():
        positional.pe = original.clone()
    try:
        assert positional.pe.is_inference()
        rebuilt = runtime.predict(inputs)["encoder"]
        again = runtime.predict(inputs)["encoder"]
    finally:
        positional.pe = original
    assert len(calls) == 2
    np.testing.assert_array_equal(rebuilt, before)
    np.testing.assert_array_equal(again, before)
