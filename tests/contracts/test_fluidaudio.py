"""`convert --layout fluidaudio` against FluidAudio's v3 interface as read from its sources
(fixtures/fluidaudio/interface.json, written from FluidAudio's Swift files, not from our code)."""

from __future__ import annotations

import json
from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import sentencepiece as spm

from exporters.layouts import LAYOUTS

INTERFACE = json.loads((Path(__file__).parents[2] / "fixtures" / "fluidaudio" / "interface.json").read_text())
ARRAY_TYPES = {ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "Float32",
               ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "Float16",
               ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32: "Int32"}


def stem(entry: dict) -> str:
    return entry["file"].removesuffix(".mlmodelc")


def features(package: Path) -> tuple[dict, dict]:
    """name → (shape, dtype name, optional) of a package's declared inputs and outputs."""
    description = ct.utils.load_spec(str(package)).description

    def read(items):
        return {f.name: (tuple(f.type.multiArrayType.shape), ARRAY_TYPES[f.type.multiArrayType.dataType],
                         f.type.isOptional) for f in items}
    return read(description.input), read(description.output)


def shape_fits(shape: tuple[int, ...], pattern, values: dict) -> bool:
    """A shape against one interface pattern: [1, "D", "T"] (symbols bound by values) or "count N"."""
    if isinstance(pattern, str):
        count = pattern.removeprefix("count ")
        return int(np.prod(shape)) == (values[count] if count in values else int(count))
    return len(shape) == len(pattern) and all(size == (values[p] if isinstance(p, str) else p)
                                              for size, p in zip(shape, pattern))


def interface_mismatches(package: Path, entry: dict, values: dict) -> list[str]:
    """Everything about a package that FluidAudio's use of it (one interface entry) would trip on."""
    inputs, outputs = features(package)
    problems = []
    for side, declared, listed in (("input", inputs, entry["inputs"]), ("output", outputs, entry["outputs"])):
        for tensor in listed:
            if tensor["name"] not in declared:
                if not tensor.get("optional"):
                    problems.append(f"{package.name}: no {side} {tensor['name']}")
                continue
            shape, dtype, _ = declared[tensor["name"]]
            if dtype not in tensor["dtypes"]:
                problems.append(f"{package.name}: {side} {tensor['name']} is {dtype}, FluidAudio reads {tensor['dtypes']}")
            if not any(shape_fits(shape, pattern, values) for pattern in tensor["shapes"]):
                problems.append(f"{package.name}: {side} {tensor['name']} has shape {list(shape)}, "
                                f"FluidAudio expects {tensor['shapes']} with {values}")
    fed = {tensor["name"] for tensor in entry["inputs"]}
    problems += [f"{package.name}: required input {name} that FluidAudio never feeds"
                 for name, (_, _, optional) in inputs.items() if name not in fed and not optional]
    return problems


def bindings(contract) -> dict[str, int]:
    """The interface's symbols for one model's contract."""
    spec = contract.model
    return {"S": contract.window_samples, "M": spec.n_mels, "F": contract.mel_frames, "T": contract.encoder_frames,
            "D": spec.d_model, "H": spec.pred_hidden, "L": spec.pred_layers, "K": contract.top_k}


@pytest.fixture(scope="module")
def fluidaudio_export(load_subject, precision) -> Path:
    return load_subject("tiny").packages(precision, "fluidaudio")


def test_export_holds_the_files_fluidaudio_opens(fluidaudio_export):
    """Coverage: exactly the four packages FluidAudio's v3 loader names (compiled by `compile` on macOS)
    and its vocabulary file, beside metadata.json and tokenizer.model."""
    packages = sorted(p.name for p in fluidaudio_export.glob("*.mlpackage"))
    assert packages == sorted(f"{stem(entry)}.mlpackage" for entry in INTERFACE["models"].values())
    assert (fluidaudio_export / INTERFACE["vocabulary"]["file"]).is_file()


