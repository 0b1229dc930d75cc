"""Host-side greedy TDT decoding that makes exactly NeMo's greedy decisions, for any decoder/joint.

The loop only sees two callables, so the same code drives Core ML packages, NeMo modules or test
stubs:

* ``predict(token, state) -> (decoder_output, new_state)``: one prediction-network step. The very
  first call is ``predict(blank_id, None)``, which stands for NeMo's start-of-sequence step
  (``decoder.predict(None, state=None)``: zero embedding, zero LSTM state).
* ``decide(frame, decoder_output) -> (token_id, duration_index)``: the joint plus the greedy choice,
  token over the first V+1 outputs (blank = V), duration index into ``durations``. A fused
  "joint_decision" package is such a callable; a raw joint package plus ``decide_from_logits`` is too.

NeMo has two greedy TDT loops whose decisions differ in corner cases; ``semantics`` picks one:

``"batched"`` (default): ``GreedyBatchedTDTInfer`` / ``GreedyBatchedTDTLoopLabelsComputer``, the
``greedy_batch`` strategy Parakeet-TDT is configured with.
  * blank with duration 0 advances one frame (NeMo forces blank durations to at least 1);
  * a token whose jump ends the utterance (frame + duration >= num_frames) is dropped, not emitted
    (nor fed to the decoder): a token on the last frame survives only with duration 0. NeMo 3.0's
    loop keeps and emits that token instead: ``"batched_keeps_end"``, otherwise the same;
  * ``max_symbols`` counts tokens emitted on one frame; after the ``max_symbols``-th token on a
    frame, if its duration was 0, time advances by one frame (its recorded duration stays 0).

``"sequential"``: ``GreedyTDTInfer``, the ``greedy`` strategy.
  * every decision on a frame, blank or not, counts towards ``max_symbols``; a frame's decisions
    stop at the first nonzero duration or after ``max_symbols`` decisions, and whenever
    ``max_symbols`` decisions were made time advances by one extra frame, even if the last
    duration was nonzero (so with ``max_symbols=1`` every step advances duration + 1);
  * blank with duration 0 repeats the same decision on the same frame: bounded by ``max_symbols``,
    an endless loop in NeMo when ``max_symbols`` is None (this loop raises instead);
  * a token whose jump ends the utterance is still emitted.
  * NeMo picks the duration by ``max`` over ``log_softmax`` of the duration logits, which can turn
    two float32 values closer than ~1 ulp of the normaliser into a tie (won by the lower index);
    ``decide_from_logits`` takes the argmax of the raw logits as the batched loop does.

Ties: NeMo's ``torch.max(dim)`` / ``torch.argmax`` return the first (lowest) index among equal
maxima, and so does ``numpy.argmax`` in ``decide_from_logits``; a NaN counts as the maximum in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

Predict = Callable[[int, object], tuple[object, object]]
Decide = Callable[[int, object], tuple[int, int]]
Semantics = Literal["batched", "batched_keeps_end", "sequential"]
SEMANTICS = ("batched", "batched_keeps_end", "sequential")


@dataclass
class TdtHypothesis:
    """Tokens emitted in one window with their frames and durations, and the decoder context to go on.

    ``durations`` holds values from the durations list (frames), not indices. ``decoder_output`` and
    ``decoder_state`` are what ``predict`` returned after consuming ``last_token``; a hypothesis with
    ``last_token`` set but ``decoder_output`` None (NeMo's ``Hypothesis`` convention: ``dec_state``
    has not consumed ``last_token`` yet) is also accepted as a start, and ``last_token`` is fed first.
    """

    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    decoder_state: object = None
    last_token: int | None = None
    decoder_output: object = None
    next_frame: int = 0  # where decoding would go on: past num_frames when a jump crossed the chunk's end


def decide_from_logits(logits_row: np.ndarray, num_token_logits: int) -> tuple[int, int]:
    """Greedy (token_id, duration_index) from one raw joint row [V+1+K], ties to the lowest index."""
    row = np.asarray(logits_row).reshape(-1)
    if not 0 < num_token_logits < row.size:
        raise ValueError(f"need 0 < num_token_logits < {row.size} logits, got {num_token_logits}")
    return int(np.argmax(row[:num_token_logits])), int(np.argmax(row[num_token_logits:]))


class _DecoderContext:
    """The prediction network's output for the current (last token, state): predict runs once per token."""

    def __init__(self, predict: Predict, blank_id: int, start: TdtHypothesis):
        self._predict = predict
        self._blank_id = blank_id
        self.last_token = start.last_token
        self.state = start.decoder_state
        self._output = start.decoder_output

    def output(self) -> object:
        """Decoder output to decide with; the first call of a fresh start is NeMo's SOS step."""
        if self._output is None:
            token = self._blank_id if self.last_token is None else self.last_token
            self._output, self.state = self._predict(token, self.state)
        return self._output

    def consume(self, token: int) -> None:
        """Feed an emitted token so the next decision sees it."""
        self._output, self.state = self._predict(token, self.state)
        self.last_token = token

    def carried(self) -> tuple[object, int | None, object]:
        """(decoder_state, last_token, decoder_output) to continue from."""
        return self.state, self.last_token, self._output


