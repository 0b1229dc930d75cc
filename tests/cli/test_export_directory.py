"""An export directory is one unit: replaced whole, checksummed, refused when mixed or damaged; a killed
export leaves nothing behind for long."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.audio import FIXTURE_AUDIO_DIR
from exporters.cli import app

runner = CliRunner()
CLIP = FIXTURE_AUDIO_DIR / "short_4s.wav"


def run(*args) -> object:
    return runner.invoke(app, [*map(str, args)])


# Every command that opens an export directory, with the arguments it needs besides --packages.
OPENERS = {"transcribe": [CLIP, "--backend", "mil"], "compare": ["--backend", "mil", "--runs", "1"],
           "lint": [], "compile": []}


def open_with(command: str, packages):
    return run(command, "--packages", packages, *OPENERS[command])


@pytest.fixture
def export_copy(tiny_packages_fp32, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(tiny_packages_fp32, copy)
    return copy


def test_metadata_lists_every_package_with_its_checksum(tiny_packages_fp32, tiny_contract):
    """Coverage: metadata.json holds a sha256 per package that equals the package's content checksum."""
    from exporters.metadata import package_sha256

    packages = json.loads((tiny_packages_fp32 / "metadata.json").read_text())["packages"]
    assert set(packages) == set(tiny_contract.components)
    for entry in packages.values():
        assert entry["sha256"] == package_sha256(tiny_packages_fp32 / entry["file"])


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_convert_into_another_models_export_is_refused_unless_replace(tmp_path, one_line_error):
    """Coverage: some components of another model into an existing export: one line naming what differs, exit
    2, the export byte-identical; with --replace exactly the new export is left, nothing of the earlier run
    beside it (issue 29, item 1)."""
    out = tmp_path / "out"
    assert run("convert", "--model", "digits", "--output-dir", out, "--components", "encoder,decoder").exit_code == 0
    before = tree_bytes(out)
    refused = run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint,decoder")
    one_line_error(refused, "holds another export", "model digits", "tiny", "--replace")
    assert tree_bytes(out) == before
    result = run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint,decoder", "--replace")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "parakeet_decoder.mlpackage", "parakeet_joint.mlpackage", "tokenizer.model"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"]["source"] == "tiny" and set(metadata["packages"]) == {"joint", "decoder"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_convert_with_another_precision_is_refused_and_says_so(tmp_path, one_line_error):
    """Coverage: the same model at another precision into an export: refused, naming the precisions."""
    out = tmp_path / "out"
    assert run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint").exit_code == 0
    before = tree_bytes(out)
    one_line_error(run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint", "--precision",
                       "fp16"), "precision fp32 there, fp16 here")
    assert tree_bytes(out) == before


