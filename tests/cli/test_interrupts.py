"""Ctrl-C and SIGTERM, as a user sends them to a running command (issue 35 item 9): one line that says how far
the command got, exit 130, no traceback, no temporary files, and no report that is half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR
from exporters.evaluate import held_out_manifest

INTERRUPTED = 130
TORCH_CACHE = "torchinductor_"  # torch's compile cache folder: made by every run, finished or not
LOCKS = "parakeet-coreml-locks"  # convert's folder of lock files (each removed with its lock)


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    """The CLI in its own process group (as a terminal runs it) with its own temporary folder."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return subprocess.Popen([sys.executable, "-m", "exporters.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(scratch)})


def wait_for(condition, child: subprocess.Popen, what: str, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert child.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {limit_s} s"
        time.sleep(0.01)


def leftovers(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir() if not p.name.startswith(TORCH_CACHE))


def the_one_line(stderr: str) -> str:
    """What a command said on stderr, which must be one line (the whole stderr in the failure message)."""
    said = [line for line in stderr.splitlines() if line.strip()]
    assert len(said) == 1, stderr
    return said[0]


def write_manifest(path: Path, entries: list[tuple[Path, str]]) -> Path:
    path.write_text("".join(json.dumps({"audio_filepath": str(audio), "text": text}) + "\n" for audio, text in entries))
    return path


def test_sigterm_during_evaluate_removes_nemo_temporary_folder_and_writes_no_report(tmp_path):
    """SIGTERM while NeMo transcribes a file (its temporary manifest folder exists): the folder is removed, the
    report is not written, and the line counts the files NeMo finished."""
    entries = held_out_manifest("digits")[:3] * 70
    manifest = write_manifest(tmp_path / "m.jsonl", entries)
    child = start(tmp_path, "evaluate", "--model", "digits", "--manifest", manifest, "--report", tmp_path / "r.json")
    # NeMo's folder sits in the workers' temporary folder when the files run in worker processes (the default)
    wait_for(lambda: any((tmp_path / "tmp").rglob("manifest.json")), child, "NeMo's temporary manifest appeared")
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == INTERRUPTED, stderr
    line = the_one_line(stderr)
    assert line.startswith("error: interrupted after ") and line.endswith(f" of {len(entries)} files (evaluated)")
    assert "Traceback" not in stderr
    assert leftovers(tmp_path / "tmp") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "tmp"]


def test_sigterm_during_transcribe_keeps_the_records_printed_whole(tmp_path, tiny_packages_fp32):
    """SIGTERM after the first records of a manifest: every record printed is a whole JSON line, and the line says
    how many of the files were transcribed."""
    clip = FIXTURE_AUDIO_DIR / "short_4s.wav"
    manifest = write_manifest(tmp_path / "m.jsonl", [(clip, "")] * 500)
    child = start(tmp_path, "transcribe", "--packages", tiny_packages_fp32, manifest)
    first = child.stdout.readline()
    assert json.loads(first)["text"] is not None
    child.send_signal(signal.SIGTERM)
    rest, stderr = child.communicate(timeout=120)
    assert child.returncode == INTERRUPTED, stderr
    records = [json.loads(line) for line in [first, *rest.splitlines()]]
    line = the_one_line(stderr)
    assert line == f"error: interrupted after {len(records)} of 500 files (transcribed)"
    assert leftovers(tmp_path / "tmp") == []


def test_ctrl_c_while_convert_loads_the_model_is_one_line(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while convert loads the full-width model:
    one line, no traceback from torch or its worker processes, no output directory or staging folder."""
    child = start(tmp_path, "convert", "--model", "full-random", "--components", "joint", "--output-dir",
                  tmp_path / "out")
    time.sleep(8)  # imports done or under way; loading 627 M parameters takes longer
    assert child.poll() is None, "convert ended before it was interrupted"
    os.killpg(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == INTERRUPTED, stderr
    assert the_one_line(stderr) == "error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert leftovers(tmp_path / "tmp") in ([], [LOCKS])
    assert not any((tmp_path / "tmp" / LOCKS).glob("*")), "the output directory's lock file was left behind"


def test_an_error_a_library_raises_while_interrupted_ends_as_the_interrupt(capsys):
    """omegaconf, interrupted in the middle of NeMo's restore, raises ConfigKeyError, which restore_nemo reports
    as a bad archive; once a signal has come, the command ends with the interrupt's line and 130 instead."""
    import typer

    from exporters import interrupts
    from exporters.cli import fail

    interrupts.progress.interrupted = True
    try:
        with pytest.raises(typer.Exit) as ended:
            fail("cannot restore full-random.nemo: ConfigKeyError: 'NoneType' object has no attribute 'x'")
    finally:
        interrupts.progress.interrupted = False
    assert ended.value.exit_code == INTERRUPTED
    assert the_one_line(capsys.readouterr().err) == "error: interrupted"


def test_a_bad_archive_without_an_interrupt_is_still_its_own_line(capsys):
    import typer

    from exporters.cli import fail

    with pytest.raises(typer.Exit) as ended:
        fail("cannot restore x.nemo: the archive has no model_config.yaml")
    assert ended.value.exit_code == 2
    assert the_one_line(capsys.readouterr().err) == "error: cannot restore x.nemo: the archive has no model_config.yaml"


class FailsWhileInterrupted:
    """Corpus work whose record is stopped by SIGTERM inside a library that then raises its own error (omegaconf's
    AttributeError in NeMo's transcribe), or, with `signalled` False, fails on its own."""

    def __init__(self, signalled: bool):
        self.signalled = signalled

    def open(self):
        return None

    def describe(self, state) -> dict:
        return {}

    def record(self, state, entry):
        from exporters import interrupts

        interrupts.progress.interrupted = self.signalled
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")


@pytest.fixture
def in_process_worker(monkeypatch, tmp_path):
    """worker_main run in this process: its signal handlers, TMPDIR and interrupt flag are put back afterwards, and
    the process keeps its threads (sharing the cores is a worker process's business, not this test's)."""
    import multiprocessing
    import tempfile

    from exporters import corpus, interrupts

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", tempfile.gettempdir()))
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    monkeypatch.setattr(interrupts.progress, "interrupted", False)
    monkeypatch.setattr(corpus, "share_cores", lambda threads: None)
    parent, child = multiprocessing.Pipe()

    def run(work) -> list:
        parent.send("an entry")
        try:
            corpus.worker_main(work, child, 1, str(tmp_path))
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        said = []
        while parent.poll():
            said.append(parent.recv())
        return said

    return run


def test_a_worker_stopped_inside_a_library_ends_quietly(in_process_worker, capsys):
    """The failed CI run: SIGTERM reached a worker inside omegaconf, which raised AttributeError; the worker
    printed its traceback under the parent's one line. Once a signal has come, the worker ends without a word."""
    said = in_process_worker(FailsWhileInterrupted(signalled=True))
    assert said == [("ready", {})]
    assert capsys.readouterr().err == ""


def test_a_worker_failing_on_its_own_still_raises(in_process_worker):
    with pytest.raises(AttributeError, match="_invalidate_flags_cache"):
        in_process_worker(FailsWhileInterrupted(signalled=False))
