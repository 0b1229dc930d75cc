"""Live streaming: audio pushed as it arrives, final text equal to NeMo's buffered streaming inference.

NeMo's streaming inference for TDT (examples/asr/asr_chunked_inference/rnnt/speech_to_text_streaming_infer_rnnt.py)
keeps a buffer of [left context, chunk, right context] audio, counted in whole encoder frames (NeMo's
`ContextSize`). The first step takes chunk + right of audio, every later step one more chunk, the buffer dropping
what falls out of the left context. Each buffer is encoded as a file of its own (its features normalized over the
buffer), and only the chunk's encoder frames are decoded, the TDT state carried from step to step; on the last
step the chunk runs to the end of the audio. A `Stream` does the same over the packages: the buffer is fed to the
smallest window that holds it (true-end padding, so the packages compute NeMo's forward on the buffer), and the
transcriber's greedy loop decodes the chunk from the carried hypothesis.

A live stream does not know its length: a step is taken once audio beyond it has arrived (so it is not the last)
or the stream has ended. Tokens of a decoded chunk never change: they are *final*. After each step a *partial*
adds a tentative decoding of the right context's frames from a copy of the state; the next step may revise it.
Events carry what is new (final text and words made final by the step; the partial's tentative tail), so an hour
of stream costs the same per event as its first minute; the "end" event holds the whole transcript.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field

import numpy as np

from exporters.decoding.tdt import TdtHypothesis
from exporters.decoding.timestamps import TokenTiming, WordTiming, group_words, refine_punctuation, starts_word
from exporters.errors import UserError

# NeMo's streaming script's defaults (seconds).
CHUNK_SECONDS = 2.0
LEFT_SECONDS = 10.0
RIGHT_SECONDS = 2.0


@dataclass(frozen=True)
class StreamSettings:
    chunk_seconds: float = CHUNK_SECONDS
    left_seconds: float = LEFT_SECONDS
    right_seconds: float = RIGHT_SECONDS

    def frames(self, features_per_second: float, subsampling: int) -> tuple[int, int, int]:
        """(left, chunk, right) in whole encoder frames, computed (and rounded down) as NeMo's script does."""
        return tuple(int(seconds * features_per_second / subsampling)
                     for seconds in (self.left_seconds, self.chunk_seconds, self.right_seconds))


@dataclass
class StreamEvent:
    kind: str  # "partial", "final" or "end"
    text: str  # final: the text made final by this step; partial: the tentative text after all final text; end: all
    words: list[WordTiming] = field(default_factory=list)  # final: words completed by this step; end: all words
    audio_seconds: float = 0.0  # stream time the event is about: the audio received when it was made
    wall_seconds: float = 0.0  # since the stream started

    def to_dict(self) -> dict:
        return {"event": self.kind, "text": self.text, "words": [w.to_dict() for w in self.words],
                "audio_seconds": round(self.audio_seconds, 3), "wall_seconds": round(self.wall_seconds, 3)}


