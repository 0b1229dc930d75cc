"""`parakeet-coreml convert`: exit codes, one-line errors, and no half-written output on failure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters import export
from exporters.checkpoints import build_checkpoint
from exporters.cli import app

runner = CliRunner()


def convert(*args: str):
    return runner.invoke(app, ["convert", *args])


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_convert_exports_selected_components_with_summary(tmp_path):
    """Coverage: a real CLI run on the tiny model writes the chosen packages, tokenizer and metadata."""
    out = tmp_path / "out"
    result = convert("--model", "tiny", "--output-dir", str(out), "--components", "decoder,joint")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "parakeet_decoder.mlpackage", "parakeet_joint.mlpackage", "tokenizer.model"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert set(metadata["packages"]) == {"decoder", "joint"}
    assert "exported to" in result.output
    assert leftovers(tmp_path) == ["out"]


def test_missing_checkpoint_path(tmp_path, one_line_error):
    """Coverage: a .nemo path that does not exist."""
    one_line_error(convert("--model", str(tmp_path / "absent.nemo"), "--output-dir", str(tmp_path / "o")),
                          "not found", "absent.nemo")
    assert leftovers(tmp_path) == []


def test_non_nemo_path(tmp_path, one_line_error):
    """Coverage: an existing file that is not a .nemo archive."""
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    one_line_error(convert("--model", str(notes), "--output-dir", str(tmp_path / "o")), "not a .nemo")


def test_corrupt_nemo_file(tmp_path, one_line_error):
    """Coverage: a file named .nemo that is not a NeMo archive."""
    broken = tmp_path / "broken.nemo"
    broken.write_bytes(b"not a tar archive")
    one_line_error(convert("--model", str(broken), "--output-dir", str(tmp_path / "o")), "cannot restore")
    assert leftovers(tmp_path) == ["broken.nemo"]


@pytest.mark.parametrize("member", ["model_config.yaml", "model_weights.ckpt"])
def test_nemo_archive_missing_a_member(tmp_path, member, one_line_error):
    """Coverage: a .nemo archive without its config or weights: the line names the missing member, not a
    path inside NeMo's temporary extraction folder."""
    complete = build_checkpoint("tiny")
    partial = tmp_path / "partial.nemo"
    with tarfile.open(complete) as source, tarfile.open(partial, "w") as target:
        for info in source.getmembers():
            if Path(info.name).name != member:
                target.addfile(info, source.extractfile(info) if info.isfile() else None)
    result = convert("--model", str(partial), "--output-dir", str(tmp_path / "o"))
    one_line_error(result, "cannot restore", str(partial), f"has no {member}")
    assert tempfile.gettempdir() not in result.output.replace(str(tmp_path), "")
    assert leftovers(tmp_path) == ["partial.nemo"]


@pytest.mark.parametrize("option, value, fragment", [
    ("--components", "encoder,vocoder", "unknown component vocoder"),
    ("--precision", "int8", "unknown precision 'int8'"),
    ("--compute-units", "NPU", "unknown compute units 'NPU'"),
    ("--layout", "coreml-tools", "unknown layout 'coreml-tools'"),
    ("--top-k", "0", "top-k 0 out of range"),
    ("--compress", "int3", "unknown compression 'int3'"),
    ("--compress-components", "preprocessor", "cannot compress preprocessor"),
    ("--compress", "mixed", "--compress mixed needs a plan"),
    ("--mixed-plan", "/nonexistent/plan.json", "cannot read mixed plan"),
    ("--windows", "2.5,abc", "windows '2.5,abc': give comma-separated lengths"),
    ("--windows", "0,15", "give positive, finite lengths"),
])
def test_unknown_settings(tmp_path, option, value, fragment, one_line_error):
    """Coverage: unknown component, precision, compute units, layout or compression, K < 1, components that
    cannot be compressed, mixed without a readable plan: each fails before any work."""
    one_line_error(convert("--model", "tiny", "--output-dir", str(tmp_path / "o"), option, value), fragment)
    assert leftovers(tmp_path) == []


