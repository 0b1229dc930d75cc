"""Transcribe audio the way app code would: exported packages only, through the runtime interface.

Per window: preprocessor + encoder (or the fused mel_encoder) once; then the greedy TDT loop calls
the decoder package one token at a time with h/c fed back, and decides with one of:
- "joint": the raw joint package on the window's frames, split and argmax on the host;
- "joint_decision": the fused package on the whole (T, U=1) grid, one call per decoder state;
- "single_step": the fused single-step package on one encoder frame at a time;
- "decode_step": one call per decision: the decode-step package decides on one frame and runs the
  prediction network on the token it chose, so an emitted token costs no decoder call (the decoder
  package runs once per utterance, NeMo's start-of-sequence step).

An export with several windows (multifunction packages) runs each window of audio in the smallest
window that holds it: a 2 s file costs a 2.5 s encoder pass, not 15 s. Padding changes nothing (the
packages mask it), so the decisions are the same in any window that holds the audio.

Audio that fits the package window is one window holding the whole file: the packages reproduce
NeMo on the unpadded file there (true-end padding, masked subsampling), so the decisions are NeMo
transcribe()'s. Longer audio is decoded in chunks (`Chunking`): each window holds left context +
chunk + right context, only the chunk's encoder frames are decoded, and the TDT state carries from
chunk to chunk (h, c, last token, decoder output, and a duration that jumps past the chunk's end),
so nothing is merged as text. Frames and times count from the start of the audio.

A `token_bias` [V + 1] (a language lock, `exporters.decoding.language_lock`) is added to the token logits
before every choice: fed to the joint_decision packages, added on the host in "joint" mode.

Custom vocabulary (`exporters.decoding.fusion`: NeMo's phrase boosting tree and n-gram LM) rides along the
decoder: each decoder output is paired with the fusion models' context, started at NeMo's start-of-sequence
step and moved on by every emitted token, so it carries from chunk to chunk with the decoder state. "joint"
mode decides with it on the host (the full row of logits); the decision packages are fed its summed scores
(`fusion_scores`) and choose with NeMo's semantics themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporters.contract import FUSION_SCORES, Contract
from exporters.decoding.chunking import (Chunk, Chunking, chunk_mel_frames, plan_chunks, raw_log_mel,
                                         renormalized, samples_per_frame, utterance_statistics)
from exporters.decoding.fusion import Fusion, FusionModels, fused_decision
from exporters.decoding.language_lock import LanguageLock
from exporters.decoding.tdt import TdtHypothesis, decide_from_logits, greedy_tdt_decode
from exporters.decoding.timestamps import (TokenTiming, WordTiming, group_words, punctuation_pieces,
                                           refine_punctuation)
from exporters.errors import UserError

# Joint path → the package it decides with.
JOINT_COMPONENT = {"joint": "joint", "joint_decision": "joint_decision", "single_step": "joint_decision_single_step",
                   "decode_step": "decode_step"}
JOINT_MODES = tuple(JOINT_COMPONENT)


@dataclass(frozen=True)
class PendingContext:
    """What the last decode-step call chose and the context after it, for the loop's next predict."""

    token: int
    source_state: object  # the (h, c) it decided from
    output: tuple  # (decoder output [1, H, 1], (h, c)) after the token
    state: tuple  # that (h, c)


@dataclass(frozen=True)
class WindowPackages:
    """One window of the export and the runtimes of the packages whose shapes follow it (one function each
    of the multifunction packages)."""

    contract: Contract
    runtimes: dict


@dataclass
class Transcript:
    text: str
    tokens: list[TokenTiming] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)
    window_seconds: list[float] = field(default_factory=list)  # the window each chunk ran in

    def decisions(self) -> tuple[list[int], list[int], list[int]]:
        """Token ids, their frames and their durations: what a comparison with NeMo's hypothesis checks."""
        return ([t.token_id for t in self.tokens], [t.frame for t in self.tokens], [t.duration for t in self.tokens])

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": [t.to_dict() for t in self.tokens],
                "words": [w.to_dict() for w in self.words], "window_seconds": self.window_seconds}


def components_needed(joint_mode: str, fused_frontend: bool) -> list[str]:
    if joint_mode not in JOINT_MODES:
        raise ValueError(f"unknown joint mode {joint_mode!r}; choose one of {', '.join(JOINT_MODES)}")
    frontend = ["mel_encoder"] if fused_frontend else ["preprocessor", "encoder"]
    return [*frontend, "decoder", JOINT_COMPONENT[joint_mode]]