def test_a_partial_convert_updates_its_packages_and_keeps_the_rest(tmp_path):
    """Coverage: some components of the same model and settings into a complete export re-export those and
    keep every other package byte for byte; metadata lists all of them with checksums that match."""
    from exporters.metadata import read_metadata

    out = tmp_path / "out"
    assert run("convert", "--model", "tiny", "--output-dir", out, "--components", "encoder,decoder,joint").exit_code == 0
    encoder = tree_bytes(out / "parakeet_encoder.mlpackage")
    result = run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint,decoder")
    assert result.exit_code == 0, result.output
    assert "kept encoder" in result.output
    metadata = read_metadata(out)  # verifies every listed checksum
    assert list(metadata["packages"]) == ["encoder", "decoder", "joint"]
    assert tree_bytes(out / "parakeet_encoder.mlpackage") == encoder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_convert_refuses_a_directory_that_is_not_an_export(tmp_path, one_line_error):
    """Coverage: a non-empty folder without metadata.json is not replaced: one line, exit 2, files untouched."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint")
    one_line_error(result, "not empty")
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", list(OPENERS))
def test_a_package_not_in_metadata_is_rejected(export_copy, tiny_packages_fp16, command, one_line_error):
    """Coverage: every command that opens packages rejects a directory holding a package metadata.json does not
    list (a mixed directory) with one line."""
    shutil.copytree(tiny_packages_fp16 / "parakeet_joint.mlpackage", export_copy / "parakeet_joint_fp16.mlpackage")
    one_line_error(open_with(command, export_copy), "not listed")


@pytest.mark.parametrize("command", ["transcribe", "compare"])
def test_a_listed_package_that_is_missing_is_one_line(export_copy, command, one_line_error):
    """Coverage: a package listed in metadata.json but deleted: one line, exit 2."""
    shutil.rmtree(export_copy / "parakeet_encoder.mlpackage")
    one_line_error(open_with(command, export_copy), "missing")


@pytest.mark.parametrize("damage", ["random", "truncated"])
@pytest.mark.parametrize("command", ["transcribe", "lint"])
def test_damaged_weights_are_caught_at_load(export_copy, command, damage, one_line_error):
    """Coverage: an encoder weight.bin refilled with random bytes behind its headers, or truncated, fails the
    checksum: one line, exit 2 (it used to transcribe to an empty text)."""
    weights = next((export_copy / "parakeet_encoder.mlpackage").rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    if damage == "random":
        data[128:] = np.random.default_rng(0).integers(0, 256, len(data) - 128, dtype=np.uint8).tobytes()
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    one_line_error(open_with(command, export_copy), "does not match its checksum")


@pytest.mark.parametrize("command", ["transcribe", "lint"])
def test_corrupt_metadata_is_one_line(export_copy, command, one_line_error):
    """Coverage: metadata.json that is not JSON: one line, exit 2."""
    (export_copy / "metadata.json").write_text("{ not json")
    one_line_error(open_with(command, export_copy), "not valid JSON")


@pytest.mark.parametrize("damage, fragment", [
    (lambda m: m.pop("contract"), "records no contract"),
    (lambda m: m["contract"].pop("mel_frames"), "its contract lacks 'mel_frames'"),
    (lambda m: m["contract"].update(window_seconds="fifteen"), "its contract is malformed"),
    (lambda m: m.update(contract=[1, 2]), "records no contract"),
], ids=["no-contract", "no-mel-frames", "window-not-a-number", "contract-a-list"])
@pytest.mark.parametrize("command", list(OPENERS))
def test_a_missing_or_malformed_contract_is_one_line(export_copy, command, damage, fragment, one_line_error):
    """Coverage: metadata.json of this tool without its contract, or with one that does not rebuild: every
    command that opens the export says so in one line instead of a KeyError later (issue 29, item 6)."""
    path = export_copy / "metadata.json"
    metadata = json.loads(path.read_text())
    damage(metadata)
    path.write_text(json.dumps(metadata))
    one_line_error(open_with(command, export_copy), fragment)


@pytest.mark.parametrize("command", ["lint", "compile", "transcribe"])
def test_a_missing_directory_says_so(tmp_path, command, one_line_error):
    """Coverage: --packages naming no directory at all says exactly that."""
    one_line_error(open_with(command, tmp_path / "absent"), "export directory not found")


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    """Coverage: staging folders left beside the output by a process that no longer runs are removed by the next
    export; one of a live process is left alone."""
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.staging-{dead.stdout.strip()}-abc123"
    live = tmp_path / f".out.staging-{os.getpid()}-def456"
    for folder in (stale, live):
        (folder / "parakeet_joint.mlpackage").mkdir(parents=True)
    assert run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint").exit_code == 0
    assert not stale.exists() and live.exists()


def test_sigterm_mid_export_leaves_no_staging_or_temp_files(tmp_path):
    """Coverage: SIGTERM during an export removes its staging folder, and coremltools' scratch packages lived
    inside it (nothing in the temporary folder, the child's own so that other processes' files don't count)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "exporters.cli", "convert", "--model", "tiny", "--output-dir",
                              str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.monotonic() + 300
    while not any((p / ".tmp").is_dir() and any((p / ".tmp").iterdir()) for p in tmp_path.glob(".out.staging-*")):
        assert child.poll() is None, "export ended before it staged anything"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=120)
    assert child.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert list(scratch.rglob("*.mlpackage")) == []


def test_model_that_is_a_directory_says_so(tmp_path, one_line_error):
    """Coverage: --model naming an existing directory says it is a directory (not "not found")."""
    result = run("convert", "--model", tmp_path, "--output-dir", tmp_path / "out", "--components", "joint")
    one_line_error(result, "is a directory")


def test_published_directory_has_ordinary_permissions(tmp_path):
    """Coverage: the published export is not left with the staging folder's private 0700 mode."""
    out = tmp_path / "out"
    assert run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint").exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize("named", ["../../../../../../etc/passwd", None, "absent.model"])
def test_a_tokenizer_path_outside_the_export_or_missing_is_one_line(export_copy, named, one_line_error):
    """Coverage: metadata.json is untrusted input: a tokenizer named outside the export directory is refused
    without being opened, a null one is said to be missing, one its checksums do not cover is refused (issue 29,
    item 7)."""
    path = export_copy / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["tokenizer"] = named
    path.write_text(json.dumps(metadata))
    fragment = {None: "names no tokenizer file", "absent.model": "its checksums do not cover"}.get(
        named, "names a file outside the export")
    one_line_error(open_with("transcribe", export_copy), fragment)


