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
                         scale=gate.audio_scale(name, output, audio_signal, audio_length)) for output in expected]


def encoder_gate(gate: GateContext, package: Runtime, case: str, audio_signal: np.ndarray,
                 audio_length: np.ndarray) -> list[Diff]:
    """encoder on NeMo's own mel features of a clip (window-padded with zeros, as the preprocessor gives)."""
    mel = gate.contract["encoder"].pick_inputs(gate.reference("preprocessor").predict(
        gate.contract.audio_feed(audio_signal, audio_length)))
    expected = gate.reference("encoder").predict(mel)
    actual = package.predict(mel)
    valid_encoder_frames(expected, actual)
    return [gate.compare("encoder", output, case, expected[output], actual[output]) for output in expected]


def chain_decoder(package: Runtime, contract: Contract, tokens, h=None, c=None):
    """Feed tokens one at a time, h/c fed back: stacked outputs [U, H] and the final h, c."""
    state_shape = contract["decoder"].input("h_in").shape
    h = np.zeros(state_shape, np.float32) if h is None else h
    c = np.zeros(state_shape, np.float32) if c is None else c
    outputs = []
    for token in tokens:
        step = package.predict({"targets": np.array([[token]], np.int32),
                                "target_length": np.array([1], np.int32), "h_in": h, "c_in": c})
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
    inputs = {"targets": np.array([[token]], np.int32), "target_length": np.array([1], np.int32),
              "h_in": h.astype(np.float32), "c_in": c.astype(np.float32)}
    expected = gate.reference("decoder").predict(inputs)
    actual = package.predict(inputs)
    return [gate.compare("decoder", output, case, expected[output], actual[output]) for output in expected]


def joint_grid_inputs(model, contract: Contract, audio_signal, audio_length, tokens) -> tuple[np.ndarray, list]:
    """NeMo's encoder output for a clip and NeMo's decoder outputs for blank + tokens (the U axis)."""
    with torch.no_grad():
        encoded, _ = COMPONENTS["mel_encoder"].reference(model.eval(), contract)(
            torch.from_numpy(audio_signal), torch.from_numpy(audio_length))
    blank = contract.model.blank_id
    sequence, _, _ = nemo_decoder_sequence(model, np.array([blank, *tokens]))
    return encoded.numpy(), [sequence[u][None, :, None].astype(np.float32) for u in range(len(sequence))]


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


def joint_decision_gate(gate: GateContext, name: str, package: Runtime, case: str, encoder: np.ndarray,
                        decoder_steps: list[np.ndarray], token_bias: np.ndarray | None = None) -> list[Diff]:
    """token_id, duration and top_k_ids equal NeMo's choices where NeMo's margins are clear; token_prob and
    top_k_logits within tolerance. With `token_bias`, it is fed to the package and added to NeMo's token
    logits before NeMo's choices; without, the package's default applies.

    The grid is (T, U); the single-step package is called once per encoder frame.
    """
    contract = gate.contract
    component = contract[name]
    frames = component.inputs[0].shape[-1]
    split = contract.model.num_token_logits
    bias = None if token_bias is None else torch.from_numpy(token_bias)
    expected, actual = {o: [] for o in DECISION_OUTPUTS}, {o: [] for o in DECISION_OUTPUTS}
    margins = {"token_id": [], "duration": [], "top_k_ids": []}
    for decoder in decoder_steps:
        for start in range(0, encoder.shape[-1], frames):
            window = encoder[:, :, start:start + frames]
            with torch.no_grad():
                logits = nemo_joint_logits(gate.model, torch.from_numpy(window), torch.from_numpy(decoder))
            for output, value in zip(DECISION_OUTPUTS, decisions_from_logits(logits, split, contract.top_k, bias)):
                expected[output].append(value.numpy())
            for output, value in package.predict(component.joint_feed(window, decoder, token_bias)).items():
                actual[output].append(value)
            token_logits = logits[..., :split].numpy() + (0 if token_bias is None else token_bias)
            margins["token_id"].append(top1_margin(token_logits))
            margins["duration"].append(top1_margin(logits[..., split:].numpy()))
            margins["top_k_ids"].append(rank_margins(token_logits, contract.top_k))
    joined = {o: np.concatenate(v, axis=1) for o, v in margins.items()}
    return [gate.compare(name, o, case, np.concatenate(expected[o], axis=1), np.concatenate(actual[o], axis=1),
                         joined.get(o))
            for o in DECISION_OUTPUTS]


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
