"""Every exported package declares exactly the contract's interface, for each precision."""

from __future__ import annotations

import json

import coremltools as ct
import numpy as np
import pytest
import sentencepiece as spm

from exporters.components import COMPONENTS
from exporters.runtime import package_io
from exporters.tensors import FP32, INT32

# Independent of the code under test: the plan's fixed 15 s window at 16 kHz.
PLAN_WINDOW_SAMPLES = 240000
PLAN_MEL_FRAMES = 1501
PLAN_ENCODER_FRAMES = 188
IOS17_SPEC_VERSION = 8
# The mel front end stays fp32 in fp16 exports (see exporters/components/preprocessor.py).
FP32_FRONT_END = {"preprocessor"}


def program_of(path):
    return ct.utils.load_spec(str(path)).mlProgram


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_package_io_equals_contract(tiny_packages, tiny_contract, name):
    """Coverage: names, order, shapes and dtypes of every input and output of every package, and which inputs
    are optional with what default (token_bias)."""
    component = tiny_contract[name]
    inputs, outputs = package_io(tiny_packages / component.package_name)
    assert [d.interface for d in inputs] == [s.interface for s in component.inputs]
    assert [d.interface for d in outputs] == [s.interface for s in component.outputs]


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_package_targets_ios17_mlprogram(tiny_packages, tiny_contract, name):
    """Coverage: spec version is iOS17's and the model is an ML program."""
    spec = ct.utils.load_spec(str(tiny_packages / tiny_contract[name].package_name))
    assert spec.specificationVersion == IOS17_SPEC_VERSION
    assert spec.WhichOneof("Type") == "mlProgram"


def test_time_axes_follow_the_fixed_window(tiny_contract):
    """Coverage: 240000 samples → 1501 mel frames → 188 encoder frames; logits last axis V+1+durations."""
    assert tiny_contract.window_samples == PLAN_WINDOW_SAMPLES
    assert tiny_contract["preprocessor"].output("mel").shape[-1] == PLAN_MEL_FRAMES
    assert tiny_contract["encoder"].output("encoder").shape[-1] == PLAN_ENCODER_FRAMES
    spec = tiny_contract.model
    assert tiny_contract["joint"].output("logits").shape[-1] == spec.vocab_size + 1 + len(spec.durations)


def test_waveform_is_framed_within_neural_engine_limits(tiny_contract):
    """Coverage: the default layout frames the waveform one row per hop, a plain reshape of the flat window
    (sample r·hop + c at [0, r, c]), so no contract tensor exceeds 16384 in any dimension; the fluidaudio
    layout keeps the flat [1, S] its runtime feeds."""
    hop, samples = tiny_contract.model.hop_length, tiny_contract.window_samples
    for name in ("preprocessor", "mel_encoder"):
        assert tiny_contract[name].input("audio_signal").shape == (1, samples // hop, hop)
    assert all(component.fits_neural_engine for component in tiny_contract.components.values())
    flat = np.arange(samples, dtype=np.float32)
    feed = tiny_contract.audio_feed(flat[None], np.array([samples], np.int32))
    row, column = 1234, hop - 1
    assert feed["audio_signal"][0, row, column] == row * hop + column
    fluidaudio = tiny_contract.with_layout("fluidaudio")
    assert fluidaudio["preprocessor"].input("audio_signal").shape == (1, samples)
    assert not fluidaudio["preprocessor"].fits_neural_engine


def test_contract_frames_equal_nemo_lengths(tiny_model, tiny_contract):
    """Coverage: the contract's frame counts are the widths NeMo itself emits on a full window; its valid
    lengths fit in them (NeMo 2.x counts every frame valid, NeMo 3.0 one mel frame fewer)."""
    import torch

    audio = torch.zeros(1, tiny_contract.window_samples)
    length = torch.tensor([tiny_contract.window_samples])
    with torch.no_grad():
        mel, mel_length = tiny_model.preprocessor(input_signal=audio, length=length)
        encoded, encoded_length = tiny_model.encoder(audio_signal=mel, length=mel_length)
    assert mel.shape[-1] == tiny_contract.mel_frames >= int(mel_length[0]) >= tiny_contract.mel_frames - 1
    assert encoded.shape[-1] == tiny_contract.encoder_frames >= int(encoded_length[0])


def test_fp16_packages_compute_in_fp16_with_fp32_io(tiny_packages, tiny_contract, precision):
    """Coverage: fp16 programs hold fp16 tensors inside while audio and every I/O stay fp32/int32."""
    for component in tiny_contract.components.values():
        path = tiny_packages / component.package_name
        inputs, outputs = package_io(path)
        assert {d.dtype for d in (*inputs, *outputs)} <= {FP32, INT32}
        main = program_of(path).functions["main"]
        block = main.block_specializations[main.opset]
        fp16_ops = [op for op in block.operations
                    for out in op.outputs if out.type.tensorType.dataType == ct.proto.MIL_pb2.FLOAT16]
        assert bool(fp16_ops) == (precision == "fp16" and component.name not in FP32_FRONT_END), component.name


def test_metadata_agrees_with_packages_and_contract(tiny_packages, tiny_contract, precision):
    """Coverage: metadata.json's contract, package files and sizes, precision and model constants."""
    metadata = json.loads((tiny_packages / "metadata.json").read_text())
    assert metadata["precision"] == precision
    assert metadata["contract"] == json.loads(json.dumps(tiny_contract.to_dict()))
    assert metadata["blank_id"] == metadata["vocab_size"] == tiny_contract.model.vocab_size
    assert metadata["durations"] == list(tiny_contract.model.durations)
    assert set(metadata["packages"]) == set(COMPONENTS)
    for name, entry in metadata["packages"].items():
        path = tiny_packages / entry["file"]
        assert entry["file"] == tiny_contract[name].package_name
        assert entry["size_bytes"] == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        assert tiny_contract[name].fits_neural_engine
        assert entry["recommended_compute_units"] == "ALL"
    provenance = metadata["provenance"]
    assert set(provenance["versions"]) == {"python", "torch", "coremltools", "nemo"}
    assert provenance["exported_at"] and provenance["author"]


def test_tokenizer_file_loads_with_vocab_pieces(tiny_packages, tiny_contract):
    """Coverage: the exported tokenizer is a SentencePiece model with exactly V pieces."""
    metadata = json.loads((tiny_packages / "metadata.json").read_text())
    processor = spm.SentencePieceProcessor(model_file=str(tiny_packages / metadata["tokenizer"]))
    assert processor.get_piece_size() == tiny_contract.model.vocab_size