class Stream:
    """Push audio of any size at any rate; get partial and final events; end() decodes the rest."""

    def __init__(self, transcriber, settings: StreamSettings = StreamSettings(), sample_rate: int | None = None):
        from nemo.collections.asr.parts.utils.streaming_utils import ContextSize

        self.transcriber = transcriber
        spec = transcriber.contract.model
        self.frame_samples = transcriber.frame_samples
        left, chunk, right = settings.frames(spec.sample_rate / spec.hop_length, spec.subsampling_factor)
        if chunk < 1:
            raise UserError(f"a streaming chunk of {settings.chunk_seconds} s holds no encoder frame "
                            f"({self.frame_samples / spec.sample_rate:.2f} s each)")
        self.expected = ContextSize(*(frames * self.frame_samples for frames in (left, chunk, right)))
        largest = transcriber.windows[-1].contract.window_samples
        if self.expected.total() > largest:
            raise UserError(f"left + chunk + right context ({self.expected.total() / spec.sample_rate:.2f} s) exceeds "
                            f"the export's largest window ({largest / spec.sample_rate:.2f} s)")
        self.context = ContextSize(0, 0, 0)
        self.sample_rate = sample_rate or spec.sample_rate
        self.resampler = None
        if self.sample_rate != spec.sample_rate:
            import soxr

            self.resampler = soxr.ResampleStream(self.sample_rate, spec.sample_rate, 1, dtype="float32")
        self.received = np.zeros(0, np.float32)  # audio not yet in a step, from sample `self.next_sample`
        self.next_sample = 0  # NeMo's left_sample: where the next step's audio starts
        self.buffer = np.zeros(0, np.float32)
        self.hypothesis = TdtHypothesis()
        self.jump = 0  # frames the last token's duration reaches into the next chunk (NeMo's time_jumps)
        self.decoded_frames = 0
        # Final tokens of words already given in events, compactly (an hour is ~20k tokens), and the timed tokens
        # of the word still open (a later token may continue it) with those the last step added.
        self.closed = {name: array("i") for name in ("tokens", "frames", "durations")}
        self.timings: list[TokenTiming] = []
        self.emitted_text = ""  # the text of `timings` given in final events
        self.steps = 0
        self.ended = False
        self.started = time.perf_counter()

    @property
    def audio_seconds(self) -> float:
        return (self.next_sample + len(self.received)) / self.transcriber.contract.model.sample_rate

    def push(self, samples) -> list[StreamEvent]:
        """Add mono samples (at the stream's sample rate); events for every step the audio so far completes."""
        if self.ended:
            raise UserError("the stream has ended: no audio can be pushed after end()")
        samples = np.asarray(samples, np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise UserError(f"pushed audio holds {int(np.sum(~np.isfinite(samples)))} NaN or infinite samples; "
                            "the push was dropped and the stream goes on")
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.received = np.concatenate([self.received, samples])
        events = []
        while len(self.received) > self.step_samples():  # audio beyond this step: it is not the last
            events += self.step(self.step_samples(), last=False)
        return events

    def end(self) -> list[StreamEvent]:
        """Decode what is left, as NeMo's last steps do, and close the stream."""
        if self.ended:
            raise UserError("the stream has already ended")
        if self.resampler is not None:
            self.received = np.concatenate([self.received, self.resampler.resample_chunk(np.zeros(0, np.float32),
                                                                                          last=True)])
        self.ended = True
        events = []
        while len(self.received):
            size = min(self.step_samples(), len(self.received))
            events += self.step(size, last=size == len(self.received))
        return events + [StreamEvent("end", self.final_text(), self.all_words(), self.audio_seconds, self.wall())]

    def step_samples(self) -> int:
        """Audio a step adds: chunk + right context at first, then one chunk (NeMo's right_sample - left_sample)."""
        return self.expected.chunk + (self.expected.right if self.steps == 0 else 0)

    def step(self, size: int, last: bool) -> list[StreamEvent]:
        added, self.received = self.received[:size], self.received[size:]
        self.next_sample += size
        self.steps += 1
        removed = self.context.add_frames_get_removed_(size, is_last_chunk=last, expected_context=self.expected)
        self.buffer = np.concatenate([self.buffer, added])[removed:]
        transcriber = self.transcriber
        window = transcriber.window_holding(len(self.buffer))
        encoder, valid = transcriber.encode(transcriber.padded_audio(self.buffer, window), window)
        left = self.context.left // self.frame_samples
        chunk_end = valid if last else left + self.context.chunk // self.frame_samples
        origin = self.decoded_frames - left  # the stream frame of the buffer's frame 0
        hypothesis = transcriber.decode(encoder, chunk_end, self.hypothesis, left + self.jump, final=last,
                                        window=window)
        self.timings += self.timed(hypothesis, origin)
        self.jump = hypothesis.next_frame - chunk_end
        self.decoded_frames += chunk_end - left
        self.hypothesis = hypothesis
        events = [StreamEvent("final", self.new_final_text(), self.completed_words(last), self.audio_seconds,
                              self.wall())]
        if not last and valid > chunk_end + self.jump:
            tentative = transcriber.decode(encoder, valid, hypothesis, chunk_end + self.jump, final=False,
                                           window=window)
            events.append(StreamEvent("partial", self.tentative_tail(self.timed(tentative, origin)), [],
                                      self.audio_seconds, self.wall()))
        return events

    def timed(self, hypothesis: TdtHypothesis, origin: int) -> list[TokenTiming]:
        """The hypothesis's tokens with frames counted from the start of the stream (`origin`: the stream frame of
        the window's frame 0)."""
        return self.token_timings(hypothesis.tokens, hypothesis.frames, hypothesis.durations, self.steps - 1, origin)

    def token_timings(self, tokens, frames, durations, window: int, origin: int = 0) -> list[TokenTiming]:
        seconds = self.transcriber.frame_seconds
        return [TokenTiming(token, self.transcriber.tokenizer.id_to_piece(token), window, origin + frame, duration,
                            (origin + frame) * seconds, (origin + frame + duration) * seconds)
                for token, frame, duration in zip(tokens, frames, durations)]

    def text(self, timings: list[TokenTiming]) -> str:
        return self.transcriber.tokenizer.decode([t.token_id for t in timings])

    def final_text(self) -> str:
        return self.transcriber.tokenizer.decode(self.decisions()[0])

    def new_final_text(self) -> str:
        """The final text this step added: the open tokens' text beyond what was given (pieces decoded from the open
        word's start join as in the whole text)."""
        text = self.text(self.timings)
        new, self.emitted_text = text[len(self.emitted_text):], text
        return new

    def tentative_tail(self, tentative: list[TokenTiming]) -> str:
        """The tentative tokens' text after the final text."""
        return self.text(self.timings + tentative)[len(self.text(self.timings)):]

    def completed_words(self, last: bool) -> list[WordTiming]:
        """Words completed since the last event: a word is complete once a later final token starts a new word (a
        chunk may end inside one, and punctuation joins the word before it), or at the end of the stream. Their
        tokens are closed: kept as decisions only."""
        words = self.words_of(self.timings)
        keep = 0 if last or not words else len(self.timings) - self.last_word_start()
        done = len(self.timings) - keep
        for name, values in zip(self.closed, zip(*[(t.token_id, t.frame, t.duration) for t in self.timings[:done]])):
            self.closed[name].extend(values)
        self.timings = self.timings[done:]
        self.emitted_text = self.text(self.timings)
        return words if keep == 0 else words[:-1]

    def last_word_start(self) -> int:
        starts = [i for i, t in enumerate(self.timings) if starts_word(self.transcriber.tokenizer, t.token_id)]
        return starts[-1] if starts else 0

    def words_of(self, timings: list[TokenTiming]) -> list[WordTiming]:
        return group_words(refine_punctuation(timings, self.transcriber.punctuation), self.transcriber.tokenizer)

    def all_words(self) -> list[WordTiming]:
        return self.words_of(self.token_timings(*self.decisions(), window=0))

    def decisions(self) -> tuple[list[int], list[int], list[int]]:
        """Final token ids, frames and durations so far (what a comparison with NeMo checks)."""
        return (list(self.closed["tokens"]) + [t.token_id for t in self.timings],
                list(self.closed["frames"]) + [t.frame for t in self.timings],
                list(self.closed["durations"]) + [t.duration for t in self.timings])

    def wall(self) -> float:
        return time.perf_counter() - self.started


def stream_file(transcriber, samples: np.ndarray, settings: StreamSettings = StreamSettings(),
                push_samples: int | None = None) -> tuple[Stream, list[StreamEvent]]:
    """A whole file through a Stream in pushes of `push_samples` (default: one push), and its events."""
    stream = Stream(transcriber, settings)
    size = push_samples or max(len(samples), 1)
    events = []
    for start in range(0, len(samples), size):
        events += stream.push(samples[start:start + size])
    return stream, events + stream.end()


def check_stream_settings(settings: StreamSettings) -> None:
    for name, value in (("--chunk-seconds", settings.chunk_seconds), ("--left-context-seconds", settings.left_seconds),
                        ("--right-context-seconds", settings.right_seconds)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{name} must be a finite number >= 0, got {value}")


def emission_latency(events: list[StreamEvent]) -> dict:
    """Per word of the final transcript, the audio time from its end to the first final event whose final text
    shows it at its place, and to the first event (partial or final) whose text so far shows it there: mean and
    largest, in seconds."""
    final_words = next(e for e in reversed(events) if e.kind == "end").words
    final_at, shown_at, final = {}, {}, ""
    for event in events:
        if event.kind == "end":
            break
        final += event.text if event.kind == "final" else ""
        final_words_so_far = final.split()
        shown = final_words_so_far + (event.text.split() if event.kind == "partial" else [])
        if event.kind == "partial" and event.text[:1] not in ("", " ") and final_words_so_far:
            shown = (final + event.text).split()  # the tail continues the last final word
        for index, word in enumerate(final_words[:len(shown)]):
            if shown[index] == word.word:
                shown_at.setdefault(index, event.audio_seconds)
                if index < len(final_words_so_far) and final_words_so_far[index] == word.word:
                    final_at.setdefault(index, event.audio_seconds)
    if not final_words:
        return {}
    end_seconds = events[-1].audio_seconds
    to_final = [final_at.get(i, end_seconds) - word.end for i, word in enumerate(final_words)]
    to_shown = [min(shown_at.get(i, end_seconds), final_at.get(i, end_seconds)) - word.end
                for i, word in enumerate(final_words)]
    return {"final_mean": float(np.mean(to_final)), "final_max": float(np.max(to_final)),
            "shown_mean": float(np.mean(to_shown)), "shown_max": float(np.max(to_shown))}