def greedy_tdt_decode(num_frames: int, predict: Predict, decide: Decide, *, blank_id: int,
                      durations: Sequence[int], max_symbols: int | None,
                      start: TdtHypothesis | None = None, semantics: Semantics = "batched",
                      first_frame: int = 0, final: bool = True) -> TdtHypothesis:
    """Greedy TDT decoding of frames first_frame..num_frames-1, token for token what NeMo's loop emits.

    One utterance is decoded whole (the defaults) or as consecutive chunks of its frames:
    ``start`` (the previous chunk's result) carries its decoder context (``decoder_state``,
    ``last_token``, ``decoder_output``) like NeMo's ``partial_hypotheses``, and the caller starts
    this chunk at ``first_frame`` = where the previous one's ``next_frame`` points (a duration may
    jump past a chunk's end). Only the utterance's last chunk is ``final``: there NeMo's end-of-
    utterance rule applies (the batched loop drops a token whose jump reaches the end). A jump never
    crosses a chunk's end with a per-frame symbol count pending, so chunking changes no decision.
    Frames in the result are in the caller's frame numbering.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    if max_symbols is not None and max_symbols < 1:
        raise ValueError(f"max_symbols must be None or >= 1 (NeMo rejects it), got {max_symbols}")
    if not durations:
        raise ValueError("durations must not be empty")
    context = _DecoderContext(predict, blank_id, start or TdtHypothesis())
    emitted = TdtHypothesis()
    if semantics == "sequential":
        emitted.next_frame = _sequential_loop(num_frames, context, decide, blank_id, list(durations), max_symbols,
                                              emitted, first_frame)
    else:
        drops_end_token = final and semantics == "batched"
        emitted.next_frame = _batched_loop(num_frames, context, decide, blank_id, list(durations), max_symbols,
                                           emitted, first_frame, drops_end_token)
    emitted.decoder_state, emitted.last_token, emitted.decoder_output = context.carried()
    return emitted


def _emit(result: TdtHypothesis, context: _DecoderContext, token: int, frame: int, duration: int) -> None:
    """Record a token and feed it to the decoder."""
    result.tokens.append(token)
    result.frames.append(frame)
    result.durations.append(duration)
    context.consume(token)


def _batched_loop(num_frames, context, decide, blank_id, durations, max_symbols, result, frame,
                  drops_end_token) -> int:
    """GreedyBatchedTDTInfer's loop-labels decisions; returns the frame to go on from."""
    tokens_on_frame = 0
    while frame < num_frames:
        token, duration_index = decide(frame, context.output())
        duration = durations[duration_index]
        if token == blank_id:
            frame += max(duration, 1)
            continue
        next_frame = frame + duration
        if drops_end_token and next_frame >= num_frames:
            return num_frames  # NeMo 2.x stores only tokens whose jump lands inside the utterance
        tokens_on_frame = tokens_on_frame + 1 if result.frames and result.frames[-1] == frame else 1
        _emit(result, context, token, frame, duration)
        if duration == 0 and max_symbols is not None and tokens_on_frame >= max_symbols:
            next_frame += 1
        frame = next_frame
    return frame


def _sequential_loop(num_frames, context, decide, blank_id, durations, max_symbols, result, frame) -> int:
    """GreedyTDTInfer's decisions (it emits a token whose jump ends the utterance)."""
    while frame < num_frames:
        decisions = 0
        duration = 0
        while duration == 0 and (max_symbols is None or decisions < max_symbols):
            token, duration_index = decide(frame, context.output())
            duration = durations[duration_index]
            if token == blank_id and duration == 0 and max_symbols is None:
                raise ValueError(f"blank with duration 0 at frame {frame} and max_symbols=None: "
                                 "NeMo's GreedyTDTInfer repeats this decision forever")
            if token != blank_id:
                _emit(result, context, token, frame, duration)
            decisions += 1
        frame += duration
        if decisions == max_symbols:
            frame += 1
    return frame
