"""One model call per decision: the decode-step path against the single-step path, on trained models."""

from __future__ import annotations

import pytest

from exporters.audio import held_out_clips
from exporters.runtime import CountingRuntime


def count_calls(transcriber) -> dict[str, CountingRuntime]:
    """Fresh counters on every package the transcriber calls."""
    counters = {name: CountingRuntime(runtime.runtime if isinstance(runtime, CountingRuntime) else runtime)
                for name, runtime in transcriber.runtimes.items()}
    transcriber.runtimes.update(counters)
    return counters


@pytest.mark.parametrize("source", ["digits", "sentences"])
def test_decode_step_makes_one_call_per_decision(load_subject, transcriber_for, source):
    """Coverage: on each held-out clip (one window), the decode-step path makes the single-step path's
    decisions with one package call per decision and a single decoder call (the start); the single-step
    path pays one joint call per decision plus one decoder call per emitted token."""
    subject = load_subject(source)
    single = transcriber_for(subject.packages("fp32"), "single_step")
    stepped = transcriber_for(subject.packages("fp32"), "decode_step")
    clips, _ = held_out_clips(source, subject.contract.model.sample_rate)
    totals = {"single_step": 0, "decode_step": 0}
    for samples in clips:
        single_calls, step_calls = count_calls(single), count_calls(stepped)
        expected = single.transcribe(samples)
        assert stepped.transcribe(samples).decisions() == expected.decisions()
        decisions = single_calls["joint_decision_single_step"].calls
        assert step_calls["decode_step"].calls == decisions
        assert step_calls["decoder"].calls == 1
        assert single_calls["decoder"].calls == 1 + len(expected.tokens)
        totals["single_step"] += decisions + single_calls["decoder"].calls
        totals["decode_step"] += decisions + 1
    print(f"{source}: decode-loop model calls over {len(clips)} held-out clips: {totals}")