def test_packages_match_fluidaudio_interface(fluidaudio_export, tiny_contract):
    """Coverage: every input FluidAudio feeds and every output it reads, by name, dtype and shape (the
    interface's symbols bound to the tiny model's widths), and no required input it would not feed."""
    values = bindings(tiny_contract)
    problems = [problem for entry in INTERFACE["models"].values()
                for problem in interface_mismatches(fluidaudio_export / f"{stem(entry)}.mlpackage", entry, values)]
    assert problems == []


def test_encoder_inputs_bind_to_preprocessor_outputs(fluidaudio_export):
    """Coverage: FluidAudio feeds the encoder by name from the preprocessor's outputs."""
    models = INTERFACE["models"]
    encoder_inputs, _ = features(fluidaudio_export / f"{stem(models['encoder'])}.mlpackage")
    _, preprocessor_outputs = features(fluidaudio_export / f"{stem(models['preprocessor'])}.mlpackage")
    assert set(encoder_inputs) <= set(preprocessor_outputs)


def test_vocabulary_maps_every_id_to_its_piece(fluidaudio_export):
    """Coverage: parakeet_vocab.json is a {"id": piece} object over ids 0..V-1 equal to the tokenizer's pieces
    (▁ word boundaries kept), blank (= V) left out."""
    vocabulary = json.loads((fluidaudio_export / INTERFACE["vocabulary"]["file"]).read_text(encoding="utf-8"))
    tokenizer = spm.SentencePieceProcessor(model_file=str(fluidaudio_export / "tokenizer.model"))
    assert vocabulary == {str(i): tokenizer.id_to_piece(i) for i in range(tokenizer.get_piece_size())}
    assert any(piece.startswith("\u2581") for piece in vocabulary.values())


def test_checker_catches_a_package_fluidaudio_cannot_use(tiny_packages_fp32, tiny_contract):
    """Coverage: the grid joint_decision (inputs `encoder`/`decoder`, T frames) fails the JointDecisionv3 entry."""
    problems = interface_mismatches(tiny_packages_fp32 / "parakeet_joint_decision.mlpackage",
                                    INTERFACE["models"]["joint"], bindings(tiny_contract))
    assert any("no input encoder_step" in p for p in problems)
    assert any("required input encoder that FluidAudio never feeds" in p for p in problems)
    assert any("output token_id has shape" in p for p in problems)


@pytest.mark.full
def test_full_width_packages_carry_fluidaudio_numbers(load_subject, full_packages, full_contract, precision, tmp_path):
    """Coverage: at Parakeet v3's widths (full-random), the packages FluidAudio loads have exactly the sizes it
    hard-codes (240000 samples, 128 mel, 1024/640 hidden, 2 LSTM layers). Encoder, decoder and single step are
    the default full-width export's graphs under other file names; the fluidaudio preprocessor (flat waveform,
    no weights) is exported here at full width."""
    from exporters.export import ExportSettings, export_packages

    assert bindings(full_contract) | {"K": None} == INTERFACE["symbols"]["v3_values"] | {"K": None}
    full = load_subject("full-random")
    fluidaudio = full_contract.with_layout("fluidaudio")
    front_end = tmp_path / "fluidaudio"
    export_packages(full.model, fluidaudio, full.source, full.weights_sha, front_end,
                    ExportSettings(precision=precision, components=("preprocessor",)))
    stems = LAYOUTS["fluidaudio"].package_stems
    component_of = {file_stem: component for component, file_stem in stems.items()}

    def package(entry: dict) -> Path:
        component = component_of[stem(entry)]
        if component == "preprocessor":
            return front_end / fluidaudio[component].package_name
        return full_packages / full_contract[component].package_name

    problems = [problem for entry in INTERFACE["models"].values()
                for problem in interface_mismatches(package(entry), entry,
                                                    INTERFACE["symbols"]["v3_values"] | {"K": full_contract.top_k})]
    assert problems == []
