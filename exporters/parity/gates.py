"""Parity gates: each component's package against NeMo's own modules on identical inputs.

A gate takes a `GateContext` (NeMo's model, the contract, the precision and the tolerance table) and
returns a list of `Diff`s (one per output and case); the tests assert them and the `compare` CLI
tabulates them, so there is one implementation of every comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from exporters.contract import Contract
from exporters.parity.diff import Diff, ParityError, Tolerance, compare, rank_margins, tolerance, top1_margin
from exporters.components import COMPONENTS
from exporters.components.joint import nemo_joint_logits
from exporters.components.joint_decision import decisions_from_logits
from exporters.reference import nemo_decoder_sequence, nemo_front_end_conditioning, nemo_mel_scale, nemo_runtime
from exporters.runtime import Runtime

DECISION_OUTPUTS = ("token_id", "token_prob", "duration", "top_k_ids", "top_k_logits")
# How each tolerance `scale` kind is computed from NeMo on the clip.
AUDIO_SCALES = {"per_feature_std": nemo_mel_scale, "front_end_conditioning": nemo_front_end_conditioning}


@dataclass(frozen=True)
class GateContext:
    """What every gate compares against, and under which tolerances."""

    model: object
    contract: Contract
    precision: str
    tolerances: dict[tuple[str, str, str], Tolerance] | None = None  # None: exporters/tolerances.toml
    compressed: dict[str, str] = field(default_factory=dict)  # component -> compression variant

    def row(self, component: str) -> str:
        """The tolerance row a component is judged by: its compression variant if compressed (one row set
        for both precisions), else its precision."""
        return self.compressed.get(component) or self.precision

    def compare(self, component: str, output: str, case: str, expected: np.ndarray, actual: np.ndarray,
                margins: np.ndarray | None = None, scale: np.ndarray | None = None) -> Diff:
        return compare(component, output, self.row(component), case, expected, actual, margins, scale,
                       self.tolerances)

    def reference(self, name: str):
        return nemo_runtime(self.model, self.contract, name)

    def audio_scale(self, component: str, output: str, audio_signal: np.ndarray,
                    audio_length: np.ndarray) -> np.ndarray | None:
        """The scale a waveform-input output's tolerance is measured in (None if unscaled)."""
        kind = tolerance(component, self.row(component), output, self.tolerances).scale
        return None if kind is None else AUDIO_SCALES[kind](self.model, audio_signal, audio_length)


def judged(expected: dict, actual: dict) -> list[str]:
    """The outputs both sides give, in NeMo's order (a package of another converter may leave some out)."""
    return [output for output in expected if output in actual]


def decision_outputs(step: dict) -> tuple[str, ...]:
    """The decision outputs a package gives (top-K and token_prob may be left out by another converter)."""
    return tuple(output for output in DECISION_OUTPUTS if output in step)


def valid_encoder_frames(expected: dict, actual: dict) -> None:
    """Keep encoder frames up to NeMo's encoder_length on both sides: past it, output is unspecified."""
    if "encoder" in expected:
        frames = int(expected["encoder_length"][0])
        expected["encoder"] = expected["encoder"][..., :frames]
        actual["encoder"] = actual["encoder"][..., :frames]


def audio_gate(gate: GateContext, name: str, package: Runtime, case: str, audio_signal: np.ndarray,
               audio_length: np.ndarray) -> list[Diff]:
    """preprocessor or mel_encoder: waveform in (a zero-padded [1, S] window, fed in the contract's layout),
    compared output by output."""
    inputs = gate.contract.audio_feed(audio_signal, audio_length)
    expected = gate.reference(name).predict(inputs)
    actual = package.predict(inputs)
    valid_encoder_frames(expected, actual)
    return [gate.compare(name, output, case, expected[output], actual[output],
                         scale=gate.audio_scale(name, output, audio_signal, audio_length)) for output in judged(expected, actual)]


def encoder_gate(gate: GateContext, package: Runtime, case: str, audio_signal: np.ndarray,
                 audio_length: np.ndarray) -> list[Diff]:
    """encoder on NeMo's own mel features of a clip (window-padded with zeros, as the preprocessor gives)."""
    mel, expected = nemo_mel_and_encoded(gate.model, gate.contract, audio_signal, audio_length)
    actual = package.predict(mel)
    valid_encoder_frames(expected, actual)
    return [gate.compare("encoder", output, case, expected[output], actual[output])
            for output in judged(expected, actual)]


