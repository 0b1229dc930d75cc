"""Many files at corpus scale (exporters.corpus, issue 33): two worker processes and Ray give the records one
process gives, in manifest order; an output file makes a run resumable after a real SIGKILL; a worker that dies
has its file tried again, then recorded as an error; bad settings are one line, exit 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters.audio import FIXTURE_AUDIO_DIR
from exporters.cli import app
from exporters.corpus import ATTEMPTS, Entry, run
from exporters.evaluate import held_out_manifest

runner = CliRunner()
TIMINGS = ("decode_seconds", "rtf", "rtfx")  # wall-clock fields: the only ones that may differ between runs


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def write_manifest(path: Path, entries) -> Path:
    path.write_text("".join(json.dumps({"audio_filepath": str(audio), "text": text}) + "\n" for audio, text in entries))
    return path


def evaluate_report(tmp_path: Path, packages, *options) -> dict:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    result = runner.invoke(app, ["evaluate", "--packages", str(packages), "--backend", "mil", "--report", str(report),
                                 *map(str, options)])
    assert result.exit_code == 0, result.output
    return json.loads(report.read_text())


def transcribe_lines(packages, inputs, *options) -> list[dict]:
    result = runner.invoke(app, ["transcribe", "--packages", str(packages), "--backend", "mil", *map(str, inputs),
                                 *map(str, options)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def digits_in_one_process(load_subject, tmp_path_factory):
    """The digits fp32 export and its evaluate report on the held-out set made in this process (--jobs 1)."""
    packages = load_subject("digits").packages("fp32")
    return packages, evaluate_report(tmp_path_factory.mktemp("one"), packages, "--jobs", "1")


def same_report(ours: dict, reference: dict) -> None:
    assert without_timings(ours["files"]) == without_timings(reference["files"])
    assert without_timings(ours["summary"]) == without_timings(reference["summary"])
    assert (ours["system"], ours["package_bytes"], ours["errors"]) == \
        (reference["system"], reference["package_bytes"], reference["errors"])


def test_evaluate_in_two_workers_equals_one_process(tmp_path, digits_in_one_process):
    """Coverage: `evaluate --jobs 2` on the digits held-out set (the command run as a user runs it): the same
    per-file records (NeMo's decisions on each), in the same order, and the same totals as --jobs 1; nothing but
    the report said (no warning from the workers or their ending: they end with os._exit) and no temporary file
    left behind."""
    packages, reference = digits_in_one_process
    assert reference["summary"]["files"] == len(held_out_manifest("digits")) >= 5
    report, temporary = tmp_path / "report.json", tmp_path / "tmp"
    temporary.mkdir()
    two = subprocess.run([sys.executable, "-m", "exporters.cli", "evaluate", "--packages", str(packages), "--backend",
                          "mil", "--jobs", "2", "--report", str(report)], capture_output=True, text=True,
                         env={**os.environ, "TMPDIR": str(temporary)})
    assert two.returncode == 0 and "WER" in two.stderr, two.stderr
    assert "warn" not in two.stderr.lower()
    assert list(temporary.iterdir()) == []
    same_report(json.loads(report.read_text()), reference)


def test_evaluate_on_ray_equals_one_process(tmp_path, digits_in_one_process):
    """Coverage: `evaluate --ray auto` with a local Ray cluster (ray.init(num_cpus=2) here, as a user's script
    would): the records and totals of --jobs 1."""
    ray = pytest.importorskip("ray", reason="the cluster extra (Ray) is part of the dev dependencies")
    packages, reference = digits_in_one_process
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        same_report(evaluate_report(tmp_path, packages, "--ray", "auto"), reference)
    finally:
        ray.shutdown()


def test_transcribe_in_two_workers_prints_the_lines_of_one_process(load_subject):
    """Coverage: `transcribe --jobs 2` over a manifest prints, in manifest order, the JSON lines of --jobs 1."""
    packages = load_subject("digits").packages("fp32")
    manifest = FIXTURE_AUDIO_DIR / "digits"
    one = transcribe_lines(packages, [manifest], "--jobs", "1")
    two = transcribe_lines(packages, [manifest], "--jobs", "2")
    assert len(one) >= 5 and without_timings(two) == without_timings(one)


def output_records(path: Path) -> list[dict]:
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the output ends inside a line"
    records = [json.loads(line) for line in lines[:-1]]  # each line whole JSON
    return [r for r in records if "run" not in r and "described" not in r]


def transcribing(tmp_path: Path, packages: Path, records: int, **popen_options):
    """`transcribe --jobs 2 --output FILE` over the sentences held-out set, started as a command and still running
    once `records` records are in its output: the process, the manifest and the output."""
    manifest = write_manifest(tmp_path / "m.jsonl", held_out_manifest("sentences"))
    output = tmp_path / "out.jsonl"
    child = subprocess.Popen([sys.executable, "-m", "exporters.cli", "transcribe", "--packages", str(packages),
                              "--backend", "mil", "--jobs", "2", "--output", str(output), str(manifest)],
                             stderr=subprocess.PIPE, text=True, **popen_options)
    deadline = time.monotonic() + 300
    while not (output.exists() and len(output_records(output)) >= records):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "no records within 300 s"
        time.sleep(0.005)
    return child, manifest, output


def test_a_killed_run_resumes_where_it_stopped(tmp_path, load_subject):
    """Coverage: `transcribe --jobs 2 --output FILE` killed with SIGKILL (the whole process group: the command and
    its workers) after a few records leaves only whole lines; a line cut short by a crash of the machine is
    dropped; running again does only the missing files (each file has exactly one record in the end) and prints
    what an uninterrupted run prints."""
    packages = load_subject("sentences").packages("fp32")
    child, manifest, output = transcribing(tmp_path, packages, 3, stdout=subprocess.DEVNULL, start_new_session=True)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    before = output_records(output)
    assert 3 <= len(before) < 16, "the run was not killed mid-way"
    with output.open("ab") as torn:
        torn.write(b'{"audio_filepath": "' + str(manifest).encode())  # a crash of the machine mid-line
    resumed = transcribe_lines(packages, [manifest], "--jobs", "1", "--output", output)
    after = output_records(output)
    assert len(after) == 16 and after[:len(before)] == before
    assert sorted(r["audio_filepath"] for r in after) == sorted(str(p) for p, _ in held_out_manifest("sentences"))
    assert without_timings(resumed) == without_timings(transcribe_lines(packages, [manifest], "--jobs", "1"))


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of `parent` (not multiprocessing's resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == parent and b"multiprocessing.spawn" in command:
                pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc (Linux)")
def test_a_worker_killed_mid_run_has_its_file_done_again(tmp_path, load_subject):
    """Coverage: `transcribe --jobs 2 --output FILE` run as a command, one of its workers killed with SIGKILL
    after the first records (as the OOM killer ends one): the run finishes, exit 0, each file has exactly one
    record, and it prints what --jobs 1 prints."""
    packages = load_subject("sentences").packages("fp32")
    child, manifest, output = transcribing(tmp_path, packages, 2, stdout=subprocess.PIPE)
    workers = worker_pids(child.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    records = output_records(output)
    assert sorted(r["audio_filepath"] for r in records) == sorted(str(p) for p, _ in held_out_manifest("sentences"))
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert without_timings(lines) == without_timings(transcribe_lines(packages, [manifest], "--jobs", "1"))


class DyingWork:
    """A work whose worker process dies on some files: `die-always` every time, `die-once` the first time (a marker
    file remembers)."""

    command, stage = "test", "done"

    def __init__(self, marker: Path):
        self.marker = marker

    def settings(self) -> dict:
        return {"command": self.command}

    def open(self):
        return None

    def describe(self, state) -> dict:
        return {}

    def record(self, state, entry: Entry) -> dict:
        if entry.path.name == "die-always" or (entry.path.name == "die-once" and not self.marker.exists()):
            self.marker.touch()
            os._exit(9)
        return {"audio_filepath": str(entry.path), "duration": 1.0}

    def bytes_needed(self) -> int:
        return 0

    @staticmethod
    def audio_seconds(record: dict) -> float:
        return record.get("duration", 0.0)


def test_a_worker_that_dies_has_its_file_tried_again_then_an_error(tmp_path):
    """Coverage: worker processes that die (exit 9, as a kill or the OOM killer ends them) while decoding: the file
    is given to a new worker once more; a file whose worker dies both times gets an error record; every other file
    its record, in manifest order."""
    names = ["a", "die-once", "b", "die-always", "c", "d"]
    entries = [Entry(index, Path(name), None) for index, name in enumerate(names)]
    outcome = run(DyingWork(tmp_path / "marker"), entries, jobs=2, progress=False)
    assert [r["audio_filepath"] for r in outcome.records] == names
    errors = {r["audio_filepath"]: r["error"] for r in outcome.records if "error" in r}
    assert list(errors) == ["die-always"] and f"died {ATTEMPTS} times" in errors["die-always"]


class DyingWhileOpening(DyingWork):
    """A work whose worker processes die while opening it: the first one (a marker file remembers), or all."""

    def __init__(self, marker: Path, always: bool):
        super().__init__(marker)
        self.always = always

    def open(self):
        if not self.always:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))  # only the first worker creates it
            except FileExistsError:
                return None
        os._exit(9)


def test_a_worker_that_dies_while_opening_is_replaced_once(tmp_path):
    """Coverage: a worker process that dies while opening the packages (killed, out of memory) is replaced and the
    run gives every record; workers that die while opening twice end the run with one line."""
    from exporters.errors import UserError

    entries = [Entry(index, Path(name), None) for index, name in enumerate("abc")]
    outcome = run(DyingWhileOpening(tmp_path / "once", always=False), entries, jobs=2, progress=False)
    assert [r["audio_filepath"] for r in outcome.records] == list("abc")
    with pytest.raises(UserError, match=f"workers died {ATTEMPTS} times while opening the packages"):
        run(DyingWhileOpening(tmp_path / "always", always=True), entries, jobs=2, progress=False)


def test_a_workers_peak_memory_is_its_own(tmp_path):
    """Coverage: the peak memory reported for a worker is the worker's, not its parent's: a parent holding 1 GB
    starts workers that hold a few tens of MB (getrusage's peak survives the exec that starts a worker)."""
    parent_ballast = bytearray(2**30)
    parent_ballast[::4096] = b"\1" * len(parent_ballast[::4096])  # every page resident
    entries = [Entry(index, Path(name), None) for index, name in enumerate("ab")]
    outcome = run(DyingWork(tmp_path / "marker"), entries, jobs=2, progress=False)
    del parent_ballast
    assert 0 < outcome.worker_peak_bytes < 2**29


class HalfHourWork(DyingWork):
    """A work whose every file is half an hour of audio, decoded at once."""

    def record(self, state, entry: Entry) -> dict:
        return {"audio_filepath": str(entry.path), "duration": 1800.0}


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_shows_files_audio_hours_rtfx_and_eta_on_a_terminal_only(tmp_path, monkeypatch, terminal):
    """Coverage: the progress bar on a terminal: files done of all, hours of audio, RTFx and the time left, erased
    at the end; in a log (no terminal) nothing."""
    import re

    from rich.console import Console

    import exporters.cli

    said = io.StringIO()
    monkeypatch.setattr(exporters.cli, "console", Console(file=said, force_terminal=terminal, width=120))
    entries = [Entry(index, Path(name), None) for index, name in enumerate("abcd")]
    run(HalfHourWork(tmp_path / "marker"), entries, jobs=1)
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", said.getvalue()).split("\r")
    if not terminal:
        assert said.getvalue() == ""
        return
    assert any(re.fullmatch(r" ━+ 0/4 files 0\.00 h audio, RTFx - -:--:--", frame) for frame in frames), frames
    assert any(re.fullmatch(r" ━+ 4/4 files 2\.00 h audio, RTFx \d+\.\d 0:00:00\n?", frame) for frame in frames), frames
    assert frames[-1] == ""  # erased


def other_run_output(path: Path) -> Path:
    path.write_text(json.dumps({"run": {"command": "transcribe", "packages": "/elsewhere"}}) + "\n")
    return path


@pytest.mark.parametrize("options, fragment", [
    (["--jobs", "0"], "--jobs must be 1 or more, got 0"),
    (["--jobs", "-2"], "--jobs must be 1 or more, got -2"),
    (["--ray", "127.0.0.1:1"], "--ray 127.0.0.1:1: no Ray cluster answers there"),
    (["--ray", "nonsense"], "not a cluster address"),
    (["--output", "{tmp}"], "is a folder"),
    (["--output", "{other}"], "holds the records of a different run"),
])
@pytest.mark.parametrize("command", ["transcribe", "evaluate"])
def test_bad_corpus_settings_are_one_line(tmp_path, load_subject, command, options, fragment):
    packages = load_subject("digits").packages("fp32")
    other = other_run_output(tmp_path / "other.jsonl")
    options = [o.format(tmp=tmp_path, other=other) for o in options]
    inputs = [str(FIXTURE_AUDIO_DIR / "digits")] if command == "transcribe" else []
    result = runner.invoke(app, [command, "--packages", str(packages), *inputs, *options])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and fragment in result.output


def test_ray_not_installed_names_the_extra(load_subject, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    result = runner.invoke(app, ["evaluate", "--packages", str(load_subject("digits").packages("fp32")),
                                 "--ray", "auto"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "parakeet-coreml[cluster]" in result.output


def test_right_context_is_refused_with_parallel_options(load_subject):
    result = runner.invoke(app, ["evaluate", "--packages", str(load_subject("digits").packages("fp32")),
                                 "--right-context", "--jobs", "2"])
    assert result.exit_code == 2 and "--right-context" in result.output and result.output.count("\n") == 1


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML's runtime opens there")
def test_packages_the_workers_cannot_open_are_one_line(load_subject):
    """Coverage: `--backend coreml` off macOS with --jobs 2: the workers cannot open the packages; the command says
    why in one line, exit 2 (no traceback of a worker)."""
    result = runner.invoke(app, ["transcribe", "--packages", str(load_subject("digits").packages("fp32")),
                                 str(FIXTURE_AUDIO_DIR / "digits"), "--backend", "coreml", "--jobs", "2"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "Core ML" in result.output and "Traceback" not in result.output


def test_stream_with_corpus_options_is_one_line(load_subject):
    result = runner.invoke(app, ["transcribe", "--packages", str(load_subject("digits").packages("fp32")),
                                 str(FIXTURE_AUDIO_DIR / "digits" / "heldout_00000.wav"), "--stream", "--jobs", "2"])
    assert result.exit_code == 2 and "--stream" in result.output and result.output.count("\n") == 1
