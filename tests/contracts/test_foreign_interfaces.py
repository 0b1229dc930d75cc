"""What is inferred from another converter's packages: fp16 I/O, flexible (RangeDim) inputs, a decoder that
takes other than one token per call, compiled .mlmodelc bundles and another tool's metadata.json."""

from __future__ import annotations

import json
import shutil

import coremltools as ct
import numpy as np
import pytest
import torch

from exporters.export_view import open_export
from exporters.parity.report import DEFAULT_CLIP, compare_view
from tests.foreign_exports import Decoder, Joint, convert


@pytest.fixture(scope="module")
def tiny(load_subject):
    return load_subject("tiny")


def save_joint(model, folder, frames, encoder_type, decoder_dtype=np.float32):
    """A joint package (tests/foreign_exports.Joint) with the given encoder input type."""
    hidden = model.decoder.pred_hidden
    example = (torch.randn(1, frames, model.encoder.d_model), torch.randn(1, hidden, 1))
    inputs = [encoder_type, ct.TensorType("decoder_output", shape=(1, hidden, 1), dtype=decoder_dtype)]
    convert(Joint(model.joint), example, inputs, ["joint_output"]).save(str(folder / "RNNTJoint.mlpackage"))


def test_fp16_inputs_and_a_flexible_frame_count_are_inferred_and_judged(tiny, tmp_path):
    """Coverage: a joint with fp16 inputs and a RangeDim frame axis: the view says so, feeds it cast and at its
    default shape (the window's frames), and its gates pass."""
    frames = tiny.contract.encoder_frames
    flexible = ct.TensorType("encoder_output", shape=(1, ct.RangeDim(1, frames, default=frames),
                                                      tiny.model.encoder.d_model), dtype=np.float16)
    save_joint(tiny.model, tmp_path, frames, flexible, np.float16)
    view = open_export(tmp_path, model=tiny.intact_model())
    joint = view.packages["joint"]
    assert joint.io_dtype == "fp16" and joint.not_judged is None
    assert any("encoder_output is fp16" in line for line in joint.interface)
    assert joint.flexible and "encoder_output" in joint.flexible[0]
    assert view.summary()["flexible_inputs"] == joint.flexible
    report = compare_view(view, DEFAULT_CLIP, "mil", 1, 0, None, None)
    assert report.passed, [d.describe() for d in report.diffs if not d.passed]


def test_a_decoder_of_two_steps_is_skipped_with_the_reason(tiny, tmp_path):
    """Coverage: targets [1, 2] (U = 2): not judged, said why, and not counted against the verdict."""
    spec = tiny.contract.model
    state = (spec.pred_layers, 1, spec.pred_hidden)
    convert(Decoder(tiny.model.decoder), (torch.tensor([[1, 2]], dtype=torch.int32), torch.zeros(state),
                                          torch.zeros(state)),
            [ct.TensorType("tokens", shape=(1, 2), dtype=np.int32), ct.TensorType("h0", shape=state),
             ct.TensorType("c0", shape=state)], ["decoder_output", "h_next", "c_next"]).save(
        str(tmp_path / "Decoder.mlpackage"))
    view = open_export(tmp_path, model=tiny.intact_model())
    decoder = view.packages["decoder"]
    assert "2 decoder steps (U) per call" in decoder.not_judged and not decoder.incompatible
    assert view.judged == [] and view.summary()["decoder_steps"] is None


def test_a_compiled_bundle_is_listed_and_another_tools_metadata_ignored(tiny, foreign_export_of, tmp_path):
    """Coverage: a .mlmodelc beside the packages is listed as not judged (its spec is read from the .mlpackage),
    and a metadata.json of another tool does not make the directory ours."""
    folder = shutil.copytree(foreign_export_of(tiny), tmp_path / "export")
    (folder / "JointDecisionv3.mlmodelc").mkdir()
    (folder / "metadata.json").write_text(json.dumps({"tool": "their-converter", "version": 2}))
    view = open_export(folder, model=tiny.intact_model())
    assert view.origin == "foreign"
    single = view.packages["joint_decision_single_step"]
    assert single.path.name == "JointDecisionv3.mlmodelc" and "compiled .mlmodelc" in single.not_judged
    assert "preprocessor" in view.judged