def nemo_mel_and_encoded(model, contract: Contract, audio_signal: np.ndarray,
                         audio_length: np.ndarray) -> tuple[dict, dict]:
    """NeMo's preprocessor output for a clip as the encoder's inputs, and NeMo's encoder outputs on them
    (remembered: the encoder and joint gates of a clip share them)."""
    mel = contract["encoder"].pick_inputs(nemo_runtime(model, contract, "preprocessor").predict(
        contract.audio_feed(audio_signal, audio_length)))
    return mel, nemo_runtime(model, contract, "encoder").predict(mel)


def chain_decoder(package: Runtime, contract: Contract, tokens, h=None, c=None):
    """Feed tokens one at a time, h/c fed back: stacked outputs [U, H] and the final h, c."""
    state_shape = contract["decoder"].input("h_in").shape
    h = np.zeros(state_shape, np.float32) if h is None else h
    c = np.zeros(state_shape, np.float32) if c is None else c
    outputs = []
    for token in tokens:
        step = package.predict(contract["decoder"].decoder_feed(token, h, c))
        outputs.append(step["decoder"][0, :, 0])
        h, c = step["h_out"], step["c_out"]
    return np.stack(outputs), h, c


def decoder_gate(gate: GateContext, package: Runtime, case: str, tokens: np.ndarray) -> list[Diff]:
    """Tokens chained through the package from zero state vs NeMo's prediction network over the sequence."""
    actual = chain_decoder(package, gate.contract, tokens)
    expected = nemo_decoder_sequence(gate.model, tokens)
    return [gate.compare("decoder", output, case, e, a)
            for output, e, a in zip(("decoder", "h_out", "c_out"), expected, actual)]


def decoder_state_gate(gate: GateContext, package: Runtime, case: str, token: int, h: np.ndarray,
                       c: np.ndarray) -> list[Diff]:
    """One step from an arbitrary state: package vs NeMo's predict with that state."""
    inputs = gate.contract["decoder"].decoder_feed(token, h.astype(np.float32), c.astype(np.float32))
    expected = gate.reference("decoder").predict(inputs)
    actual = package.predict(inputs)
    return [gate.compare("decoder", output, case, expected[output], actual[output]) for output in expected]


def joint_grid_inputs(model, contract: Contract, audio_signal, audio_length, tokens) -> tuple[np.ndarray, list]:
    """NeMo's encoder output for a clip and NeMo's decoder outputs for blank + tokens (the U axis)."""
    _, encoded = nemo_mel_and_encoded(model, contract, audio_signal, audio_length)
    blank = contract.model.blank_id
    sequence, _, _ = nemo_decoder_sequence(model, np.array([blank, *tokens]))
    return encoded["encoder"], [sequence[u][None, :, None].astype(np.float32) for u in range(len(sequence))]


def joint_gate(gate: GateContext, package: Runtime, case: str, encoder: np.ndarray,
               decoder_steps: list[np.ndarray]) -> list[Diff]:
    """Logits on the (T, U) grid; token and duration logits measured separately."""
    reference = gate.reference("joint")
    expected = np.concatenate([reference.predict({"encoder": encoder, "decoder": d})["logits"]
                               for d in decoder_steps], axis=2)
    actual = np.concatenate([package.predict({"encoder": encoder, "decoder": d})["logits"]
                             for d in decoder_steps], axis=2)
    split = gate.contract.model.num_token_logits
    return [gate.compare("joint", "token_logits", case, expected[..., :split], actual[..., :split]),
            gate.compare("joint", "duration_logits", case, expected[..., split:], actual[..., split:])]


