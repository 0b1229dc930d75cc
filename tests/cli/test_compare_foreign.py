"""`compare`, `transcribe` and `evaluate` on another converter's export directory (tests/foreign_exports.py):
verdicts, diagnoses, the JSON and HTML records, and one line for what cannot be judged. Nothing is ever
written into the judged directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters.cli import app

runner = CliRunner()


def tree_digest(directory: Path) -> str:
    """Every file's relative path and bytes, in path order: what 'nothing written' is checked against."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*")):
        digest.update(path.relative_to(directory).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def foreign_copy(load_subject, foreign_export_of, tmp_path):
    """copy(source, flaw): a copy of a cached foreign export (no metadata.json of ours)."""
    def copy(source: str, flaw: str = "faithful") -> Path:
        return shutil.copytree(foreign_export_of(load_subject(source), flaw), tmp_path / f"{source}-{flaw}")
    return copy


def compare(packages, *options):
    return runner.invoke(app, ["compare", "--packages", str(packages), "--backend", "mil", "--runs", "1",
                               "--warmup", "0", *options])


class Page(HTMLParser):
    """The verdict badge's class and every diagnosis's cause."""

    def __init__(self, text: str):
        super().__init__()
        self.verdict, self.causes = None, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id") == "verdict":
            self.verdict = attributes.get("class")
        if "diagnosis" in (attributes.get("class") or "").split():
            self.causes.append(attributes.get("data-cause"))


def test_a_faithful_foreign_export_passes_and_writes_only_where_asked(foreign_copy, tmp_path):
    """Coverage: exit 0 on the digits export of an independent converter; the JSON record and HTML page say
    pass, list each package with its interface differences; the directory is byte-identical afterwards."""
    packages = foreign_copy("digits")
    before = tree_digest(packages)
    result = compare(packages, "--model", "digits", "--json", str(tmp_path / "r.json"), "--report",
                     str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert tree_digest(packages) == before
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["verdict"] == "pass" and record["export"]["origin"] == "foreign"
    assert {p["component"] for p in record["packages"] if p["judged"]} == {
        "preprocessor", "encoder", "decoder", "joint", "joint_decision"}
    joint_decision = next(p for p in record["packages"] if p["component"] == "joint_decision")
    assert "no top_k_ids output: judged on the others" in joint_decision["interface"]
    assert record["export"]["window_seconds"] == 15.0 and record["export"]["waveform"] == "flat"
    assert all(d["passed"] for d in record["diffs"]) and record["diagnoses"] == []
    assert Page((tmp_path / "r.html").read_text()).verdict == "pass"


def test_a_flawed_foreign_export_fails_with_its_diagnosis(foreign_copy, tmp_path):
    """Coverage: exit 1; the JSON record and the HTML page name the swapped state as the likely cause."""
    packages = foreign_copy("tiny", "swapped_state")
    result = compare(packages, "--model", "tiny", "--json", str(tmp_path / "r.json"), "--report",
                     str(tmp_path / "r.html"))
    assert result.exit_code == 1, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["verdict"] == "fail"
    assert {"component": "decoder", "cause": "swapped_state"}.items() <= record["diagnoses"][0].items()
    page = Page((tmp_path / "r.html").read_text())
    assert page.verdict == "fail" and page.causes == ["swapped_state"]
    assert "likely cause (decoder, swapped_state)" in result.output


def test_map_names_a_package_discovery_would_not_find(foreign_copy, tmp_path):
    """Coverage: --map judges a package under any file name as the named component."""
    packages = foreign_copy("tiny")
    (packages / "RNNTJoint.mlpackage").rename(packages / "stage3.mlpackage")
    result = compare(packages, "--model", "tiny", "--map", "joint=stage3.mlpackage", "--json",
                     str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert any(p["component"] == "joint" and p["path"] == "stage3.mlpackage" for p in record["packages"])


def not_an_ml_program(packages: Path) -> None:
    """An encoder whose spec is not a Core ML model at all."""
    spec = next((packages / "ParakeetEncoder.mlpackage").rglob("model.mlmodel"))
    spec.write_bytes(b"\x00garbage" * 64)


BAD_INPUT = {
    "empty directory": (lambda p: [shutil.rmtree(x) for x in p.iterdir() if x.is_dir()], ["--model", "tiny"],
                        "no recognisable Core ML package"),
    "not an ML program": (not_an_ml_program, ["--model", "tiny"], "cannot read its spec"),
    "another model's packages": (lambda p: None, ["--model", "digits"], "do not match this model"),
    "map to a missing file": (lambda p: None, ["--model", "tiny", "--map", "joint=absent.mlpackage"], "not found"),
    "map to an unknown component": (lambda p: None, ["--model", "tiny", "--map", "vocoder=RNNTJoint.mlpackage"],
                                    "unknown component 'vocoder'"),
    "no model": (lambda p: None, [], "pass --model SRC"),
}


@pytest.mark.parametrize("problem", list(BAD_INPUT))
def test_what_cannot_be_judged_is_one_line_and_writes_nothing(foreign_copy, tmp_path, problem, one_line_error):
    """Coverage: each bad input of issue 28 is one line and exit 2; no record is written, the directory is
    unchanged."""
    damage, options, fragment = BAD_INPUT[problem]
    packages = foreign_copy("tiny")
    damage(packages)
    before = tree_digest(packages)
    one_line_error(compare(packages, *options, "--json", str(tmp_path / "r.json")), fragment)
    assert not (tmp_path / "r.json").exists() and tree_digest(packages) == before


def test_transcribe_and_evaluate_take_a_foreign_export(foreign_copy):
    """Coverage: `evaluate --model` runs another converter's digits export and makes NeMo's decisions on every
    held-out file; `transcribe --model` decodes with the model's tokenizer to the same text."""
    from exporters.audio import FIXTURE_AUDIO_DIR

    packages = foreign_copy("digits")
    clip = sorted((FIXTURE_AUDIO_DIR / "digits").glob("*.wav"))[0]
    evaluated = runner.invoke(app, ["evaluate", "--packages", str(packages), "--model", "digits", "--backend", "mil"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout[evaluated.stdout.index("{"):evaluated.stdout.rindex("}") + 1])
    assert report["summary"]["decisions_identical"] == 1.0, report["summary"]
    hypothesis = next(f["hypothesis"] for f in report["files"] if Path(f["audio_filepath"]).name == clip.name)
    transcribed = runner.invoke(app, ["transcribe", "--packages", str(packages), "--model", "digits", "--backend",
                                      "mil", str(clip)])
    assert transcribed.exit_code == 0, transcribed.output
    assert transcribed.stdout.strip().splitlines()[-1] == hypothesis


@pytest.mark.parametrize("command", ["evaluate", "transcribe"])
def test_a_foreign_export_without_its_model_is_one_line_before_any_work(foreign_copy, command, one_line_error):
    """Coverage: evaluate, and transcribe over several files (worker processes), of another converter's export
    without --model say so in one line (exit 2) before any file is decoded."""
    from exporters.audio import FIXTURE_AUDIO_DIR

    clips = [str(path) for path in sorted((FIXTURE_AUDIO_DIR / "digits").glob("*.wav"))[:2]]
    options = ["--jobs", "1", *clips] if command == "transcribe" else []
    result = runner.invoke(app, [command, "--packages", str(foreign_copy("digits")), "--backend", "mil", *options])
    one_line_error(result, "pass --model SRC")


def test_packages_in_fluidaudios_layout_without_our_metadata_are_judged(load_subject, tmp_path):
    """Coverage: FluidAudio's file names as a model hub ships them (Preprocessor, Encoder, Decoder, JointDecisionv3;
    no metadata.json of ours): found by name, the flat waveform and single-step names bound, every gate passes."""
    downloaded = shutil.copytree(load_subject("tiny").packages("fp32", "fluidaudio"), tmp_path / "parakeet-tdt")
    (downloaded / "metadata.json").unlink()
    result = compare(downloaded, "--model", "tiny", "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert {p["component"]: p["path"] for p in record["packages"] if p["judged"]} == {
        "preprocessor": "Preprocessor.mlpackage", "encoder": "Encoder.mlpackage", "decoder": "Decoder.mlpackage",
        "joint_decision_single_step": "JointDecisionv3.mlpackage"}
    assert record["export"]["waveform"] == "flat" and record["export"]["top_k"] == 8
