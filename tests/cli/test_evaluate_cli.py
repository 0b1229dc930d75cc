"""`parakeet-coreml evaluate`: a JSON report and a table for packages or NeMo on a manifest; bad input is
one error line."""

from __future__ import annotations

import json
import os

import pytest
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
    manifest's text), NeMo's decisions (and so NeMo's text and WER) on every file, RTFx, the bytes of the packages
    used, and the host and versions the report was measured with."""
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
    assert [f["nemo_hypothesis"] for f in report["files"]] == [f["hypothesis"] for f in report["files"]]
    assert summary["nemo_wer"] == summary["wer"]
    measured = report["measured"]
    assert measured["date"][:4] >= "2026" and measured["host"]["cores"] >= 1
    assert set(measured["host"]["versions"]) >= {"torch", "coremltools", "nemo"}


def test_nemo_itself_with_right_context(tmp_path):
    """Coverage: --model evaluates NeMo (no agreement with itself to report) and --right-context counts its
    own flips. The report is written with the user's ordinary file mode, not its temporary file's private 0600."""
    manifest = write_manifest(tmp_path / "m.jsonl", held_out_manifest("digits")[:3])
    result = evaluate("--model", "digits", "--manifest", manifest, "--report", tmp_path / "r.json", "--right-context")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["files"] == 3 and "token_agreement" not in report["summary"]
    assert report["right_context"]["nemo"]["clips"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_input_is_one_line(tmp_path, tiny_packages_fp32, one_line_error):
    """Coverage: no system, an export with a model it was not exported from, a model with no held-out set and
    no manifest, a model file that is missing, a manifest line without text."""
    one_line_error(evaluate("--manifest", tmp_path / "m.jsonl"), "pass --packages (an export), --model")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--model", "digits"),
                   "no longer matches the exported weights")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--backend", "mil"), "no held-out set for model 'tiny'")
    one_line_error(evaluate("--model", "bogus"), "'bogus'", "pass a path to a .nemo file")
    one_line_error(evaluate("--model", tmp_path / "absent.nemo", "--manifest", write_manifest(
        tmp_path / "m.jsonl", held_out_manifest("digits")[:1])), "checkpoint not found")
    (tmp_path / "no-text.jsonl").write_text(json.dumps({"audio_filepath": "a.wav"}) + "\n")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", tmp_path / "no-text.jsonl"),
                   "no 'text' field")


def test_unreadable_files_get_error_records_and_the_rest_is_evaluated(tmp_path, load_subject):
    """Coverage: a manifest naming a missing file and a file that is not audio beside a good clip: those two get
    error records (listed, not counted in the rates), the good clip is evaluated, exit 1 (issue 29, item 6)."""
    (tmp_path / "notes.wav").write_text("not audio")
    good = held_out_manifest("digits")[:1]
    manifest = write_manifest(tmp_path / "m.jsonl", [*good, (tmp_path / "absent.wav", "one"),
                                                     (tmp_path / "notes.wav", "two")])
    result = evaluate("--packages", load_subject("digits").packages("fp32"), "--manifest", manifest, "--backend",
                      "mil", "--report", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [f["audio_filepath"] for f in report["files"]] == [str(good[0][0])]
    assert report["summary"]["unreadable_files"] == 2
    assert [e["audio_filepath"] for e in report["errors"]] == [str(tmp_path / "absent.wav"), str(tmp_path / "notes.wav")]
    assert "audio file not found" in report["errors"][0]["error"] and "cannot read audio" in report["errors"][1]["error"]
    assert result.output.count("not evaluated:") == 2


@pytest.mark.parametrize("content, fragment", [
    ('{"audio_filepath": "a.wav", "text": "caf\xe9"}\n'.encode("latin-1"), "is not UTF-8 text (byte 40)"),
    (bytes(range(256)), "is not UTF-8 text (byte 128)"),
])
def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path, tiny_packages_fp32, content, fragment, one_line_error):
    """Coverage: a manifest in Latin-1, or binary bytes: one line naming the first bad byte (issue 29, item 6)."""
    (tmp_path / "m.jsonl").write_bytes(content)
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", tmp_path / "m.jsonl"), fragment)


def test_output_files_are_checked_before_the_work(tmp_path, tiny_packages_fp32, one_line_error):
    """Coverage: evaluate --report and search-mixed --output into a missing folder, or naming a directory, are
    refused in one line before any model is loaded or clip decoded (issue 29, item 6)."""
    manifest = write_manifest(tmp_path / "m.jsonl", held_out_manifest("digits")[:1])
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", manifest, "--report",
                            tmp_path / "absent" / "r.json"), f"folder {tmp_path / 'absent'} does not exist")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", manifest, "--report", tmp_path),
                   "is a directory: name a file")
    one_line_error(runner.invoke(app, ["search-mixed", "--model", "tiny", "--output", str(tmp_path / "absent" / "p.json")]),
                   f"folder {tmp_path / 'absent'} does not exist")


@pytest.mark.parametrize("line, fragment", [
    ('{"audio_filepath": "a.wav", "text": null}', "'text' must be a string, not null"),
    ('{"audio_filepath": "a.wav", "text": 419728}', "'text' must be a string, not int"),
    ('{"audio_filepath": "a.wav"}', "no 'text' field (the reference text)"),
    ('{"text": "one"}', "no 'audio_filepath' field"),
    ('{"audio_filepath": 7, "text": "one"}', "'audio_filepath' must be a non-empty string, not int"),
    ('["a.wav", "one"]', "a manifest line is a JSON object, not list"),
    ('{"audio_filepath": "a.wav", "text": "one"', "not JSON"),
])
def test_manifest_fields_of_the_wrong_type_are_named(tmp_path, tiny_packages_fp32, line, fragment, one_line_error):
    """Coverage: a manifest line whose field is missing or of the wrong type says which and where, in one line
    (it used to end in an AttributeError traceback, or print Python's exception text) (issue 35 items 5, 10)."""
    (tmp_path / "m.jsonl").write_text(line + "\n")
    one_line_error(evaluate("--packages", tiny_packages_fp32, "--manifest", tmp_path / "m.jsonl"),
                   f"m.jsonl:1: {fragment}")