def nemo_decisions(gate: GateContext, encoder: np.ndarray, decoder: np.ndarray, token_bias: np.ndarray | None,
                   fusion_scores: np.ndarray | None = None) -> tuple[dict, dict]:
    """NeMo's choices on every frame of `encoder` for one decoder output, each [1, T, 1(, K)], and the
    margins the decision rows are judged by (token_bias added to NeMo's token logits first; with fusion_scores,
    a token's label is also judged by the margin of its fused choice)."""
    split = gate.contract.model.num_token_logits
    with torch.no_grad():
        logits = nemo_joint_logits(gate.model, torch.from_numpy(encoder), torch.from_numpy(decoder))
    bias, fusion = (None if value is None else torch.from_numpy(value) for value in (token_bias, fusion_scores))
    expected = {output: value.numpy() for output, value in
                zip(DECISION_OUTPUTS, decisions_from_logits(logits, split, gate.contract.top_k, bias, fusion))}
    token_logits = logits[..., :split].numpy() + (0 if token_bias is None else token_bias)
    token_margin = top1_margin(token_logits)
    if fusion_scores is not None:
        token_margin = np.minimum(token_margin, top1_margin(token_logits[..., :-1] + fusion_scores))
    margins = {"token_id": token_margin, "duration": top1_margin(logits[..., split:].numpy()),
               "top_k_ids": rank_margins(token_logits, gate.contract.top_k)}
    return expected, margins


def joint_decision_gate(gate: GateContext, name: str, package: Runtime, case: str, encoder: np.ndarray,
                        decoder_steps: list[np.ndarray], token_bias: np.ndarray | None = None,
                        fusion_scores: np.ndarray | None = None) -> list[Diff]:
    """token_id, duration and top_k_ids equal NeMo's choices where NeMo's margins are clear; token_prob and
    top_k_logits within tolerance. With `token_bias`, it is fed to the package and added to NeMo's token
    logits before NeMo's choices; without, the package's default applies. `fusion_scores` likewise, a
    token relabelled as NeMo's fusion does.

    The grid is (T, U); the single-step package is called once per encoder frame.
    """
    component = gate.contract[name]
    frames = component.inputs[0].shape[-1]
    expected, actual, margins = [], [], []
    for decoder in decoder_steps:
        nemo, margin = nemo_decisions(gate, encoder, decoder, token_bias, fusion_scores)
        expected.append(nemo)
        margins.append(margin)
        steps = [package.predict(component.joint_feed(encoder[:, :, start:start + frames], decoder, token_bias,
                                                      fusion_scores))
                 for start in range(0, encoder.shape[-1], frames)]
        actual.append({output: np.concatenate([step[output] for step in steps], axis=1)
                       for output in decision_outputs(steps[0])})
    return compare_decisions(gate, name, case, expected, actual, margins)


def compare_decisions(gate: GateContext, name: str, case: str, expected: list[dict], actual: list[dict],
                      margins: list[dict]) -> list[Diff]:
    """Every decision output, the per-decoder-step pieces joined along frames; decision rows by NeMo's margins."""
    return [gate.compare(name, output, case, *joined(expected, actual, output, axis=1),
                         np.concatenate([m[output] for m in margins], axis=1) if output in margins[0] else None)
            for output in decision_outputs(actual[0])]


def joined(expected: list[dict], actual: list[dict], output: str, axis: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([e[output] for e in expected], axis=axis),
            np.concatenate([a[output] for a in actual], axis=axis))


def nemo_decoder_contexts(gate: GateContext, tokens: np.ndarray) -> list[dict]:
    """NeMo's context (decoder output, h, c) after its start-of-sequence step (blank from zero state) and
    after each of `tokens` in turn: what a greedy loop carries into each decision."""
    reference = gate.reference("decoder")
    shape = gate.contract["decoder"].input("h_in").shape
    h, c = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    contexts = []
    for token in [gate.contract.model.blank_id, *tokens]:
        out = reference.predict(gate.contract["decoder"].decoder_feed(token, h, c))
        h, c = out["h_out"], out["c_out"]
        contexts.append({"decoder_step": out["decoder"], "h_in": h, "c_in": c})
    return contexts


