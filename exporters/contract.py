"""The I/O contract: every component's ordered inputs and outputs, derived from the inspected model.

This is the single source of truth for names, shapes and dtypes. Exporters declare their Core ML
tensors from it, contract tests check packages against it, and metadata.json is written from it.

Layout decisions (made once, here):
- Batch is always 1 and always the leading axis.
- Features before time, as NeMo lays them out: mel `[1, n_mels, M]`, encoder `[1, D, T]`,
  decoder `[1, H, U]`. The joint packages take these layouts directly, so app code never transposes.
- The decoder streams one token per call (U = 1); LSTM state is `[layers, 1, hidden]` in and out.
- Joint logits are `[1, T, U, V + 1 + len(durations)]`: V + 1 raw token logits (blank = V) followed by
  the raw duration logits; no softmax is applied (NeMo's decisions are argmaxes, unchanged by it).
- joint_decision returns `token_id` over V + 1 (blank = V), `token_prob` (softmax over the V + 1 token
  logits at token_id), `duration` as the argmax *index* into the durations list, and the K best token
  logits with their ids, best first (`top_k_ids`, `top_k_logits`; K = `top_k`, default 8).
- joint_decision takes an optional `token_bias` [V + 1], added to the token logits before every choice
  (argmax, softmax, top-K): a language lock puts a large negative number on the tokens it forbids.
  Left out, it is zero (Core ML fills the declared default).
- The decision packages also take an optional `fusion_scores` [V] (custom vocabulary: NeMo's boosting tree and
  n-gram LM scores × alpha, summed): when the choice on the (biased) V + 1 token logits is a token, the label is
  the argmax of the V non-blank logits plus these scores; blank stays blank, the duration, `token_prob` and
  top-K are those of the logits without them. Left out, it is zero and the choice is the plain argmax.
- The single-step joint_decision names its inputs `encoder_step` / `decoder_step`, as FluidAudio's
  JointDecisionv3 does (a streaming loop feeds it one encoder frame and one decoder step).
- decode_step is the single step plus the prediction network on the chosen token: it takes the carried
  context (`decoder_step`, `h_in`, `c_in`) and returns the next one (`decoder`, `h_out`, `c_out`,
  unchanged after blank), so a greedy loop makes one call per decision.
- Lengths are int32 `[1]`.
- The waveform is framed: `audio_signal` is `[1, S / hop, hop]`, sample r·hop + c at `[0, r, c]` (a plain
  reshape of the zero-padded `[1, S]` window), so no tensor in any package has a dimension over the
  Neural Engine's 16384. A layout whose runtime feeds a flat `[1, S]` (FluidAudio) keeps that shape.
- The preprocessor also returns the per-feature mean and std it normalized with, `[1, n_mels, 1]`,
  so a host decoding long audio in windows can renormalize with the whole utterance's statistics.
- An export may hold several fixed windows (e.g. 2.5, 5, 10 and 15 s). The packages whose shapes follow
  the window (`windowed`) are then multifunction packages with one function per window, named
  `window_<milliseconds>ms`, sharing one copy of the weights; the largest window is the default function.
  The decoder-side packages do not depend on the window and stay single-function.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, replace

import numpy as np

from exporters.errors import UserError
from exporters.inspect_model import ModelSpec
from exporters.layouts import DEFAULT_LAYOUT, Layout, layout_named
from exporters.tensors import FP32, INT32, TensorSpec

WINDOW_SECONDS = 15.0
DECODER_STEPS = 1
DEFAULT_TOP_K = 8

# The Neural Engine compiler rejects a tensor with a larger dimension (the whole package then runs on CPU/GPU).
NEURAL_ENGINE_MAX_DIMENSION = 16384
TOKEN_BIAS = "token_bias"
FUSION_SCORES = "fusion_scores"


@dataclass(frozen=True)
class Window:
    """One fixed input length and the frame counts NeMo's length rules give it."""

    samples: int
    mel_frames: int
    encoder_frames: int

    def function_name(self, sample_rate: int) -> str:
        """Its function's name in a multifunction package."""
        return f"window_{round(self.samples * 1000 / sample_rate)}ms"

    def to_dict(self, sample_rate: int) -> dict:
        return {"window_seconds": self.samples / sample_rate, "window_samples": self.samples,
                "mel_frames": self.mel_frames, "encoder_frames": self.encoder_frames,
                "function": self.function_name(sample_rate)}


