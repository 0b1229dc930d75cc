"""Decision logs with NeMo-comparable margins, and where two logs first part.

A RecordingTranscriber decides exactly like its base Transcriber and, through a raw `joint` runtime,
logs each decision's top-1 margins (token and duration), so a difference between two decoders can be
traced to its first decision and judged by the reference's own margin there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporters.decoding.transcriber import Transcriber
from exporters.parity.diff import top1_margin


class RecordingTranscriber(Transcriber):
    """Logs every decision (frame, token, duration index) and, given a raw joint, its top-1 margins."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple] = []
        self.top_logit: list[float] = []

    def decider(self, encoder, window):
        decide = super().decider(encoder, window)
        split = self.contract.model.num_token_logits

        def recorded(frame, decoder_output):
            choice = decide(frame, decoder_output)
            logits = self.runtimes["joint"].predict({"encoder": encoder, "decoder": decoder_output})["logits"]
            row = logits[0, frame, 0]
            self.log.append((frame, *choice, float(top1_margin(row[:split])), float(top1_margin(row[split:]))))
            self.top_logit.append(float(np.abs(row).max()))
            return choice
        return recorded


def recording(transcriber: Transcriber, joint=None) -> RecordingTranscriber:
    """The same runtimes and decoding path, recording; `joint` supplies the raw joint for the margins
    when the path decides with a fused joint_decision package."""
    runtimes = transcriber.runtimes if joint is None else transcriber.runtimes | {"joint": joint}
    return RecordingTranscriber(runtimes, transcriber.contract, transcriber.tokenizer, transcriber.joint_mode,
                                transcriber.fused_frontend, smaller_windows=tuple(transcriber.windows[:-1]))


@dataclass
class Divergence:
    """Where two decision logs first differ, with the reference's own margin there."""

    index: int
    frame: int
    flipped: str  # "token" or "duration"
    margin: float
    top_logit: float


def first_divergence(package: RecordingTranscriber, reference: RecordingTranscriber) -> Divergence | None:
    """The first decision where `package` parts from `reference` (None if the logs agree)."""
    ours = [entry[:3] for entry in package.log]
    theirs = [entry[:3] for entry in reference.log]
    if ours == theirs:
        return None
    index = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    if index >= len(theirs):
        index = len(theirs) - 1
    frame, token, _, token_margin, duration_margin = reference.log[index]
    flipped = "token" if index >= len(ours) or ours[index][1] != token else "duration"
    return Divergence(index, frame, flipped, token_margin if flipped == "token" else duration_margin,
                      reference.top_logit[index])