def decode_step_gate(gate: GateContext, name: str, package: Runtime, case: str, encoder: np.ndarray,
                     contexts: list[dict], token_bias: np.ndarray | None = None,
                     fusion_scores: np.ndarray | None = None) -> list[Diff]:
    """One call per (context, encoder frame): the decision rows as joint_decision's against NeMo's choices,
    and the context it returns against NeMo's predict of the token the package chose from that context
    (the context unchanged when it chose blank)."""
    component = gate.contract[name]
    predict = gate.reference("decoder")
    blank = gate.contract.model.blank_id
    carried = ("decoder", "h_out", "c_out")
    expected, actual, margins, next_expected, next_actual = [], [], [], [], []
    for context in contexts:
        nemo, margin = nemo_decisions(gate, encoder, context["decoder_step"], token_bias, fusion_scores)
        expected.append(nemo)
        margins.append(margin)
        predicted = {}
        steps = []
        for frame in range(encoder.shape[-1]):
            feed = {**component.joint_feed(encoder[:, :, frame:frame + 1], context["decoder_step"], token_bias,
                                           fusion_scores),
                    "h_in": context["h_in"], "c_in": context["c_in"]}
            step = package.predict(feed)
            steps.append(step)
            token = int(step["token_id"].reshape(()))
            if token not in predicted:
                out = predict.predict(gate.contract["decoder"].decoder_feed(token, context["h_in"], context["c_in"]))
                kept = (context["decoder_step"], context["h_in"], context["c_in"])
                predicted[token] = dict(zip(carried, kept if token == blank else (out[o] for o in carried)))
            next_expected.append(predicted[token])
            next_actual.append({output: step[output] for output in carried})
        actual.append({output: np.concatenate([step[output] for step in steps], axis=1)
                       for output in decision_outputs(steps[0])})
    decisions = compare_decisions(gate, name, case, expected, actual, margins)
    axes = {"decoder": 2, "h_out": 1, "c_out": 1}
    return decisions + [gate.compare(name, output, case, *joined(next_expected, next_actual, output, axes[output]))
                        for output in carried]


@dataclass
class Clip:
    """One case every gate of a clip runs on: the audio and a non-blank token sequence."""

    case: str
    audio_signal: np.ndarray
    audio_length: np.ndarray
    tokens: np.ndarray
    _grid: tuple | None = field(default=None, repr=False)

    @property
    def audio(self) -> tuple[np.ndarray, np.ndarray]:
        return self.audio_signal, self.audio_length

    def contexts(self, gate: GateContext) -> tuple[np.ndarray, list[dict]]:
        """NeMo's encoder frames of the clip and NeMo's decoder contexts after the start and the first 3 tokens."""
        return self.grid(gate)[0], nemo_decoder_contexts(gate, self.tokens[:3])

    def grid(self, gate: GateContext) -> tuple[np.ndarray, list[np.ndarray]]:
        """NeMo's encoder frames of the clip and its decoder steps for blank + the first 3 tokens (made once)."""
        if self._grid is None:
            self._grid = joint_grid_inputs(gate.model, gate.contract, *self.audio, self.tokens[:3])
        return self._grid


def decoder_gates(gate: GateContext, package: Runtime, clip: Clip) -> list[Diff]:
    """The token sequence, and blank from zero state (the first call of every decoding)."""
    blank = np.array([gate.contract.model.blank_id], np.int32)
    return (decoder_gate(gate, package, "non-blank sequence", clip.tokens)
            + decoder_gate(gate, package, "blank start", blank))


# Gate kind (a component's `gate`) -> how it runs on a clip: (context, component name, package, clip).
GATES = {
    "audio": lambda gate, name, package, clip: audio_gate(gate, name, package, clip.case, *clip.audio),
    "encoder": lambda gate, name, package, clip: encoder_gate(gate, package, clip.case, *clip.audio),
    "decoder": lambda gate, name, package, clip: decoder_gates(gate, package, clip),
    "joint": lambda gate, name, package, clip: joint_gate(gate, package, clip.case, *clip.grid(gate)),
    "joint_decision": lambda gate, name, package, clip: joint_decision_gate(gate, name, package, clip.case,
                                                                            *clip.grid(gate)),
    "decode_step": lambda gate, name, package, clip: decode_step_gate(gate, name, package, clip.case,
                                                                      *clip.contexts(gate)),
}


def clip_gates(gate: GateContext, open_package, case: str, audio_signal: np.ndarray, audio_length: np.ndarray,
               tokens: np.ndarray, components) -> list[Diff]:
    """Every gate of the given components on one clip and one non-blank token sequence."""
    if unknown := [name for name in components if name not in COMPONENTS]:
        raise ParityError(f"no parity gate for component {', '.join(map(repr, unknown))}")
    clip = Clip(case, audio_signal, audio_length, tokens)
    return [diff for name in components for diff in GATES[COMPONENTS[name].gate](gate, name, open_package(name), clip)]


def default_tokens(contract: Contract) -> np.ndarray:
    """A fixed non-blank target sequence covering low, middle and high token ids."""
    vocab = contract.model.vocab_size
    return np.array([0, 1, vocab // 2, vocab - 1, 7 % vocab, vocab // 3, 2, vocab - 2], dtype=np.int32)