FEED_FORWARD = "encoder_layers_0_feed_forward1_linear1_weight"  # a weight every Parakeet encoder has


@pytest.mark.parametrize("document, fragment", [
    ({"plan": {}}, "has no 'weights' object"),
    ({"weights": {}}, "names no weights: its 'weights' object is empty"),
    ({"weights": {"encoder_no_such_layer_weight": "int8", FEED_FORWARD: "int8"}},
     "names weights this model does not have: encoder_no_such_layer_weight"),
    ({"weights": {FEED_FORWARD: "none"}}, "mixed plan compresses no weight"),
    ({"weights": {"decoder_prediction_embed_weight": "int8"}}, "compresses no weight of the compressed components"),
])
def test_mixed_plans_that_compress_nothing_or_name_other_weights(tmp_path, document, fragment, one_line_error):
    """Coverage (issue 35): a mixed plan without weights, with names this model lacks, or that compresses no
    weight of a compressed component (the encoder by default) is refused in one line; nothing is written."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(document))
    one_line_error(convert("--model", "tiny", "--output-dir", str(tmp_path / "o"), "--compress", "mixed",
                           "--mixed-plan", str(plan)), fragment)
    assert leftovers(tmp_path) == ["plan.json"]


def test_compressing_a_component_that_is_not_exported_is_refused(tmp_path, one_line_error):
    """Coverage (issue 35): --compress int8 on the decoder of an encoder-only export would compress nothing."""
    one_line_error(convert("--model", "tiny", "--output-dir", str(tmp_path / "o"), "--compress", "int8",
                           "--compress-components", "decoder", "--components", "encoder"),
                   "--compress int8 compresses nothing", "decoder")
    assert leftovers(tmp_path) == []


def test_convert_with_several_windows(tmp_path):
    """Coverage: `--windows 2.5,15` makes the window-sized package multifunction (one function per window,
    15 s the default) and metadata.json lists both windows; the decoder stays a plain package."""
    out = tmp_path / "out"
    result = convert("--model", "tiny", "--output-dir", str(out), "--components", "encoder,decoder",
                     "--windows", "2.5,15")
    assert result.exit_code == 0, result.output
    metadata = json.loads((out / "metadata.json").read_text())
    assert [w["function"] for w in metadata["contract"]["windows"]] == ["window_2500ms", "window_15000ms"]
    assert metadata["packages"]["encoder"]["default_function"] == "window_15000ms"
    assert "functions" not in metadata["packages"]["decoder"]
    assert leftovers(tmp_path) == ["out"]
    assert leftovers(out) == ["metadata.json", "parakeet_decoder.mlpackage", "parakeet_encoder.mlpackage",
                              "tokenizer.model"]


@pytest.mark.parametrize("options, fragment", [
    (("--layout", "fluidaudio", "--windows", "5,15"), "opens single-window packages: give one window"),
    (("--windows", "2.505"), "window 2.505 s is no whole number of 160-sample hops"),
    (("--windows", "0.02"), "not longer than one STFT frame"),
    (("--windows", "nan"), "windows nan: give positive, finite lengths"),
    (("--windows", "15,inf"), "give positive, finite lengths"),
    (("--windows", "1e400"), "windows inf: give positive, finite lengths"),
    (("--windows", "15,36000"), "full attention grows with the square of the window"),
])
def test_windows_the_packages_cannot_have(tmp_path, options, fragment, one_line_error):
    """Coverage: several windows for a single-window runtime, a window off the hop grid, a window shorter
    than one STFT frame, lengths that are not finite (issue 29 item 6), a window whose attention outgrows the
    memory (issue 35 item 7): one error line each, before the model loads, nothing left behind."""
    one_line_error(convert("--model", "tiny", "--output-dir", str(tmp_path / "o"), *options), fragment)
    assert leftovers(tmp_path) == []


def test_layout_components_and_top_k_bound(tmp_path, one_line_error):
    """Coverage: a component the layout does not hold, and K beyond the V+1 token logits (known once the model
    is loaded), are one error line each and leave nothing behind."""
    out = str(tmp_path / "o")
    one_line_error(convert("--model", "tiny", "--output-dir", out, "--layout", "fluidaudio", "--components", "joint"),
                   "unknown component joint in the fluidaudio layout")
    one_line_error(convert("--model", "tiny", "--output-dir", out, "--top-k", "100000"),
                   "top-k 100000 out of range: choose 1 to")
    assert leftovers(tmp_path) == []


def test_unwritable_output_dir(tmp_path, one_line_error):
    """Coverage: an output directory that cannot be created (its parent is a file)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line_error(convert("--model", "tiny", "--output-dir", str(blocker / "out"),
                                  "--components", "joint"), "cannot write to output directory")
    assert leftovers(tmp_path) == ["file"]


