"""`parakeet-coreml evaluate`: a JSON report and a table for packages or NeMo on a manifest; bad input is
one error line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from exporters.cli import app
from exporters.evaluate import held_out_manifest
from exporters.wer import word_error_rate

runner = CliRunner()


def evaluate(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def write_manifest(path, entries):
    path.write_text("".join(json.dumps({"audio_filepath": str(audio), "text": text, "duration": 1.0}) + "\n"
                            for audio, text in entries))
    return path


def test_packages_on_a_manifest(tmp_path, load_subject):
    """Coverage: the digits fp32 packages on two held-out clips: per-file and total WER (jiwer, against the
    manifest's text), NeMo's decisions on every file, RTFx and the bytes of the packages used."""
    digits = load_subject("digits")
    entries = held_out_manifest("digits")[:2]
    manifest = write_manifest(tmp_path / "m.jsonl", entries)
    result = evaluate("--packages", digits.packages("fp32"), "--manifest", manifest, "--report", tmp_path / "r.json",
                      "--backend", "mil")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    summary = report["summary"]
    assert summary["files"] == 2 and len(report["files"]) == 2
    assert summary["wer"] == word_error_rate([t for _, t in entries], [f["hypothesis"] for f in report["files"]])
    assert summary["decisions_identical"] == 1.0 and summary["token_agreement"] == 1.0
    assert summary["rtfx"] > 0 and summary["package_bytes"] == sum(report["package_bytes"].values()) > 0
    assert "WER" in result.output and "RTFx" in result.output


def test_nemo_itself_with_right_context(tmp_path):
    """Coverage: --model evaluates NeMo (no agreement with itself to report) and --right-context counts its
    own flips."""
    manifest = write_manifest(tmp_path / "m.jsonl", held_out_manifest("digits")[:3])
    result = evaluate("--model", "digits", "--manifest", manifest, "--report", tmp_path / "r.json", "--right-context")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["files"] == 3 and "token_agreement" not in report["summary"]
    assert report["right_context"]["nemo"]["clips"] == 3


def test_bad_input_is_one_line(tmp_path, tiny_packages_fp32, one_line_error):
    """Coverage: no system, an export with a model it was not exported from, a model with no held-out set and
    no manifest, a manifest line without text."""
    one_line_error(evaluate("--manifest", tmp_path / "m.jsonl"), "pass --packages (an export), --model")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--model", "digits"),
                   "no longer matches the exported weights")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--backend", "mil"), "no held-out set for model 'tiny'")
    (tmp_path / "no-text.jsonl").write_text(json.dumps({"audio_filepath": "a.wav"}) + "\n")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", tmp_path / "no-text.jsonl"),
                   "not a NeMo manifest line with audio_filepath and text")
