"""Any directory of Parakeet Core ML packages, seen through the contract: what the gates, the decoder and
`compare` judge.

An export of this project carries its contract in metadata.json. Any other directory (another converter's
output, FluidAudio's published packages) is read from the packages themselves:
- each package is found by its file name (this project's, FluidAudio's and other common names, as
  `.mlpackage` or `.mlmodelc`), or named explicitly (`--map component=PATH`);
- its inputs and outputs are read from its spec and bound to the contract's by name, a known alias, or
  position; a shape that differs only by singleton axes or by the order of its axes is fed reshaped or
  transposed; a missing optional output (top-K) or input (token_bias) leaves the rest judged;
- the window, precision (fp16 compute, fp16 I/O), compressed weights, top-K, waveform layout, decoder steps
  and flexible inputs are inferred from the packages;
- every difference from the contract is said in one line per package, and a package whose tensors cannot
  be fed under the contract (another window, another decoder U) is not judged, with the reason.

`open(component)` gives a runtime that takes and returns the contract's names, shapes and dtypes, so every
gate and the transcriber run unchanged on any export.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from exporters.components import COMPONENTS
from exporters.contract import DECODER_STEPS, DEFAULT_TOP_K, ComponentContract, Contract, contract_from_metadata, contract_for_model
from exporters.errors import UserError
from exporters.metadata import FILENAME, SCHEMA_VERSION, read_metadata
from exporters.runtime import load, package_io
from exporters.tensors import FP16, FP32, TensorSpec

FOREIGN = "foreign"
OURS = "parakeet-coreml"
PACKAGE_SUFFIXES = (".mlpackage", ".mlmodelc")

# Normalized file stem (lower case, letters and digits only) a component's package ends with; the longest match
# wins, so "MelEncoder" is mel_encoder and "Encoder" the encoder.
FILE_STEMS = {
    "preprocessor": ("preprocessor", "melspectrogram", "featureextractor", "frontend"),
    "encoder": ("encoder", "encoderint8", "encoderint4", "encoderfp16", "conformerencoder", "audioencoder"),
    "mel_encoder": ("melencoder", "preprocessorencoder", "fusedencoder"),
    "decoder": ("decoder", "predictionnetwork", "rnntdecoder", "prednet"),
    "joint": ("joint", "rnntjoint", "jointnetwork"),
    "joint_decision": ("jointdecision", "jointdecisiongrid"),
    "joint_decision_single_step": ("jointdecisionsinglestep", "jointsinglestep", "jointdecisionv2",
                                   "jointdecisionv3"),
    "decode_step": ("decodestep", "decodestepv1"),
}
# Other names converters give the contract's tensors (NeMo's own forward arguments among them).
ALIASES = {
    "audio_signal": ("audio", "input_signal", "waveform", "samples", "audio_input"),
    "audio_length": ("audio_len", "audio_lengths", "input_signal_length", "length", "lengths"),
    "mel": ("features", "processed_signal", "melspectrogram", "mel_features", "audio_features"),
    "mel_length": ("features_length", "processed_signal_length", "mel_lengths", "feature_length"),
    "encoder": ("encoder_output", "encoder_outputs", "encoded", "enc", "encoder_out", "outputs"),
    "encoder_length": ("encoder_output_length", "encoded_length", "encoded_lengths", "enc_len",
                       "encoder_lengths"),
    "targets": ("tokens", "token", "targets_in", "labels", "y"),
    "target_length": ("target_lengths", "token_length", "targets_length", "y_length"),
    "h_in": ("h", "h0", "hidden_in", "input_states_1", "state_h"),
    "c_in": ("c", "c0", "cell_in", "input_states_2", "state_c"),
    "decoder": ("decoder_output", "decoder_outputs", "dec", "decoder_out", "g"),
    "h_out": ("h_next", "hidden_out", "output_states_1", "new_h", "state_h_out"),
    "c_out": ("c_next", "cell_out", "output_states_2", "new_c", "state_c_out"),
    "logits": ("joint_output", "joint_logits", "output", "outputs"),
    "token_id": ("token", "label", "token_ids", "label_id"),
    "token_prob": ("prob", "probability", "token_probs", "token_probability"),
    "duration": ("durations", "duration_idx", "duration_index", "tdt_duration"),
    "encoder_step": ("encoder_frame", "enc_step", "encoder_output"),
    "decoder_step": ("decoder_output", "dec_step", "decoder_frame"),
}


@dataclass(frozen=True)
class Binding:
    """One contract tensor and the package tensor that plays it: fed (or read) reshaped, transposed and cast."""

    contract: TensorSpec
    package: TensorSpec
    permutation: tuple[int, ...] | None = None  # package axes = contract axes permuted (None: a reshape)

    def to_package(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if self.permutation is not None:
            value = value.transpose(self.permutation)
        return np.ascontiguousarray(value.reshape(self.package.shape).astype(self.package.numpy_dtype, copy=False))

    def from_package(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if self.permutation is not None:
            value = value.reshape([self.contract.shape[axis] for axis in self.permutation])
            value = value.transpose(np.argsort(self.permutation))
        return value.reshape(self.contract.shape).astype(self.contract.numpy_dtype, copy=False)


@dataclass
class PackageUnderTest:
    """One package of the directory, bound to its component's contract (or the reason it cannot be judged)."""

    component: str
    path: Path
    inputs: dict[str, Binding] = field(default_factory=dict)
    outputs: dict[str, Binding] = field(default_factory=dict)
    interface: list[str] = field(default_factory=list)  # one line per difference from the contract
    not_judged: str | None = None  # why its gate cannot run
    incompatible: bool = False  # not judged because it breaks the contract (fails the verdict)
    window_mismatch: str | None = None  # the wrong-window finding, when that is why
    compute_precision: str = FP32
    io_dtype: str = FP32
    compression: str | None = None  # the tolerance row its compressed weights are judged by
    compression_note: str | None = None
    flexible: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        """fp16 if it computes in fp16 or takes or gives fp16 tensors (either rounds to half precision)."""
        return FP16 if FP16 in (self.compute_precision, self.io_dtype) else FP32

    def to_dict(self, directory: Path) -> dict:
        try:
            shown = str(self.path.relative_to(directory))
        except ValueError:
            shown = str(self.path)
        return {"component": self.component, "path": shown, "interface": self.interface,
                "judged": self.not_judged is None, "skipped_reason": self.not_judged}