def test_offline_hub_id_fails_fast(tmp_path, monkeypatch, one_line_error):
    """Coverage: a Hugging Face id with the Hub unreachable: one line that says to pass a .nemo path."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = convert("--model", "nvidia/parakeet-tdt-0.6b-v3", "--output-dir", str(tmp_path / "o"))
    one_line_error(result, "Hugging Face Hub", ".nemo")
    assert leftovers(tmp_path) == []


def test_unreachable_hub_fails_before_torch_and_nemo_load(tmp_path):
    """Coverage: the Hub check runs before the heavy imports (they alone took seconds before the check)."""
    script = ("import sys\nfrom typer.testing import CliRunner\nfrom exporters.cli import app\n"
              f"result = CliRunner().invoke(app, ['convert', '--model', 'nvidia/parakeet-tdt-0.6b-v3', "
              f"'--output-dir', {str(tmp_path / 'o')!r}])\n"
              "print(result.exit_code, 'nemo' in sys.modules, 'torch' in sys.modules)")
    environment = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}
    environment.pop("HF_HUB_OFFLINE", None)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert child.stdout.split() == ["2", "False", "False"], child.stdout + child.stderr


def test_hub_id_in_offline_mode_uses_from_pretrained(tmp_path, monkeypatch, one_line_error):
    """Coverage: with HF_HUB_OFFLINE=1 the real from_pretrained runs and its failure is one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = convert("--model", "nvidia/parakeet-tdt-0.6b-v3", "--output-dir", str(tmp_path / "o"))
    one_line_error(result, "nvidia/parakeet-tdt-0.6b-v3", ".nemo")
    assert not (tmp_path / "o").exists()