class Transcriber:
    """Greedy TDT transcription over components behind the runtime interface (packages or NeMo)."""

    def __init__(self, runtimes: dict, contract: Contract, tokenizer, joint_mode: str = "joint",
                 fused_frontend: bool = False, chunking: Chunking = Chunking(), token_bias: np.ndarray | None = None,
                 smaller_windows: tuple[WindowPackages, ...] = (), fusion: FusionModels | None = None):
        """`runtimes` run the contract's window; `smaller_windows` are the export's other windows."""
        missing = set(components_needed(joint_mode, fused_frontend)) - set(runtimes)
        if missing:
            raise ValueError(f"missing components for {joint_mode}: {', '.join(sorted(missing))}")
        self.fusion = fusion
        self.runtimes = runtimes
        self.contract = contract
        self.windows = sorted((*smaller_windows, WindowPackages(contract, runtimes)),
                              key=lambda window: window.contract.window_samples)
        self.joint_mode = joint_mode
        self.fused_frontend = fused_frontend
        self.chunking = chunking
        self.token_bias = None if token_bias is None else np.asarray(token_bias, np.float32)
        self.tokenizer = tokenizer
        self.punctuation = punctuation_pieces(tokenizer)
        self.pending_context: PendingContext | None = None  # decode_step mode

    @property
    def frame_samples(self) -> int:
        """Audio samples per encoder frame (hop × subsampling)."""
        return samples_per_frame(self.contract.model)

    @property
    def frame_seconds(self) -> float:
        return self.frame_samples / self.contract.model.sample_rate

    def window_for(self, chunk: Chunk) -> WindowPackages:
        """The packages of the smallest window that holds the chunk's audio (with its contexts)."""
        return self.window_holding(chunk.window_end - chunk.window_start)

    def window_holding(self, samples: int) -> WindowPackages:
        """The packages of the smallest window that holds `samples` of audio."""
        chosen = self.contract.holding(samples)
        return next(window for window in self.windows if window.contract.window == chosen.window)

    def runtime(self, name: str, window: WindowPackages):
        """A package's runtime for a window (the window-independent packages serve every window)."""
        return window.runtimes[name] if name in window.runtimes else self.runtimes[name]

    def encode(self, audio: dict, window: WindowPackages) -> tuple[np.ndarray, int]:
        """Encoder frames [1, D, T] and the number of valid frames for one window of audio."""
        if self.fused_frontend:
            encoded = self.runtime("mel_encoder", window).predict(audio)
        else:
            features = self.runtime("preprocessor", window).predict(audio)
            encoded = self.runtime("encoder", window).predict(window.contract["encoder"].pick_inputs(features))
        return encoded["encoder"], int(encoded["encoder_length"][0])

    def window_audio(self, samples: np.ndarray, chunk: Chunk, window: WindowPackages) -> dict:
        return self.padded_audio(samples[chunk.window_start:chunk.window_end], window)

    def padded_audio(self, audio: np.ndarray, window: WindowPackages) -> dict:
        """A waveform package's inputs for audio shorter than the window: zero-padded, with its true length."""
        audio_signal = np.zeros((1, window.contract.window_samples), np.float32)
        audio_signal[0, :len(audio)] = audio
        return window.contract.audio_feed(audio_signal, np.array([len(audio)], np.int32))

    def encoded_windows(self, samples: np.ndarray, chunks: list[Chunk]):
        """(chunk, window, encoder frames, valid frames) per chunk, each in the smallest window holding it.
        With several chunks and the modular front end, every window's mel is re-normalized with the whole
        utterance's statistics, as NeMo does on the long file; the fused mel_encoder normalizes each window
        on its own (an approximation)."""
        windows = [self.window_for(chunk) for chunk in chunks]
        audios = [self.window_audio(samples, chunk, window) for chunk, window in zip(chunks, windows)]
        if len(chunks) == 1 or self.fused_frontend:
            yield from ((chunk, window, *self.encode(audio, window))
                        for chunk, window, audio in zip(chunks, windows, audios))
            return
        features = [self.runtime("preprocessor", window).predict(audio) for window, audio in zip(windows, audios)]
        spec = self.contract.model
        raw_chunks = [raw_log_mel(feature)[0, :, chunk_mel_frames(chunk, int(feature["mel_length"][0]),
                                                                  spec.hop_length, spec.subsampling_factor)]
                      for chunk, feature in zip(chunks, features)]
        mean, std = utterance_statistics(raw_chunks)
        for chunk, window, feature in zip(chunks, windows, features):
            encoded = self.runtime("encoder", window).predict(renormalized(feature, mean, std))
            yield chunk, window, encoded["encoder"], int(encoded["encoder_length"][0])

    def predict(self, token: int, state):
        """One decoder step: (decoder output [1, H, 1], (h, c)). In decode_step mode the decoder output is
        ([1, H, 1], (h, c)), and a token the last decode-step call chose from `state` costs no call."""
        if self.fusion is not None:
            return self.fused_predict(token, state)
        return self.plain_predict(token, state)

    def plain_predict(self, token: int, state):
        """The decoder step alone, without the custom vocabulary's context."""
        if self.joint_mode == "decode_step":
            pending = self.pending_context
            if pending is not None and pending.token == token and pending.source_state is state:
                return pending.output, pending.state
            output, new_state = self.decoder_step(token, state)
            return (output, new_state), new_state
        return self.decoder_step(token, state)

    def fused_predict(self, token: int, state):
        """(decoder output, fusion context), (h, c, fusion context): NeMo's start-of-sequence step (state None)
        starts the fusion models, an emitted token moves them on."""
        decoder_state, context = (None, None) if state is None else state
        output, decoder_state = self.plain_predict(token, decoder_state)
        context = self.fusion.start() if context is None else self.fusion.after(context, token)
        return (output, context), (decoder_state, context)

    def decoder_step(self, token: int, state):
        """The decoder package on one token from (h, c) (None: zero state)."""
        shape = self.contract["decoder"].input("h_in").shape
        h, c = state if state is not None else (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
        out = self.runtimes["decoder"].predict(self.contract["decoder"].decoder_feed(token, h, c))
        return out["decoder"], (out["h_out"], out["c_out"])

    def decider(self, encoder: np.ndarray, window: WindowPackages):
        """decide(frame, decoder_output) for one window, backed by the chosen joint package."""
        split = self.contract.model.num_token_logits

        name = JOINT_COMPONENT[self.joint_mode]
        package, component = self.runtime(name, window), window.contract[name]
        package_bias = None if self.joint_mode == "joint" else self.token_bias

        def fusion_scores(decoder_output):
            """(decoder output, fusion scores to feed the package, or None; the fusion context, or None)."""
            if self.fusion is None:
                return decoder_output, None, None
            decoder_output, context = decoder_output
            return decoder_output, None if self.joint_mode == "joint" else context.total, context

        if self.joint_mode == "decode_step":
            def decide(frame, context):
                (decoder_output, state), fused, _ = fusion_scores(context)
                out = package.predict({**component.joint_feed(encoder[:, :, frame:frame + 1], decoder_output,
                                                              package_bias, fused),
                                       "h_in": state[0], "c_in": state[1]})
                token = int(out["token_id"][0, 0, 0])
                next_state = (out["h_out"], out["c_out"])
                self.pending_context = PendingContext(token, state, (out["decoder"], next_state), next_state)
                return token, int(out["duration"][0, 0, 0])
            return decide
        if self.joint_mode == "single_step":
            def decide(frame, decoder_output):
                decoder_output, fused, _ = fusion_scores(decoder_output)
                out = package.predict(component.joint_feed(encoder[:, :, frame:frame + 1], decoder_output,
                                                           package_bias, fused))
                return int(out["token_id"][0, 0, 0]), int(out["duration"][0, 0, 0])
            return decide

        # Grid packages score every frame for one decoder state: call once per state, reuse per frame.
        last = {"decoder_output": None, "scores": None}

        def decide(frame, decoder_output):
            decoder_output, fused, context = fusion_scores(decoder_output)
            if last["decoder_output"] is not decoder_output:
                last["decoder_output"] = decoder_output
                last["scores"] = package.predict(component.joint_feed(encoder, decoder_output, package_bias, fused))
            scores = last["scores"]
            if self.joint_mode == "joint":
                row = scores["logits"][0, frame, 0]
                if context is not None:
                    return fused_decision(row, split, context, self.token_bias)
                if self.token_bias is not None:
                    row = np.concatenate([row[:split] + self.token_bias, row[split:]])
                return decide_from_logits(row, split)
            return int(scores["token_id"][0, frame, 0]), int(scores["duration"][0, frame, 0])
        return decide

    def decode(self, encoder: np.ndarray, end: int, start: TdtHypothesis | None = None, first_frame: int = 0,
               final: bool = True, window: WindowPackages | None = None) -> TdtHypothesis:
        """Greedy TDT over one window's encoder frames first_frame..end-1, from `start`'s decoder context
        (`window`: the one the frames were encoded in; default the contract's)."""
        spec = self.contract.model
        window = window or self.windows[-1]
        return greedy_tdt_decode(end, self.predict, self.decider(encoder, window), blank_id=spec.blank_id,
                                 durations=spec.durations, max_symbols=spec.max_symbols_per_step, start=start,
                                 semantics=spec.greedy_semantics, first_frame=first_frame, final=final)

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Decode mono samples at the model's sample rate, chunk by chunk."""
        spec = self.contract.model
        timings: list[TokenTiming] = []
        window_seconds: list[float] = []
        hypothesis = TdtHypothesis()
        chunks = plan_chunks(len(samples), self.contract.window_samples, self.frame_samples, spec.sample_rate,
                             self.chunking)
        for chunk, window, encoder, valid_frames in self.encoded_windows(samples, chunks):
            window_seconds.append(window.contract.window_samples / spec.sample_rate)
            origin = chunk.window_start // self.frame_samples  # the window's frame 0, in utterance frames
            end = valid_frames if chunk.final else chunk.end_frame - origin
            hypothesis = self.decode(encoder, end, hypothesis, hypothesis.next_frame - origin, chunk.final, window)
            timings += [TokenTiming(token, self.tokenizer.id_to_piece(token), chunk.index, origin + frame, duration,
                                    (origin + frame) * self.frame_seconds,
                                    (origin + frame + duration) * self.frame_seconds)
                        for token, frame, duration in zip(hypothesis.tokens, hypothesis.frames, hypothesis.durations)]
            hypothesis.next_frame += origin
        timings = refine_punctuation(timings, self.punctuation)
        return Transcript(self.tokenizer.decode([t.token_id for t in timings]), timings,
                          group_words(timings, self.tokenizer), window_seconds)


def default_joint_mode(components) -> str:
    """The first joint mode whose package the export holds (a FluidAudio layout has the single step only)."""
    return next(mode for mode, name in JOINT_COMPONENT.items() if name in components)


def open_transcriber(packages_dir: Path, backend: str | None = None, joint_mode: str | None = None,
                     fused_frontend: bool = False, chunking: Chunking = Chunking(),
                     lock: LanguageLock | None = None, model_source: str | None = None,
                     mapping: dict | None = None, fusion: Fusion | None = None) -> Transcriber:
    """A Transcriber over the packages in a directory: this tool's export (metadata.json says which model), or
    any other converter's with `model_source`, the checkpoint they came from (its tokenizer decodes); `lock`
    restricts its tokens (by script or list), `fusion` adds custom vocabulary."""
    from exporters.export_view import open_export

    view = open_export(packages_dir, model_source, mapping)
    return view_transcriber(view, backend, joint_mode, fused_frontend, chunking, lock, fusion=fusion)


def decoding_components(view, joint_mode: str | None, fused_frontend: bool, command: str) -> tuple[str, tuple]:
    """The joint mode (default: the export's first) and the packages it needs, which the export must hold."""
    judged, packages_dir = view.judged, view.directory
    if not any(name in judged for name in JOINT_COMPONENT.values()):
        raise UserError(f"{command} needs a joint package to decide with; {packages_dir} holds "
                        f"{', '.join(judged) or 'none'}")
    joint_mode = joint_mode or default_joint_mode(judged)
    needed = components_needed(joint_mode, fused_frontend)
    if missing := [name for name in needed if name not in judged]:
        raise UserError(f"{command} with joint mode {joint_mode}{' and the fused front end' if fused_frontend else ''} "
                        f"needs {', '.join(needed)}; {packages_dir} lacks {', '.join(missing)} "
                        f"(it holds {', '.join(judged)})")
    return joint_mode, needed


def view_transcriber(view, backend: str | None = None, joint_mode: str | None = None, fused_frontend: bool = False,
                     chunking: Chunking = Chunking(), lock: LanguageLock | None = None,
                     command: str = "transcribe", fusion: Fusion | None = None) -> Transcriber:
    """A Transcriber over the packages of an ExportView (any export directory); `command` names what needs it in
    the error an export without the packages gets."""
    contract = view.contract
    joint_mode, needed = decoding_components(view, joint_mode, fused_frontend, command)
    runtimes = {name: view.open(name, backend) for name in needed}
    smaller = tuple(WindowPackages(window, {name: view.open(name, backend, function=window.function_name)
                                            for name in needed if window[name].windowed})
                    for window in contract.window_contracts()[:-1])
    tokenizer = view.tokenizer()
    bias = None if lock is None else lock.bias(tokenizer, contract.model.num_token_logits)
    if fusion is not None and joint_mode != "joint" and not view.takes(JOINT_COMPONENT[joint_mode], FUSION_SCORES):
        raise UserError(f"custom vocabulary (phrase boosting, LM) needs --joint-mode joint with this export: its "
                        f"{view.packages[JOINT_COMPONENT[joint_mode]].path.name} takes no {FUSION_SCORES}")
    models = None if fusion is None else fusion.models(view.nemo_tokenizer(), contract.model.vocab_size)
    return Transcriber(runtimes, contract, tokenizer, joint_mode, fused_frontend, chunking, bias, smaller, models)