@dataclass(frozen=True)
class ComponentContract:
    """Ordered inputs and outputs of one exported package."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    waveform_input: bool = False
    package_stem: str = ""
    windowed: bool = False  # its shapes follow the window: one function per window in a multi-window export

    @property
    def fits_neural_engine(self) -> bool:
        """Every input and output dimension within the Neural Engine's limit."""
        return all(size <= NEURAL_ENGINE_MAX_DIMENSION for spec in (*self.inputs, *self.outputs)
                   for size in spec.shape)

    @property
    def package_name(self) -> str:
        return f"{self.package_stem or 'parakeet_' + self.name}.mlpackage"

    def pick_inputs(self, values: dict) -> dict:
        """This component's inputs out of a larger dict (e.g. another component's outputs); an optional
        input missing there is left out."""
        return {spec.name: values[spec.name] for spec in self.inputs if spec.name in values or not spec.optional}

    def joint_feed(self, encoder, decoder, token_bias=None, fusion_scores=None) -> dict:
        """A joint package's inputs by role (its first two inputs are the encoder and decoder ones); the optional
        ones only when given."""
        optional = {TOKEN_BIAS: token_bias, FUSION_SCORES: fusion_scores}
        return {self.inputs[0].name: encoder, self.inputs[1].name: decoder,
                **{name: value for name, value in optional.items() if value is not None}}

    def decoder_feed(self, token: int, h, c) -> dict:
        """The decoder package's inputs by role: one previous token and the LSTM state (h, c) it continues from."""
        targets, length, h_in, c_in = self.inputs
        return {targets.name: np.full(targets.shape, token, targets.numpy_dtype),
                length.name: np.full(length.shape, targets.shape[-1], length.numpy_dtype), h_in.name: h, c_in.name: c}

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(spec for spec in self.outputs if spec.name == name)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Contract:
    """All components for one model and one fixed window (one of the export's `windows`)."""

    model: ModelSpec
    window_samples: int
    mel_frames: int
    encoder_frames: int
    components: dict[str, ComponentContract] = field(default_factory=dict)
    top_k: int = DEFAULT_TOP_K
    layout: Layout = field(default_factory=lambda: layout_named(DEFAULT_LAYOUT))
    other_windows: tuple[Window, ...] = ()  # the export's other windows

    @property
    def window(self) -> Window:
        return Window(self.window_samples, self.mel_frames, self.encoder_frames)

    @property
    def windows(self) -> tuple[Window, ...]:
        """Every window of the export, smallest first."""
        return tuple(sorted((self.window, *self.other_windows), key=lambda window: window.samples))

    @property
    def multi_window(self) -> bool:
        return len(self.windows) > 1

    @property
    def function_name(self) -> str | None:
        """The function of a windowed package this window runs (None: single-window packages)."""
        return self.window.function_name(self.model.sample_rate) if self.multi_window else None

    def for_window(self, window: Window) -> Contract:
        """The contract of another window of the same export."""
        others = tuple(other for other in self.windows if other != window)
        return replace(build_contract(self.model, window.mel_frames, window.encoder_frames,
                                      window.samples / self.model.sample_rate, self.top_k, self.layout.name),
                       other_windows=others)

    def window_contracts(self) -> list[Contract]:
        """One contract per window, smallest first."""
        return [self.for_window(window) for window in self.windows]

    def holding(self, samples: int) -> Contract:
        """The contract of the smallest window that holds `samples` (the largest if none does)."""
        return self.for_window(next((window for window in self.windows if window.samples >= samples), self.windows[-1]))

    def __getitem__(self, name: str) -> ComponentContract:
        try:
            return self.components[name]
        except KeyError:
            raise KeyError(f"the {self.layout.name} layout has no {name} package "
                           f"(it has {', '.join(self.components)})") from None

    def audio_feed(self, audio_signal, audio_length) -> dict:
        """A waveform package's inputs from a zero-padded window of S samples ([1, S] or [S]) and its valid
        length: the samples laid out as the contract's audio_signal (framed, or flat in some layouts)."""
        shape = next(c.input("audio_signal").shape for c in self.components.values() if c.waveform_input)
        return {"audio_signal": audio_signal.reshape(shape), "audio_length": audio_length}

    def with_layout(self, layout: str) -> Contract:
        """The same interfaces with another layout's packages and file names."""
        return replace(build_contract(self.model, self.mel_frames, self.encoder_frames,
                                      self.window_samples / self.model.sample_rate, self.top_k, layout),
                       other_windows=self.other_windows)

    def to_dict(self) -> dict:
        """The default (largest) window's interfaces; `windows` lists every window and its function."""
        windows = {"windows": [w.to_dict(self.model.sample_rate) for w in self.windows]} if self.multi_window else {}
        return {
            "window_seconds": self.window_samples / self.model.sample_rate,
            "window_samples": self.window_samples,
            "mel_frames": self.mel_frames,
            "encoder_frames": self.encoder_frames,
            "decoder_steps": DECODER_STEPS,
            "top_k": self.top_k,
            "layout": self.layout.name,
            **windows,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }


def build_contract(spec: ModelSpec, mel_frames: int, encoder_frames: int,
                   window_seconds: float = WINDOW_SECONDS, top_k: int = DEFAULT_TOP_K,
                   layout: str = DEFAULT_LAYOUT) -> Contract:
    """Derive every component's interface from the inspected model and the window's frame counts; the
    layout picks which packages exist and their file names."""
    check_top_k(top_k, spec.num_token_logits)
    chosen = layout_named(layout)
    samples = int(round(window_seconds * spec.sample_rate))
    audio_shape = (1, samples) if chosen.flat_waveform else framed_shape(samples, spec.hop_length)
    audio = (TensorSpec("audio_signal", audio_shape, FP32,
                        "mono waveform at sample_rate, zero-padded" + ("" if chosen.flat_waveform else
                                                                        ", sample r·hop + c at [0, r, c]")),
             TensorSpec("audio_length", (1,), INT32, "valid samples in audio_signal", samples))
    mel = (TensorSpec("mel", (1, spec.n_mels, mel_frames), FP32, "normalized log-mel features"),
           TensorSpec("mel_length", (1,), INT32, "valid mel frames", mel_frames))
    feature_stats = (
        TensorSpec("feature_mean", (1, spec.n_mels, 1), FP32, "per-feature mean of the log-mel over valid frames"),
        TensorSpec("feature_std", (1, spec.n_mels, 1), FP32, "per-feature std (+1e-5) the mel was divided by"),
    )
    encoded = (TensorSpec("encoder", (1, spec.d_model, encoder_frames), FP32, "encoder output"),
               TensorSpec("encoder_length", (1,), INT32, "valid encoder frames"))
    state_shape = (spec.pred_layers, 1, spec.pred_hidden)
    decoder_inputs = (
        TensorSpec("targets", (1, DECODER_STEPS), INT32, "previous token id in 0..V (V = blank)",
                   spec.blank_id),
        TensorSpec("target_length", (1,), INT32, "tokens in targets", DECODER_STEPS),
        TensorSpec("h_in", state_shape, FP32, "LSTM hidden state"),
        TensorSpec("c_in", state_shape, FP32, "LSTM cell state"),
    )
    decoder_outputs = (
        TensorSpec("decoder", (1, spec.pred_hidden, DECODER_STEPS), FP32, "prediction network output"),
        TensorSpec("h_out", state_shape, FP32, "next LSTM hidden state"),
        TensorSpec("c_out", state_shape, FP32, "next LSTM cell state"),
    )

    def joint_inputs(frames: int, names=("encoder", "decoder")) -> tuple[TensorSpec, ...]:
        return (TensorSpec(names[0], (1, spec.d_model, frames), FP32, "encoder output frames"),
                TensorSpec(names[1], (1, spec.pred_hidden, DECODER_STEPS), FP32, "decoder output"))

    token_bias = TensorSpec(TOKEN_BIAS, (spec.num_token_logits,), FP32,
                            "optional: added to the V + 1 token logits before every choice (0 when left out)",
                            default=0.0)
    fusion_scores = TensorSpec(FUSION_SCORES, (spec.vocab_size,), FP32,
                               "optional: added to the V non-blank token logits to pick the label of a token "
                               "(custom vocabulary; 0 when left out)", default=0.0)
    choice_inputs = (token_bias, fusion_scores)

    def decision_outputs(frames: int) -> tuple[TensorSpec, ...]:
        grid = (1, frames, DECODER_STEPS)
        return (TensorSpec("token_id", grid, INT32, "argmax over V + 1 token logits (V = blank)"),
                TensorSpec("token_prob", grid, FP32, "softmax probability of token_id"),
                TensorSpec("duration", grid, INT32, "argmax index into the durations list"),
                TensorSpec("top_k_ids", (*grid, top_k), INT32, "ids of the K largest token logits, best first"),
                TensorSpec("top_k_logits", (*grid, top_k), FP32, "the K largest token logits, best first"))

    next_context = (
        TensorSpec("decoder", (1, spec.pred_hidden, DECODER_STEPS), FP32,
                   "decoder output to decide the next step with (decoder_step again after blank)"),
        TensorSpec("h_out", state_shape, FP32, "LSTM hidden state after the chosen token (h_in after blank)"),
        TensorSpec("c_out", state_shape, FP32, "LSTM cell state after the chosen token (c_in after blank)"),
    )
    logits = TensorSpec("logits", (1, encoder_frames, DECODER_STEPS, spec.num_joint_outputs), FP32,
                        "raw joint logits: V + 1 token logits, then one per duration")
    components = [
        ComponentContract("preprocessor", audio, mel + feature_stats, waveform_input=True, windowed=True),
        ComponentContract("encoder", mel, encoded, windowed=True),
        ComponentContract("decoder", decoder_inputs, decoder_outputs),
        ComponentContract("joint", joint_inputs(encoder_frames), (logits,), windowed=True),
        ComponentContract("mel_encoder", audio, encoded, waveform_input=True, windowed=True),
        ComponentContract("joint_decision", (*joint_inputs(encoder_frames), *choice_inputs),
                          decision_outputs(encoder_frames), windowed=True),
        ComponentContract("joint_decision_single_step", (*joint_inputs(1, ("encoder_step", "decoder_step")),
                                                         *choice_inputs),
                          decision_outputs(1)),
        ComponentContract("decode_step", (*joint_inputs(1, ("encoder_step", "decoder_step")), *decoder_inputs[2:],
                                          *choice_inputs),
                          (*decision_outputs(1), *next_context)),
    ]
    chosen_components = {c.name: replace(c, package_stem=chosen.package_stems.get(c.name, ""))
                         for c in components if chosen.has(c.name)}
    return Contract(spec, samples, mel_frames, encoder_frames, chosen_components, top_k, chosen)