def test_failure_mid_export_leaves_output_dir_untouched(tmp_path, monkeypatch):
    """Coverage: when the second component fails, nothing of the run reaches the output dir."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    real_export_component = export.export_component
    calls = []

    def failing_export_component(model, contract, name, settings, directory):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("conversion exploded")
        return real_export_component(model, contract, name, settings, directory)

    monkeypatch.setattr(export, "export_component", failing_export_component)
    result = convert("--model", "tiny", "--output-dir", str(out), "--components", "decoder,joint")
    assert result.exit_code != 0
    assert leftovers(out) == ["keep.txt"]
    assert leftovers(tmp_path) == ["out"]


@pytest.mark.parametrize("failure, fragment", [
    ("write_metadata", "no space left on the device"),
    ("export_component", "coremltools could not write a package's weights"),
])
def test_a_disk_that_fills_during_convert_is_one_line(tmp_path, monkeypatch, failure, fragment):
    """Coverage: the disk filling while an export is staged, as the filesystem says it (ENOSPC) and as
    coremltools' MIL weight writer says it (a RuntimeError): one line, exit 2, the earlier export untouched,
    no staging left (issue 29, item 6)."""
    import errno

    out = tmp_path / "out"
    assert convert("--model", "tiny", "--output-dir", str(out), "--components", "joint").exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    errors = {"write_metadata": OSError(errno.ENOSPC, "No space left on device"),
              "export_component": RuntimeError("[MIL FileWriter]: Unknown error occurred while writing data to the "
                                               "file.")}

    def full_disk(*args, **kwargs):
        raise errors[failure]

    monkeypatch.setattr(export, failure, full_disk)
    result = convert("--model", "tiny", "--output-dir", str(out), "--components", "joint", "--replace")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and "Traceback" not in result.output and len(errors) == 1, result.output
    assert errors[0] == result.output.strip().splitlines()[-1]  # after the progress lines, the last said
    for expected in ("writing the export failed", fragment, "nothing was published"):
        assert expected in errors[0]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert leftovers(tmp_path) == ["out"]


def test_a_real_full_filesystem_is_one_line(tmp_path):
    """Coverage: convert onto a 200 kB tmpfs that fills while the encoder's weights are written (mounted in a
    private mount namespace when this user may: root, or unprivileged user namespaces)."""
    import shutil as shell_tools

    if shell_tools.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    script = (f"mount -t tmpfs -o size=200k tmpfs {tmp_path} && {sys.executable} -m exporters.cli convert --model "
              f"tiny --components encoder --output-dir {tmp_path}/out 2>{tmp_path}.err; echo \"exit=$?\"; "
              f"echo left=$(ls -A {tmp_path})")
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", f"mount -t tmpfs -o size=1k tmpfs "
                            f"{tmp_path}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {probe.stderr.strip()}")
    result = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True,
                            text=True, timeout=600)
    assert result.stdout.splitlines()[-2:] == ["exit=2", "left="], result.stdout + result.stderr
    said = Path(f"{tmp_path}.err").read_text()
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert "Traceback" not in said and len(errors) == 1, said
    assert errors[0].startswith("error: writing the export failed: coremltools could not write"), said


OUR_CONVERT_LINES = re.compile(r"^(loaded |exporting |  parakeet_\w+\.mlpackage |\s*exported to |[┏┃┡│└])")


def test_a_plain_convert_prints_only_its_own_lines(tmp_path):
    """Coverage: the installed command's whole output (stdout and stderr) is the project's own lines: no NeMo
    OneLogger or telemetry banner, no warnings from torch, coremltools or NeMo (issue 29 item 5, issue 32 item
    5)."""
    result = subprocess.run([sys.executable, "-m", "exporters.cli", "convert", "--model", "tiny", "--components",
                             "joint", "--output-dir", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert [line for line in lines if not OUR_CONVERT_LINES.match(line)] == []
    assert any(line.startswith("loaded tiny") for line in lines)


def test_console_script_reports_error_and_exit_code(tmp_path):
    """Coverage: the installed `parakeet-coreml` command itself: non-zero exit, one line on stderr."""
    result = subprocess.run([sys.executable, "-m", "exporters.cli", "convert", "--model",
                             str(tmp_path / "x.nemo"), "--output-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'x.nemo'}"]


def test_a_convert_into_a_directory_another_convert_is_writing_is_refused(tmp_path, one_line_error):
    """Coverage: while a convert holds an output directory (its lock taken here), a second convert into it is
    one line and exit 2, and writes nothing (issue 29, item 8)."""
    import fcntl

    from exporters.cli import output_lock_path

    out = tmp_path / "out"
    with open(output_lock_path(out), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        one_line_error(convert("--model", "tiny", "--output-dir", str(out), "--components", "joint"),
                       "another convert is writing")
    assert leftovers(tmp_path) == []


def test_two_converts_into_one_directory_at_once_leave_one_whole_export(tmp_path):
    """Coverage: two `convert` processes started together into one directory: each either exports or is
    refused in one line, and what is left is one export whose packages match its checksums."""
    from exporters.metadata import read_metadata

    out = tmp_path / "out"
    command = [sys.executable, "-m", "exporters.cli", "convert", "--model", "tiny", "--output-dir", str(out),
               "--components", "decoder,joint"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    assert {code for code, _ in finished} <= {0, 2} and any(code == 0 for code, _ in finished), finished
    for code, errors in finished:
        if code == 2:
            assert "another convert is writing" in errors, errors
    assert set(read_metadata(out)["packages"]) == {"decoder", "joint"}
    assert leftovers(tmp_path) == ["out"]