def test_a_replaced_tokenizer_fails_its_checksum_and_another_models_is_named(export_copy, tmp_path, one_line_error):
    """Coverage: the tokenizer file is covered by metadata.json's checksums: replaced by another model's, the
    export is refused as damaged; with the checksum forged to match, its piece count is checked against the
    model's vocabulary instead of failing mid-decode with an out-of-range piece id (issue 29, items 6 and 7)."""
    import sentencepiece as spm

    from exporters.metadata import file_sha256

    trainer_input = tmp_path / "text.txt"
    trainer_input.write_text("one two three four five six seven eight nine zero\n" * 20)
    spm.SentencePieceTrainer.train(input=str(trainer_input), model_prefix=str(tmp_path / "other"), vocab_size=20,
                                   minloglevel=2)
    (export_copy / "tokenizer.model").write_bytes((tmp_path / "other.model").read_bytes())
    one_line_error(open_with("transcribe", export_copy), "tokenizer.model does not match its checksum")
    path = export_copy / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["files"]["tokenizer.model"] = file_sha256(export_copy / "tokenizer.model")
    path.write_text(json.dumps(metadata))
    one_line_error(open_with("transcribe", export_copy), "has 20 pieces, the model's vocabulary 128")


@pytest.mark.parametrize("command", ["transcribe", "transcribe-chunked", "evaluate"])
def test_an_export_without_the_packages_a_command_needs_says_what_it_lacks(export_copy, command, one_line_error):
    """Coverage: an export holding only the joint and the decoder (a partial convert): transcribe (one window,
    and chunked long audio) and evaluate name what they need and what the export lacks in one line, not a
    FileNotFoundError (issue 29, item 2)."""
    keep_only(export_copy, ("joint", "decoder"))
    arguments = {"transcribe": [CLIP], "transcribe-chunked": [FIXTURE_AUDIO_DIR / "long_16s.wav", "--chunk-seconds",
                                                               "4"], "evaluate": []}[command]
    command = command.split("-")[0]
    result = run(command, "--packages", export_copy, *arguments)
    one_line_error(result, f"{command} with joint mode joint needs preprocessor, encoder, decoder, joint",
                   "lacks preprocessor, encoder (it holds decoder, joint)")


@pytest.mark.parametrize("command", ["compare", "lint"])
def test_commands_that_judge_each_package_work_on_a_partial_export(export_copy, command):
    """Coverage: compare and lint judge each package on its own, so an export holding only the joint and the
    decoder is judged on those two, exit 0 (compile, macOS only, says so in one line: test_a_missing_directory)
    (issue 29, item 2)."""
    keep_only(export_copy, ("joint", "decoder"))
    result = open_with(command, export_copy)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "decoder" in result.output and "joint" in result.output and "encoder" not in result.output


def keep_only(export: Path, components: tuple[str, ...]) -> None:
    """Delete every other package from an export and from its metadata.json."""
    path = export / "metadata.json"
    metadata = json.loads(path.read_text())
    for name in [name for name in metadata["packages"] if name not in components]:
        shutil.rmtree(export / metadata["packages"].pop(name)["file"])
    path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("inside", ["parakeet_joint.mlpackage/sub", "nested/deeper"])
def test_convert_into_a_folder_inside_an_export_is_refused(tmp_path, inside, one_line_error):
    """Coverage: an output directory inside a Core ML package of an export, or anywhere inside an export's tree,
    is refused in one line, and the export stays byte for byte what it was (it used to damage the joint
    package's checksum and exit 0) (issue 35 item 1)."""
    out = tmp_path / "out"
    assert run("convert", "--model", "tiny", "--output-dir", out, "--components", "joint").exit_code == 0
    before = tree_bytes(out)
    one_line_error(run("convert", "--model", "tiny", "--output-dir", out / inside, "--components", "joint"),
                   f"is inside {out}", "choose a directory outside it")
    assert tree_bytes(out) == before


def test_convert_into_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    """Coverage: --output-dir naming a symlink to the user's directory: the export lands in the target, the link
    stays a link, and nothing hidden is left beside either (issue 35 item 3)."""
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    for _ in range(2):  # into the empty target, then over the export it now holds
        result = run("convert", "--model", "tiny", "--output-dir", link, "--components", "joint")
        assert result.exit_code == 0, result.output
        assert link.is_symlink() and link.resolve() == target
        assert (target / "parakeet_joint.mlpackage").is_dir()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_an_output_dir_name_longer_than_the_filesystem_allows_is_one_line(tmp_path, one_line_error):
    """Coverage: a 300-byte directory name is one line, not an OSError traceback (issue 35 item 6)."""
    one_line_error(run("convert", "--model", "tiny", "--output-dir", tmp_path / ("o" * 300), "--components",
                       "joint"), "longer than the filesystem allows")
