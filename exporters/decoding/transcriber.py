"""Transcribe audio the way app code would: exported packages only, through the runtime interface.

Per 15 s window: preprocessor + encoder (or the fused mel_encoder) once; then the greedy TDT loop
calls the decoder package one token at a time with h/c fed back, and decides with one of:
- "joint": the raw joint package on the window's frames, split and argmax on the host;
- "joint_decision": the fused package on the whole (T, U=1) grid, one call per decoder state;
- "single_step": the fused single-step package on one encoder frame at a time.

Windows: audio longer than one window is cut into consecutive windows (the last zero-padded, its
true length passed). The decoder state, last token and its decoder output carry across a seam;
time restarts at frame 0 of the next window, so a duration that jumps past a window's end is not
carried over (NeMo decoding one long utterance would instead land that jump inside the next frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporters.contract import Contract, contract_from_metadata
from exporters.decoding.tdt import TdtHypothesis, decide_from_logits, greedy_tdt_decode
from exporters.decoding.timestamps import (TokenTiming, WordTiming, group_words, punctuation_pieces,
                                           refine_punctuation)
from exporters.metadata import read_metadata
from exporters.runtime import load

# Joint path → the package it decides with.
JOINT_COMPONENT = {"joint": "joint", "joint_decision": "joint_decision", "single_step": "joint_decision_single_step"}
JOINT_MODES = tuple(JOINT_COMPONENT)


@dataclass
class Transcript:
    text: str
    tokens: list[TokenTiming] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": [t.to_dict() for t in self.tokens],
                "words": [w.to_dict() for w in self.words]}


def components_needed(joint_mode: str, fused_frontend: bool) -> list[str]:
    if joint_mode not in JOINT_MODES:
        raise ValueError(f"unknown joint mode {joint_mode!r}; choose one of {', '.join(JOINT_MODES)}")
    frontend = ["mel_encoder"] if fused_frontend else ["preprocessor", "encoder"]
    return [*frontend, "decoder", JOINT_COMPONENT[joint_mode]]


class Transcriber:
    """Greedy TDT transcription over components behind the runtime interface (packages or NeMo)."""

    def __init__(self, runtimes: dict, contract: Contract, tokenizer, joint_mode: str = "joint",
                 fused_frontend: bool = False):
        missing = set(components_needed(joint_mode, fused_frontend)) - set(runtimes)
        if missing:
            raise ValueError(f"missing components for {joint_mode}: {', '.join(sorted(missing))}")
        self.runtimes = runtimes
        self.contract = contract
        self.joint_mode = joint_mode
        self.fused_frontend = fused_frontend
        self.tokenizer = tokenizer
        self.punctuation = punctuation_pieces(tokenizer)

    @property
    def frame_seconds(self) -> float:
        spec = self.contract.model
        return spec.subsampling_factor * spec.hop_length / spec.sample_rate

    def encode(self, audio_signal: np.ndarray, audio_length: np.ndarray) -> tuple[np.ndarray, int]:
        """Encoder frames [1, D, T] and the number of valid frames for one window."""
        audio = {"audio_signal": audio_signal, "audio_length": audio_length}
        if self.fused_frontend:
            encoded = self.runtimes["mel_encoder"].predict(audio)
        else:
            encoded = self.runtimes["encoder"].predict(self.runtimes["preprocessor"].predict(audio))
        return encoded["encoder"], int(encoded["encoder_length"][0])

    def predict(self, token: int, state):
        """One decoder step: (decoder output [1, H, 1], (h, c))."""
        shape = self.contract["decoder"].input("h_in").shape
        h, c = state if state is not None else (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
        out = self.runtimes["decoder"].predict({"targets": np.array([[token]], np.int32),
                                                "target_length": np.array([1], np.int32), "h_in": h, "c_in": c})
        return out["decoder"], (out["h_out"], out["c_out"])

    def decider(self, encoder: np.ndarray):
        """decide(frame, decoder_output) for one window, backed by the chosen joint package."""
        split = self.contract.model.num_token_logits

        if self.joint_mode == "single_step":
            package = self.runtimes[JOINT_COMPONENT["single_step"]]

            def decide(frame, decoder_output):
                out = package.predict({"encoder": encoder[:, :, frame:frame + 1], "decoder": decoder_output})
                return int(out["token_id"][0, 0, 0]), int(out["duration"][0, 0, 0])
            return decide

        # Grid packages score every frame for one decoder state: call once per state, reuse per frame.
        package = self.runtimes[JOINT_COMPONENT[self.joint_mode]]
        last = {"decoder_output": None, "scores": None}

        def decide(frame, decoder_output):
            if last["decoder_output"] is not decoder_output:
                last["decoder_output"] = decoder_output
                last["scores"] = package.predict({"encoder": encoder, "decoder": decoder_output})
            scores = last["scores"]
            if self.joint_mode == "joint":
                return decide_from_logits(scores["logits"][0, frame, 0], split)
            return int(scores["token_id"][0, frame, 0]), int(scores["duration"][0, frame, 0])
        return decide

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Decode mono samples at the model's sample rate, window by window."""
        spec = self.contract.model
        window = self.contract.window_samples
        timings: list[TokenTiming] = []
        hypothesis: TdtHypothesis | None = None
        for index, start in enumerate(range(0, max(len(samples), 1), window)):
            chunk = samples[start:start + window]
            audio_signal = np.zeros((1, window), np.float32)
            audio_signal[0, :len(chunk)] = chunk
            encoder, frames = self.encode(audio_signal, np.array([len(chunk)], np.int32))
            hypothesis = greedy_tdt_decode(frames, self.predict, self.decider(encoder), blank_id=spec.blank_id,
                                           durations=spec.durations, max_symbols=spec.max_symbols_per_step,
                                           start=hypothesis, semantics=spec.greedy_semantics)
            offset = start / spec.sample_rate
            timings += [TokenTiming(token, self.tokenizer.id_to_piece(token), index, frame, duration,
                                    offset + frame * self.frame_seconds, offset + (frame + duration) * self.frame_seconds)
                        for token, frame, duration in zip(hypothesis.tokens, hypothesis.frames, hypothesis.durations)]
        timings = refine_punctuation(timings, self.punctuation)
        return Transcript(self.tokenizer.decode([t.token_id for t in timings]), timings,
                          group_words(timings, self.tokenizer))


def open_transcriber(packages_dir: Path, backend: str | None = None, joint_mode: str = "joint",
                     fused_frontend: bool = False) -> Transcriber:
    """A Transcriber over the exported packages in a directory (metadata.json says which model)."""
    import sentencepiece as spm

    metadata = read_metadata(packages_dir)
    contract = contract_from_metadata(metadata)
    runtimes = {name: load(Path(packages_dir) / contract[name].package_name, backend)
                for name in components_needed(joint_mode, fused_frontend)}
    tokenizer = spm.SentencePieceProcessor(model_file=str(Path(packages_dir) / metadata["tokenizer"]))
    return Transcriber(runtimes, contract, tokenizer, joint_mode, fused_frontend)
