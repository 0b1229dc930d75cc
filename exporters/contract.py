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
  logits at token_id) and `duration` as the argmax *index* into the durations list.
- Lengths are int32 `[1]`.
- The preprocessor also returns the per-feature mean and std it normalized with, `[1, n_mels, 1]`,
  so a host decoding long audio in windows can renormalize with the whole utterance's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporters.inspect_model import ModelSpec

WINDOW_SECONDS = 15.0
DECODER_STEPS = 1

FP32 = "fp32"
INT32 = "int32"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a component's interface."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "fp32" | "int32"
    description: str
    max_value: int | None = None  # inclusive upper bound of an int32 input (lengths, token ids)

    def to_dict(self) -> dict:
        bound = {} if self.max_value is None else {"max_value": self.max_value}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "description": self.description, **bound}


@dataclass(frozen=True)
class ComponentContract:
    """Ordered inputs and outputs of one exported package."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    waveform_input: bool = False

    @property
    def package_name(self) -> str:
        return f"parakeet_{self.name}.mlpackage"

    def pick_inputs(self, values: dict) -> dict:
        """This component's inputs out of a larger dict (e.g. another component's outputs)."""
        return {spec.name: values[spec.name] for spec in self.inputs}

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(spec for spec in self.outputs if spec.name == name)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Contract:
    """All components for one model and one fixed window."""

    model: ModelSpec
    window_samples: int
    mel_frames: int
    encoder_frames: int
    components: dict[str, ComponentContract] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ComponentContract:
        return self.components[name]

    def to_dict(self) -> dict:
        return {
            "window_seconds": self.window_samples / self.model.sample_rate,
            "window_samples": self.window_samples,
            "mel_frames": self.mel_frames,
            "encoder_frames": self.encoder_frames,
            "decoder_steps": DECODER_STEPS,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }


def build_contract(spec: ModelSpec, mel_frames: int, encoder_frames: int,
                   window_seconds: float = WINDOW_SECONDS) -> Contract:
    """Derive every component's interface from the inspected model and the window's frame counts."""
    samples = int(round(window_seconds * spec.sample_rate))
    audio = (TensorSpec("audio_signal", (1, samples), FP32, "mono waveform at sample_rate, zero-padded"),
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

    def joint_inputs(frames: int) -> tuple[TensorSpec, ...]:
        return (TensorSpec("encoder", (1, spec.d_model, frames), FP32, "encoder output frames"),
                TensorSpec("decoder", (1, spec.pred_hidden, DECODER_STEPS), FP32, "decoder output"))

    def decision_outputs(frames: int) -> tuple[TensorSpec, ...]:
        grid = (1, frames, DECODER_STEPS)
        return (TensorSpec("token_id", grid, INT32, "argmax over V + 1 token logits (V = blank)"),
                TensorSpec("token_prob", grid, FP32, "softmax probability of token_id"),
                TensorSpec("duration", grid, INT32, "argmax index into the durations list"))

    logits = TensorSpec("logits", (1, encoder_frames, DECODER_STEPS, spec.num_joint_outputs), FP32,
                        "raw joint logits: V + 1 token logits, then one per duration")
    components = [
        ComponentContract("preprocessor", audio, mel + feature_stats, waveform_input=True),
        ComponentContract("encoder", mel, encoded),
        ComponentContract("decoder", decoder_inputs, decoder_outputs),
        ComponentContract("joint", joint_inputs(encoder_frames), (logits,)),
        ComponentContract("mel_encoder", audio, encoded, waveform_input=True),
        ComponentContract("joint_decision", joint_inputs(encoder_frames), decision_outputs(encoder_frames)),
        ComponentContract("joint_decision_single_step", joint_inputs(1), decision_outputs(1)),
    ]
    return Contract(spec, samples, mel_frames, encoder_frames, {c.name: c for c in components})


def contract_for_model(model, window_seconds: float = WINDOW_SECONDS) -> Contract:
    """Inspect a NeMo model and derive its contract (frame counts by NeMo's own length rules)."""
    from exporters.inspect_model import encoder_frames, inspect_model, mel_frames

    spec = inspect_model(model)
    samples = int(round(window_seconds * spec.sample_rate))
    mels = mel_frames(model, samples)
    return build_contract(spec, mels, encoder_frames(model, mels), window_seconds)


def spec_from_dict(data: dict) -> ModelSpec:
    """Rebuild a ModelSpec from its metadata.json form."""
    return ModelSpec(**{**data, "durations": tuple(data["durations"])})


def contract_from_metadata(metadata: dict) -> Contract:
    """Rebuild the contract recorded in a metadata.json."""
    recorded = metadata["contract"]
    return build_contract(spec_from_dict(metadata["model"]["spec"]), recorded["mel_frames"],
                          recorded["encoder_frames"], recorded["window_seconds"])


