"""`parakeet-coreml compare`: table, metadata record, plots, and a non-zero exit when a gate fails."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.cli import app

runner = CliRunner()


@pytest.fixture
def export_copy(tiny_packages_fp32, tmp_path):
    """A writable copy of the tiny fp32 export (compare writes metadata.json and plots)."""
    return shutil.copytree(tiny_packages_fp32, tmp_path / "export")


def compare(packages, *options):
    return runner.invoke(app, ["compare", "--packages", str(packages), "--backend", "mil", "--runs", "1",
                               "--warmup", "0", *options])


def test_compare_passes_and_records(export_copy, tiny_contract):
    """Coverage: exit 0, a table row per output, metadata parity record with latency, and PNG plots."""
    result = compare(export_copy)
    assert result.exit_code == 0, result.output
    assert "parity vs NeMo" in result.output and "latency per call" in result.output
    parity = json.loads((export_copy / "metadata.json").read_text())["parity"]
    assert parity["passed"] and parity["backend"] == "mil" and parity["precision"] == "fp32"
    assert len(parity["clip_sha256"]) == 64 and set(parity["versions"]) >= {"torch", "coremltools", "nemo"}
    assert {d["component"] for d in parity["diffs"]} == set(tiny_contract.components)
    assert {(entry["component"], entry["side"]) for entry in parity["latency"]} == {
        (name, side) for name in tiny_contract.components for side in ("mil", "nemo")}
    plots = sorted(p.name for p in (export_copy / "plots").glob("*.png"))
    assert any(p.startswith("preprocessor_mel") for p in plots)
    assert any(p.startswith("encoder_encoder") for p in plots)
    assert any(p.startswith("decoder_decoder") for p in plots)
    assert any(p.startswith("joint_token_logits") for p in plots)


def test_compare_checks_every_window(load_subject, tmp_path):
    """Coverage: on the tiny 2.5 / 5 / 10 / 15 s export, compare runs the gates of every window's functions
    (the smaller windows on the clip's first window-length) and passes."""
    export = shutil.copytree(load_subject("tiny").windowed("fp32"), tmp_path / "export")
    result = compare(export)
    assert result.exit_code == 0, result.output
    diffs = json.loads((export / "metadata.json").read_text())["parity"]["diffs"]
    for function in ("(window_2500ms)", "(window_5000ms)", "(window_10000ms)"):
        assert {d["component"] for d in diffs if function in d["case"]} == {
            "preprocessor", "encoder", "joint", "mel_encoder", "joint_decision"}


def test_compare_fails_on_a_drifted_package(export_copy, tiny_contract, perturb_package, reseal_export):
    """Coverage: one weight changed in the joint package (checksums re-recorded, as a conversion regression
    would leave them): exit 1, the joint rows say NO."""
    perturb_package(export_copy / tiny_contract["joint"].package_name)
    reseal_export(export_copy)
    result = compare(export_copy)
    assert result.exit_code == 1, result.output
    failing_rows = [line for line in result.output.splitlines() if "NO" in line]
    assert failing_rows and all(line.split("│")[1].strip().startswith("joint") for line in failing_rows)
    assert json.loads((export_copy / "metadata.json").read_text())["parity"]["passed"] is False


def test_compare_on_a_non_export_dir(tmp_path, one_line_error):
    """Coverage: a directory without metadata.json: one error line, exit 2."""
    one_line_error(compare(tmp_path), "metadata.json")


def test_compare_refuses_a_plots_file_and_a_clip_shorter_than_one_hop(export_copy, tmp_path, one_line_error):
    """Coverage: --plots naming a file, or a folder whose parent is missing, is one line before any work; a
    1-sample clip (NeMo gives it no feature frame) is one line, not a convolution's RuntimeError (issue 29,
    item 6)."""
    import soundfile as sf

    (tmp_path / "a-file").write_text("mine")
    one_line_error(compare(export_copy, "--plots", tmp_path / "a-file"), "is a file: name a folder")
    assert (tmp_path / "a-file").read_text() == "mine"
    one_line_error(compare(export_copy, "--plots", tmp_path / "no" / "plots"), "folder " + str(tmp_path / "no"))
    sf.write(tmp_path / "one.wav", np.array([0.1], np.float32), 16000)
    one_line_error(compare(export_copy, "--audio", tmp_path / "one.wav"), "holds 1 samples", "less than one hop")


def test_compare_unknown_backend(export_copy, one_line_error):
    """Coverage: an unknown --backend is one line naming the choices."""
    result = runner.invoke(app, ["compare", "--packages", str(export_copy), "--backend", "npu"])
    one_line_error(result, "unknown backend 'npu'", "choose one of")


def test_compare_judges_by_another_tolerance_table(export_copy, tmp_path):
    """Coverage: `--tolerances` replaces the table: with every continuous bar at zero, the encoder (whose
    package differs from NeMo by float rounding) fails where the shipped table passes it."""
    from exporters.parity.diff import TOLERANCE_FILE

    strict = tmp_path / "strict.toml"
    strict.write_text(TOLERANCE_FILE.read_text().replace("atol = 1e-4, rtol = 1e-3", "atol = 0.0, rtol = 0.0"))
    result = compare(export_copy, "--tolerances", str(strict))
    assert result.exit_code == 1, result.output
    assert any(line.split("│")[1].strip() == "encoder" for line in result.output.splitlines() if "NO" in line)


@pytest.mark.parametrize("table, fragment", [("[encoder.fp32]\nencoder = { atol = 1e-4, tight = true }\n",
                                              "cannot read tolerance table"),
                                             ("[encoder.fp32]\nencoder = { atol = 1e-4 }\n",
                                              "no tolerance for preprocessor/fp32/mel")])
def test_compare_bad_tolerance_table(export_copy, tmp_path, one_line_error, table, fragment):
    """Coverage: a malformed table, or one missing an output's row, is one error line, not a traceback."""
    path = tmp_path / "table.toml"
    path.write_text(table)
    one_line_error(compare(export_copy, "--tolerances", str(path)), fragment)


@pytest.mark.parametrize("row, fragment", [
    ("[encoder.fp32]\nencoder = { atol = -1e-4, rtol = 1e-3 }\n", "atol = -0.0001; give a non-negative finite"),
    ("[encoder.fp32]\nencoder = { atol = 1e-4, rtol = nan }\n", "rtol = nan"),
    ("[encoder.fp32]\nencoder = { atol = \"small\" }\n", "atol = 'small'"),
    ("[encodr.fp32]\nencoder = { atol = 1e-4 }\n", "unknown component 'encodr'"),
    ("[encoder.fp64]\nencoder = { atol = 1e-4 }\n", "unknown precision 'fp64'"),
    ("[encoder.fp32]\nencoder = { atol = 1e-4, scale = \"db\" }\n", "unknown scale 'db'"),
])
def test_a_tolerance_table_is_checked_before_anything_is_judged(export_copy, tmp_path, row, fragment,
                                                               one_line_error):
    """Coverage: negative, non-finite or non-numeric bars, unknown components, precisions and scales are one
    line, before any model loads: nothing is judged, so no failure is recorded into the export's metadata.json
    (negative bars used to fail every gate, and that was saved) (issue 35 item 10)."""
    from exporters.parity.diff import TOLERANCE_FILE

    path = tmp_path / "table.toml"
    path.write_text(TOLERANCE_FILE.read_text() + "\n" + row if "encoder.fp32]" not in row else row)
    before = (export_copy / "metadata.json").read_bytes()
    one_line_error(compare(export_copy, "--tolerances", str(path)), fragment)
    assert (export_copy / "metadata.json").read_bytes() == before


def test_compare_judges_a_compressed_export_by_its_variant_rows(tmp_path, load_subject):
    """Coverage: on a palette6 export, compare reads the compression from metadata.json and judges the
    compressed components by the palette6 rows (a damaged palette fails them: tests/parity/test_compressed.py)."""
    tiny = load_subject("tiny")
    packages = shutil.copytree(tiny.compressed("fp16", "palette6", ("encoder", "mel_encoder")), tmp_path / "export")
    result = compare(packages)
    assert result.exit_code == 0, result.output
    diffs = json.loads((packages / "metadata.json").read_text())["parity"]["diffs"]
    assert {d["precision"] for d in diffs} == {"palette6"}
    assert all("psnr≥30dB" in d["tolerance"] for d in diffs if d["output"] == "encoder")