class AdaptedRuntime:
    """A package's runtime that takes and returns the contract's names, shapes and dtypes."""

    def __init__(self, runtime, package: PackageUnderTest, component: ComponentContract):
        self.runtime = runtime
        self.backend = runtime.backend
        self.package = package
        self.inputs = tuple(spec for spec in component.inputs if spec.name in package.inputs)
        self.outputs = tuple(spec for spec in component.outputs if spec.name in package.outputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if unfed := [name for name in inputs if name not in self.package.inputs and name not in REDUNDANT_INPUTS]:
            raise UserError(f"{self.package.path.name} has no input for {', '.join(unfed)}")
        feed = {binding.package.name: binding.to_package(inputs[name])
                for name, binding in self.package.inputs.items() if name in inputs}
        produced = self.runtime.predict(feed)
        return {name: binding.from_package(produced[binding.package.name])
                for name, binding in self.package.outputs.items()}


@dataclass
class ExportView:
    """The packages of one directory as the gates see them."""

    directory: Path
    loaded_model: object | None  # the NeMo model (ours: loaded on first use, transcription needs none)
    contract: Contract
    packages: dict[str, PackageUnderTest]
    origin: str
    precision: str
    metadata: dict | None = None
    ignored: list[str] = field(default_factory=list)  # files found but not judged (duplicates, compiled)
    model_source: str | None = None

    @property
    def model(self):
        """The NeMo model the packages are judged against (ours: the recorded one, checked by its checksum)."""
        if self.loaded_model is None:
            from exporters.parity.report import load_recorded_model

            self.loaded_model = load_recorded_model(self.metadata, self.model_source)
        return self.loaded_model

    @property
    def judged(self) -> list[str]:
        """Components whose gates run, in the registry's order."""
        return [name for name in COMPONENTS if name in self.packages and self.packages[name].not_judged is None]

    @property
    def rows(self) -> dict[str, str]:
        """component -> the tolerance row it is judged by (compression variant, else its own precision)."""
        return {name: package.compression or package.precision for name, package in self.packages.items()}

    @property
    def compressed(self) -> dict[str, str]:
        return {name: package.compression for name, package in self.packages.items() if package.compression}

    def open(self, component: str, backend: str | None = None, function: str | None = None):
        """The package's runtime under the contract's interface (our exports: the package itself)."""
        package = self.packages[component]
        runtime = load(package.path, backend, function=function)
        if self.origin == OURS:
            return runtime
        return AdaptedRuntime(runtime, package, self.contract[component])

    def takes(self, component: str, name: str) -> bool:
        """Whether a package takes an input of the contract (ours: every one; another converter's: if it has it)."""
        return self.origin == OURS or name in self.packages[component].inputs

    def tokenizer(self):
        """A SentencePiece processor: the export's own (ours), else the model's."""
        import sentencepiece as spm

        if self.metadata is None:
            return self.model.tokenizer.tokenizer
        path = self.inside(self.metadata.get("tokenizer"), "tokenizer")
        try:
            processor = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as error:
            raise UserError(f"{path} is no SentencePiece model ({error}); re-export the directory") from None
        if processor.get_piece_size() != self.contract.model.vocab_size:
            raise UserError(f"{path} has {processor.get_piece_size()} pieces, the model's vocabulary "
                            f"{self.contract.model.vocab_size}: it belongs to another model; re-export the directory")
        return processor

    def nemo_tokenizer(self):
        """The same tokenizer as NeMo's class (what NeMo's boosting tree encodes phrases with)."""
        from nemo.collections.common.tokenizers import SentencePieceTokenizer

        if self.metadata is None:
            return self.model.tokenizer
        self.tokenizer()  # checked
        return SentencePieceTokenizer(model_path=str(self.inside(self.metadata.get("tokenizer"), "tokenizer")))

    def inside(self, name, what: str) -> Path:
        """A file an export's metadata.json names, which must be a file inside the export directory (an export
        is untrusted input: `../../etc/passwd` is refused, not opened)."""
        if not isinstance(name, str) or not name:
            raise UserError(f"{self.directory / FILENAME} names no {what} file; re-export the directory")
        root = self.directory.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise UserError(f"{self.directory / FILENAME} names a {what} outside the export ({name}); refused")
        if not path.is_file():
            raise UserError(f"the {what} file {name} named in {self.directory / FILENAME} is missing; re-export "
                            "the directory")
        return path

    def summary(self) -> dict:
        """What was inferred about the export, for the report."""
        judged = [self.packages[name] for name in self.packages]
        return {"origin": self.origin, "window_seconds": self.contract.window_samples / self.contract.model.sample_rate,
                "windows": [w.samples / self.contract.model.sample_rate for w in self.contract.windows],
                "precision": self.precision,
                "io_dtype": FP16 if any(p.io_dtype == FP16 for p in judged) else FP32,
                "compressed": self.compressed, "top_k": self.top_k(),
                "waveform": self.waveform(), "decoder_steps": self.decoder_steps(),
                "flexible_inputs": [line for p in judged for line in p.flexible]}

    def top_k(self) -> int | None:
        """K of the decision packages' top-K outputs (None: none has them)."""
        if self.origin == OURS:
            return self.contract.top_k
        for package in self.packages.values():
            if "top_k_ids" in package.outputs:
                return package.outputs["top_k_ids"].contract.shape[-1]
        return None

    def waveform(self) -> str | None:
        if self.origin == OURS:
            return "flat" if self.contract.layout.flat_waveform else "framed"
        for package in self.packages.values():
            if "audio_signal" in package.inputs:
                return "flat" if len(package.inputs["audio_signal"].package.shape) == 2 else "framed"
        return None

    def decoder_steps(self) -> int | None:
        decoder = self.packages.get("decoder")
        if decoder is None or decoder.not_judged:
            return None
        if self.origin == OURS:
            return DECODER_STEPS
        return math.prod(decoder.inputs["targets"].package.shape)


def is_our_export(directory: Path) -> bool:
    """A directory with this project's metadata.json, by its schema version (read_metadata then says what else
    is wrong with it)."""
    path = Path(directory) / FILENAME
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("schema_version") == SCHEMA_VERSION


def open_export(directory: Path, model_source: str | None = None, mapping: dict[str, Path] | None = None,
                model=None) -> ExportView:
    """The view of an export directory: ours from its metadata.json (unless `mapping` names packages), any
    other from its packages and the model (`model_source`, or an already loaded `model`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"export directory not found: {directory}")
    judged_alone = model is None and model_source is None
    if not mapping and (is_our_export(directory) or judged_alone):
        if judged_alone and not (directory / FILENAME).is_file():
            raise UserError(f"no {FILENAME} in {directory}: not a parakeet-coreml export; to judge another "
                            "converter's packages, pass --model SRC (the checkpoint they were converted from)")
        return our_view(directory, model_source, model)  # read_metadata says what is wrong with a metadata.json
    if judged_alone:
        raise UserError("--map judges packages by component: pass --model SRC too (the checkpoint they came from)")
    if model is None:
        from exporters.checkpoints import load_model

        model = load_model(model_source)
    view = foreign_view(directory, model, mapping or {})
    view.model_source = model_source
    return view


def our_view(directory: Path, model_source: str | None, model) -> ExportView:
    metadata = read_metadata(directory)
    contract = contract_from_metadata(metadata)
    compressed = {name: entry["compression"] for name, entry in metadata["packages"].items() if entry.get("compression")}
    packages = {name: PackageUnderTest(name, directory / entry["file"], compute_precision=metadata["precision"],
                                       compression=compressed.get(name))
                for name, entry in metadata["packages"].items()}
    return ExportView(directory, model, contract, packages, OURS, metadata["precision"], metadata,
                      model_source=model_source or metadata["model"]["source"])


# ---- discovery -------------------------------------------------------------------------------------------------

def normalized_stem(path: Path) -> str:
    return re.sub(r"[^a-z0-9]", "", path.name.rsplit(".", 1)[0].lower())


def component_of(path: Path) -> str | None:
    """The component a package's file name says it is (longest known stem it ends with)."""
    stem = normalized_stem(path)
    matches = [(len(known), name) for name, stems in FILE_STEMS.items() for known in stems if stem.endswith(known)]
    return max(matches)[1] if matches else None


def discover(directory: Path, mapping: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """component -> package path, found by file name, `mapping` overriding; and the files left aside."""
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in PACKAGE_SUFFIXES and (name := component_of(path)):
            found.setdefault(name, []).append(path)
    chosen, ignored = {}, []
    for name, paths in found.items():
        paths.sort(key=lambda p: (p.suffix != ".mlpackage", len(p.name), p.name))
        chosen[name] = paths[0]
        ignored += [f"{p.name}: another {name} package; pass --map {name}={p.name} to judge it" for p in paths[1:]]
    chosen.update(mapping)
    if not chosen:
        raise UserError(f"{directory}: no recognisable Core ML package (.mlpackage or .mlmodelc named like a Parakeet "
                        "component); name them with --map component=PATH")
    return {name: chosen[name] for name in COMPONENTS if name in chosen}, ignored


def parse_mapping(entries: list[str], directory: Path) -> dict[str, Path]:
    """`component=PATH` entries (PATH relative to the directory, or absolute)."""
    mapping = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not path:
            raise UserError(f"--map {entry!r}: write component=PATH")
        if name not in COMPONENTS:
            raise UserError(f"--map {entry!r}: unknown component {name!r}; choose one of {', '.join(COMPONENTS)}")
        resolved = Path(path) if Path(path).is_absolute() else Path(directory) / path
        if not resolved.exists():
            raise UserError(f"--map {entry!r}: {resolved} not found")
        if resolved.suffix not in PACKAGE_SUFFIXES:
            raise UserError(f"--map {entry!r}: {resolved.name} is not a .mlpackage or .mlmodelc")
        mapping[name] = resolved
    return mapping


# ---- reading a foreign export --------------------------------------------------------------------------------

def foreign_view(directory: Path, model, mapping: dict[str, Path]) -> ExportView:
    """Discover, read and bind every package; infer the window and the rest from them."""
    found, ignored = discover(directory, mapping)
    interfaces, compiled = {}, {}
    for name, path in found.items():
        if path.suffix == ".mlmodelc":
            compiled[name] = path
            continue
        interfaces[name] = read_interface(path)
    contract = inferred_contract(model, interfaces)
    packages = {name: PackageUnderTest(name, path, not_judged="a compiled .mlmodelc: its I/O and program are read "
                                       "from the .mlpackage it was compiled from; pass that with --map")
                for name, path in compiled.items()}
    time_axes = time_axes_of(model, contract)
    for name, (inputs, outputs, rules, facts) in interfaces.items():
        packages[name] = bind_package(name, found[name], contract, inputs, outputs, rules, facts, time_axes)
    packages = {name: packages[name] for name in COMPONENTS if name in packages}
    precision = FP16 if any(p.precision == FP16 for p in packages.values()) else FP32
    return ExportView(directory, model, contract, packages, FOREIGN, precision, ignored=ignored)


def read_interface(path: Path):
    """(inputs, outputs, input shape rules, program facts) of a package's default function, or one clear error."""
    from exporters.runtime.mil.program import load_package

    try:
        package = load_package(path)
        inputs, outputs = package_io(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path.name}: cannot read its spec ({str(error).splitlines()[0] if str(error) else error!r}); "
                        "is it a Core ML ML program package?") from None
    except Exception as error:  # protobuf's DecodeError and friends
        raise UserError(f"{path.name}: cannot read its spec ({type(error).__name__}); is it a Core ML package?") from None
    return inputs, outputs, package.input_rules, program_facts(package)


def inferred_contract(model, interfaces: dict) -> Contract:
    """The contract for the window the packages were built for, and their top-K."""
    spec_model = contract_for_model(model).model
    seconds = inferred_window(model, spec_model, interfaces)
    top_k = DEFAULT_TOP_K
    for inputs, outputs, _, _ in interfaces.values():
        for spec in outputs:
            if spec.name == "top_k_ids" and 1 <= spec.shape[-1] <= spec_model.num_token_logits:
                top_k = spec.shape[-1]
    return contract_for_model(model, (seconds,), top_k)


def inferred_window(model, spec, interfaces: dict) -> float:
    """Window length in seconds, read from the first package that shows it: a waveform input's samples, the
    encoder's mel frames, or a joint's encoder frames (each the package's default shape)."""
    from exporters.inspect_model import encoder_frames

    for name in ("preprocessor", "mel_encoder"):
        if name in interfaces:
            samples = math.prod(interfaces[name][0][0].shape)
            return samples / spec.sample_rate
    if "encoder" in interfaces:
        frames = max(interfaces["encoder"][0][0].shape)  # [1, n_mels, M] in any axis order
        return (frames - 1) * spec.hop_length / spec.sample_rate
    for name in ("joint", "joint_decision"):
        if name in interfaces:
            frames = max(size for size in interfaces[name][0][0].shape if size != spec.d_model)
            for half_seconds in range(1, 1201):
                samples = half_seconds * spec.sample_rate // 2
                if encoder_frames(model, samples // spec.hop_length + 1) == frames:
                    return half_seconds / 2
    return 15.0


def time_axes_of(model, contract: Contract) -> dict[tuple[str, str], set[int]]:
    """(component, tensor) -> the axes that follow the window (they differ between two windows' contracts)."""
    seconds = contract.window_samples / contract.model.sample_rate
    other = contract_for_model(model, (seconds + 1.0,), contract.top_k)
    axes = {}
    for name, component in contract.components.items():
        for spec, alternative in zip((*component.inputs, *component.outputs),
                                     (*other[name].inputs, *other[name].outputs)):
            axes[(name, spec.name)] = {i for i, (a, b) in enumerate(zip(spec.shape, alternative.shape)) if a != b}
    return axes


@dataclass(frozen=True)
class ProgramFacts:
    compute_precision: str
    compression: str | None  # a variant name of exporters.compression, or "paletteN" with another N
    compression_kinds: tuple[str, ...]


def program_facts(package) -> ProgramFacts:
    """fp16 compute (any computing op yields fp16) and the weight compression its constexpr ops apply."""
    from coremltools.proto import MIL_pb2

    operations = package.main_block.operations
    types = {o.name: o.type.tensorType for op in operations for o in op.outputs
             if o.type.WhichOneof("type") == "tensorType"}
    computing = [op for op in operations if op.type != "const" and not op.type.startswith("constexpr_")]
    fp16 = any(out.type.WhichOneof("type") == "tensorType" and out.type.tensorType.dataType == MIL_pb2.FLOAT16
               for op in computing for out in op.outputs)
    kinds = []
    for op in operations:
        if op.type == "constexpr_lut_to_dense":
            kinds.append(f"palette{palette_bits(op, types)}")
        elif op.type == "constexpr_affine_dequantize":
            kinds.append("int8")
        elif op.type == "constexpr_blockwise_shift_scale":
            dtype = input_dtype(op, "data", types)
            kinds.append("int4-block32" if dtype in (MIL_pb2.INT4, MIL_pb2.UINT4) else "int8")
    distinct = tuple(sorted(set(kinds)))
    compression = None if not distinct else distinct[0] if len(distinct) == 1 else "mixed"
    return ProgramFacts(FP16 if fp16 else FP32, compression, distinct)


def palette_bits(op, types: dict) -> int:
    """Bits per index of a palettized weight: log2 of its look-up table's entries (iOS16's lut is [2^bits],
    iOS18's [..., 2^bits, vector size])."""
    lut = input_type(op, "lut", types)
    sizes = [d.constant.size for d in lut.dimensions] if lut is not None else []
    entries = sizes[0] if len(sizes) == 1 else sizes[-2] if len(sizes) >= 2 else 256
    return max(1, int(math.log2(max(entries, 2))))


def input_type(op, name: str, types: dict):
    """The tensor type of one of an op's inputs (an iOS16 attribute, or an argument bound to a value or a name)."""
    if name in op.attributes:
        return op.attributes[name].type.tensorType
    if name not in op.inputs:
        return None
    binding = op.inputs[name].arguments[0]
    if binding.WhichOneof("binding") == "value":
        return binding.value.type.tensorType
    return types.get(binding.name)


def input_dtype(op, name: str, types: dict) -> int | None:
    found = input_type(op, name, types)
    return None if found is None else found.dataType


def tolerance_row(component: str, variant: str | None) -> tuple[str | None, str | None]:
    """The compressed row a component is judged by, and a note where the variant has no row of its own."""
    from exporters.parity.diff import TOLERANCES

    if variant is None:
        return None, None
    rows = {precision for (name, precision, _) in TOLERANCES if name == component}
    if variant in rows:
        return variant, None
    palettes = sorted((int(row[len("palette"):]), row) for row in rows if re.fullmatch(r"palette\d+", row))
    if variant.startswith("palette") and palettes:
        row = palettes[0][1]
        return row, f"{variant} weights have no row of their own: judged by the {row} row (the loosest palette)"
    if "mixed" in rows:
        return "mixed", f"{variant} weights have no row of their own: judged by the mixed row"
    return None, f"{variant} weights: no compressed row for {component}; judged by its precision's row"


def bind_package(name: str, path: Path, contract: Contract, inputs, outputs, rules, facts: ProgramFacts,
                 time_axes: dict) -> PackageUnderTest:
    """Bind a package's declared tensors to its component's contract, noting every difference."""
    component = contract[name]
    package = PackageUnderTest(name, path, compute_precision=facts.compute_precision)
    package.io_dtype = FP16 if any(spec.dtype == FP16 for spec in (*inputs, *outputs)) else FP32
    package.compression, package.compression_note = tolerance_row(name, facts.compression)
    if facts.compression:
        package.interface.append(f"compressed weights ({', '.join(facts.compression_kinds)})")
    if package.compression_note:
        package.interface.append(package.compression_note)
    if facts.compute_precision == FP16:
        package.interface.append("computes in fp16")
    for spec in inputs:
        rule = rules.get(spec.name)
        if rule is not None and (rule.ranges or rule.enumerated):
            package.flexible.append(f"{name}.{spec.name}: {rule.describe()}, judged at {list(spec.shape)}")
    problems = []
    package.inputs = bind_tensors(name, component.inputs, inputs, "input", package.interface, problems, time_axes)
    package.outputs = bind_tensors(name, component.outputs, outputs, "output", package.interface, problems,
                                   time_axes)
    if problems:
        package.not_judged = "; ".join(reason for reason, _ in problems)
        package.incompatible = any(kind != STEPS for _, kind in problems)
        package.window_mismatch = next((reason for reason, kind in problems if kind == WINDOW), None)
    elif required_outputs_missing(name, package):
        package.not_judged = f"none of the outputs its gate compares ({', '.join(o.name for o in component.outputs)})"
        package.incompatible = True
    return package


# Outputs a gate needs to judge a package at all (others may be missing and are then left out).
REQUIRED_OUTPUTS = {"preprocessor": ("mel",), "encoder": ("encoder",), "mel_encoder": ("encoder",),
                    "decoder": ("decoder", "h_out", "c_out"), "joint": ("logits",),
                    "joint_decision": ("token_id", "duration"), "joint_decision_single_step": ("token_id", "duration"),
                    "decode_step": ("token_id", "duration", "decoder", "h_out", "c_out")}


def required_outputs_missing(name: str, package: PackageUnderTest) -> bool:
    return any(output not in package.outputs for output in REQUIRED_OUTPUTS[name])


def bind_tensors(component: str, wanted: tuple[TensorSpec, ...], declared, kind: str, notes: list[str],
                 problems: list, time_axes: dict) -> dict[str, Binding]:
    """Contract tensor -> Binding, by name, then alias, then position among the package's unclaimed tensors."""
    remaining = list(declared)
    chosen: dict[str, TensorSpec] = {}
    for spec in wanted:
        match = next((t for t in remaining if t.name == spec.name), None)
        match = match or next((t for t in remaining if t.name in ALIASES.get(spec.name, ())), None)
        if match is not None:
            chosen[spec.name] = match
            remaining.remove(match)
    for spec in wanted:
        if spec.name not in chosen and not spec.optional and spec.name not in OPTIONAL_OUTPUTS:
            match = next((t for t in remaining if len(squeezed(t.shape)) == len(squeezed(spec.shape))), None)
            if match is not None:
                chosen[spec.name] = match
                remaining.remove(match)
    bindings = {}
    for spec in wanted:
        if spec.name not in chosen:
            if spec.name in REDUNDANT_INPUTS:
                notes.append(f"no {spec.name} input: {REDUNDANT_INPUTS[spec.name]}")
            elif spec.optional or kind == "output":
                notes.append(f"no {spec.name} {kind}" + (" (optional; its default applies)" if spec.optional else
                                                         ": judged on the others"))
            else:
                problems.append((f"no input plays {spec.name} {list(spec.shape)}", MISSING))
            continue
        found = chosen[spec.name]
        if found.name != spec.name:
            notes.append(f"{kind} {found.name!r} plays {spec.name}")
        if found.dtype != spec.dtype:
            notes.append(f"{kind} {found.name} is {found.dtype} (the contract's {spec.dtype})")
        if not found.shape and kind == "output":
            notes.append(f"output {found.name} declares no fixed shape: read as {list(spec.shape)}")
            bindings[spec.name] = Binding(spec, replace(found, shape=spec.shape))
            continue
        binding = bind_shape(spec, found)
        if binding is None:
            mismatch = shape_mismatch(component, spec, found, time_axes)
            problems.append(mismatch)
            continue
        if found.shape != spec.shape:
            how = "reshaped" if binding.permutation is None else f"transposed {list(binding.permutation)}"
            notes.append(f"{kind} {found.name} is {list(found.shape)}, the contract's {list(spec.shape)}: {how}")
        bindings[spec.name] = binding
    for extra in remaining:
        notes.append(f"extra {kind} {extra.name!r} {list(extra.shape)}: not judged")
    return bindings


# Inputs whose value the others fix: a package may leave them out.
REDUNDANT_INPUTS = {"target_length": "always the decoder steps per call (1)"}
OPTIONAL_OUTPUTS = ("top_k_ids", "top_k_logits", "feature_mean", "feature_std", "token_prob")


def squeezed(shape) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def bind_shape(spec: TensorSpec, found: TensorSpec) -> Binding | None:
    """A Binding if the package's shape holds the contract's values: equal but for singleton axes (a reshape),
    or the same axes in another order (the one permutation that maps them)."""
    if squeezed(found.shape) == squeezed(spec.shape):
        return Binding(spec, found)
    if spec.name == "audio_signal" and math.prod(found.shape) == math.prod(spec.shape):
        return Binding(spec, found)  # flat [1, S] or framed [1, S / hop, hop]: the same samples in order
    if len(found.shape) != len(spec.shape) or sorted(found.shape) != sorted(spec.shape):
        return None
    permutation = permutation_between(spec.shape, found.shape)
    return None if permutation is None else Binding(spec, found, permutation)


def permutation_between(source: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...] | None:
    """The axes order that turns `source` into `target`, if exactly one does (ignoring singleton axes' order)."""
    from itertools import permutations

    matches = {tuple(p) for p in permutations(range(len(source))) if tuple(source[i] for i in p) == tuple(target)}
    distinct = {tuple(i for i in p if source[i] != 1) for p in matches}
    return min(matches) if len(distinct) == 1 else None


# Why a package tensor cannot be bound: it lacks an input, is built for another window, or takes other steps.
MISSING, WINDOW, STEPS = "missing", "window", "steps"
# Contract tensors with a decoder-steps (U) axis: [1, U] targets, [1, H, U] decoder outputs.
STEP_TENSORS = ("targets", "decoder", "decoder_step")


def shape_mismatch(component: str, spec: TensorSpec, found: TensorSpec, time_axes: dict) -> tuple[str, str]:
    """(reason, kind): a time axis that differs is another window, a decoder-steps axis another U; anything
    else is another model's widths (raised: the packages do not fit the model at all)."""
    axes = time_axes.get((component, spec.name), set())
    contract_rest = [size for i, size in enumerate(spec.shape) if i not in axes and size != 1]
    if axes and all(size in found.shape for size in contract_rest):
        window_sizes = [spec.shape[i] for i in sorted(axes)]
        return (f"{found.name} is {list(found.shape)} where the export's window needs {list(spec.shape)} "
                f"({', '.join(map(str, window_sizes))} along time): built for another window", WINDOW)
    if spec.name in STEP_TENSORS and len(found.shape) == len(spec.shape) and found.shape[:-1] == spec.shape[:-1]:
        return (f"{found.name} is {list(found.shape)}: {found.shape[-1]} decoder steps (U) per call, the gates "
                f"feed one", STEPS)
    raise UserError(f"{found.name} of the {component} package is {list(found.shape)}, the model's contract "
                    f"{list(spec.shape)}: its vocabulary or widths do not match this model")