def framed_shape(window_samples: int, hop: int) -> tuple[int, int, int]:
    """[1, rows, hop]: the framed waveform layout of a window (one row per STFT hop)."""
    if window_samples % hop:
        raise UserError(f"a window of {window_samples} samples is no whole number of {hop}-sample hops")
    return 1, window_samples // hop, hop


def check_top_k(top_k: int, num_token_logits: int | None = None) -> None:
    """K between 1 and the V + 1 token logits (before the model is loaded, V is not known: only K >= 1)."""
    if top_k < 1 or (num_token_logits is not None and top_k > num_token_logits):
        bound = "at least 1" if num_token_logits is None else f"1 to {num_token_logits} (the V + 1 token logits)"
        raise UserError(f"top-k {top_k} out of range: choose {bound}")


def contract_for_model(model, windows: tuple[float, ...] = (WINDOW_SECONDS,), top_k: int = DEFAULT_TOP_K,
                       layout: str = DEFAULT_LAYOUT) -> Contract:
    """Inspect a NeMo model and derive its contract for the largest of `windows` (seconds), the others
    recorded beside it (frame counts by NeMo's own length rules)."""
    from exporters.inspect_model import encoder_frames, inspect_model, mel_frames

    spec = inspect_model(model)
    check_windows(windows, layout_named(layout), spec)
    frames = []
    for seconds in sorted(set(windows)):
        samples = int(round(seconds * spec.sample_rate))
        mels = mel_frames(model, samples)
        frames.append(Window(samples, mels, encoder_frames(model, mels)))
    largest = frames[-1]
    return replace(build_contract(spec, largest.mel_frames, largest.encoder_frames, max(windows), top_k, layout),
                   other_windows=tuple(frames[:-1]))


def check_windows(windows: tuple[float, ...], layout: Layout, spec: ModelSpec | None = None) -> None:
    """Windows the packages can be built for: positive, several only where the layout's runtime opens
    multifunction packages, and (once the model is known) whole hops longer than one STFT frame."""
    if not windows or not all(math.isfinite(seconds) and seconds > 0 for seconds in windows):
        raise UserError(f"windows {', '.join(f'{s:g}' for s in windows) or '(none)'}: give positive, finite lengths "
                        "in seconds")
    if len(set(windows)) > 1 and not layout.multi_window:
        raise UserError(f"the {layout.name} layout's runtime opens single-window packages: give one window")
    for seconds in windows if spec else ():
        samples = seconds * spec.sample_rate
        if abs(samples - round(samples)) > 1e-6 or round(samples) % spec.hop_length:
            raise UserError(f"window {seconds:g} s is no whole number of {spec.hop_length}-sample hops")
        if round(samples) <= spec.n_fft:
            raise UserError(f"window {seconds:g} s is not longer than one STFT frame ({spec.n_fft} samples)")


def spec_from_dict(data: dict) -> ModelSpec:
    """Rebuild a ModelSpec from its metadata.json form."""
    return ModelSpec(**{**data, "durations": tuple(data["durations"])})


def contract_from_metadata(metadata: dict) -> Contract:
    """Rebuild the contract recorded in a metadata.json (its default window, the others beside it)."""
    recorded = metadata["contract"]
    contract = build_contract(spec_from_dict(metadata["model"]["spec"]), recorded["mel_frames"],
                              recorded["encoder_frames"], recorded["window_seconds"], recorded["top_k"],
                              recorded["layout"])
    windows = (Window(w["window_samples"], w["mel_frames"], w["encoder_frames"]) for w in recorded.get("windows", ()))
    return replace(contract, other_windows=tuple(w for w in windows if w != contract.window))


