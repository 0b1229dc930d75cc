"""End to end: greedy TDT over the exported packages makes NeMo's exact decisions."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.decoding.transcriber import JOINT_MODES, Transcriber
from exporters.parity.diff import tolerance, top1_margin
from exporters.reference import nemo_transcriber

PATHS = [(mode, fused) for mode in JOINT_MODES for fused in (False, True)]


def decisions(transcript) -> tuple[list[int], list[int], list[int]]:
    return ([t.token_id for t in transcript.tokens], [t.frame for t in transcript.tokens],
            [t.duration for t in transcript.tokens])


def nemo_decisions(hypothesis) -> tuple[list[int], list[int], list[int]]:
    return (hypothesis.y_sequence.tolist(), hypothesis.timestamp["timestep"].tolist(),
            hypothesis.token_duration.tolist())


@pytest.mark.parametrize("joint_mode, fused", PATHS)
def test_fp32_packages_make_nemo_decisions(decoding_case, transcriber_for, joint_mode, fused):
    """Coverage: tokens, frames, durations and text equal NeMo transcribe's exactly, per clip and decoding path."""
    subject, clips, nemo_hypotheses = decoding_case
    transcriber = transcriber_for(subject.packages("fp32"), joint_mode, fused)
    for name, samples in clips.items():
        transcript = transcriber.transcribe(samples)
        assert decisions(transcript) == nemo_decisions(nemo_hypotheses[name]), name
        assert transcript.text == nemo_hypotheses[name].text, name


def test_fp32_word_timestamps_equal_nemo(decoding_case, transcriber_for):
    """Coverage: words and their start/end seconds equal NeMo's word timestamps, per clip."""
    subject, clips, nemo_hypotheses = decoding_case
    transcriber = transcriber_for(subject.packages("fp32"))
    for name, samples in clips.items():
        transcript = transcriber.transcribe(samples)
        expected = nemo_hypotheses[name].timestamp["word"]
        assert [w.word for w in transcript.words] == [w["word"] for w in expected], name
        np.testing.assert_allclose([(w.start, w.end) for w in transcript.words],
                                   [(w["start"], w["end"]) for w in expected], rtol=0, atol=1e-9, err_msg=name)


class RecordingTranscriber(Transcriber):
    """Logs every decision (frame, token, duration index) and, given a raw joint, NeMo's top-1 margins."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple] = []
        self.top_logit: list[float] = []

    def decider(self, encoder):
        decide = super().decider(encoder)
        split = self.contract.model.num_token_logits

        def recorded(frame, decoder_output):
            choice = decide(frame, decoder_output)
            logits = self.runtimes["joint"].predict({"encoder": encoder, "decoder": decoder_output})["logits"]
            row = logits[0, frame, 0]
            self.log.append((frame, *choice, float(top1_margin(row[:split])), float(top1_margin(row[split:]))))
            self.top_logit.append(float(np.abs(row).max()))
            return choice
        return recorded


def recording(transcriber: Transcriber) -> RecordingTranscriber:
    return RecordingTranscriber(transcriber.runtimes, transcriber.contract, transcriber.tokenizer)


@pytest.mark.parametrize("clip_name", ["short_4s", "long_15s"])
def test_fp16_agreement_and_first_difference_margin(decoding_case, transcriber_for, clip_name):
    """Coverage: fp16 decisions agree with NeMo's, or first differ where NeMo's own margin is below fp16 noise."""
    subject, clips, _ = decoding_case
    reference = recording(nemo_transcriber(subject.model, subject.contract))
    package = recording(transcriber_for(subject.packages("fp16")))
    reference.transcribe(clips[clip_name])
    package.transcribe(clips[clip_name])
    ours = [entry[:3] for entry in package.log]
    theirs = [entry[:3] for entry in reference.log]
    agreeing = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"{subject.source} {clip_name}: fp16 agrees with NeMo on {agreeing} of {len(theirs)} decisions")
    if ours == theirs:
        return
    frame, token, duration, token_margin, duration_margin = reference.log[agreeing]
    flipped_token = ours[agreeing][1] != token
    margin = token_margin if flipped_token else duration_margin
    # Two logits within the fp16 joint tolerance of NeMo's can swap only if NeMo's gap is under twice it.
    tol = tolerance("joint", "fp16", "token_logits" if flipped_token else "duration_logits")
    assert margin < 2 * (tol.atol + tol.rtol * reference.top_logit[agreeing]), \
        f"decision {agreeing} at frame {frame} flipped although NeMo's margin was {margin}"
