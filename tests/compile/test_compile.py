"""`parakeet-coreml compile`: command construction anywhere, the one-line refusal off macOS, real runs on macOS."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters.cli import app
from exporters.compile import NEEDS_XCODE, compile_commands

runner = CliRunner()
on_macos = sys.platform == "darwin"


def test_one_command_per_package(tiny_packages_fp32, tiny_contract, tmp_path):
    """Coverage: every .mlpackage of the tiny export gets one `xcrun coremlcompiler compile <pkg> <out>`."""
    packages = sorted(tiny_packages_fp32.glob("*.mlpackage"))
    commands = compile_commands(tiny_packages_fp32, tmp_path)
    assert commands == [["xcrun", "coremlcompiler", "compile", str(p), str(tmp_path)] for p in packages]
    assert len(commands) == len(tiny_contract.components)


@pytest.mark.skipif(on_macos, reason="checks the refusal on systems without Xcode")
def test_cli_refuses_without_xcode(tiny_packages_fp32, tmp_path):
    """Coverage: off macOS the command exits non-zero with one line saying it needs Xcode's tools."""
    result = runner.invoke(app, ["compile", "--packages", str(tiny_packages_fp32), "--output-dir", str(tmp_path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] == f"error: {NEEDS_XCODE}", result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_directory(tmp_path, one_line_error):
    """Coverage: a directory that does not exist is one error line and exit 2."""
    one_line_error(runner.invoke(app, ["compile", "--packages", str(tmp_path / "absent")]), "not found")


@pytest.mark.macos
@pytest.mark.skipif(not on_macos, reason="xcrun coremlcompiler exists only on macOS with Xcode")
def test_compiles_every_package_on_macos(tiny_packages_fp32, tmp_path):
    """Coverage: real compilation to .mlmodelc, with compile seconds recorded per package."""
    export = shutil.copytree(tiny_packages_fp32, tmp_path / "export")
    result = runner.invoke(app, ["compile", "--packages", str(export), "--output-dir", str(tmp_path / "compiled")])
    assert result.exit_code == 0, result.output
    compiled = sorted(p.name for p in (tmp_path / "compiled").glob("*.mlmodelc"))
    assert compiled == sorted(p.name.replace(".mlpackage", ".mlmodelc") for p in export.glob("*.mlpackage"))
    packages = json.loads((export / "metadata.json").read_text())["packages"]
    assert all(entry["compile_seconds"] > 0 for entry in packages.values())


@pytest.fixture(scope="module")
def fluidaudio_export(load_subject):
    return load_subject("tiny").packages("fp32", "fluidaudio")


def test_fluidaudio_layout_compiles_to_the_names_it_loads(fluidaudio_export, tmp_path):
    """Coverage: the FluidAudio export compiles with one command per package it loads (coremlcompiler names
    each bundle after its package: Preprocessor, Encoder, Decoder, JointDecisionv3 .mlmodelc)."""
    commands = compile_commands(fluidaudio_export, tmp_path)
    assert sorted(Path(command[3]).name for command in commands) == [
        "Decoder.mlpackage", "Encoder.mlpackage", "JointDecisionv3.mlpackage", "Preprocessor.mlpackage"]


@pytest.mark.macos
@pytest.mark.skipif(not on_macos, reason="xcrun coremlcompiler exists only on macOS with Xcode")
def test_fluidaudio_layout_compiles_in_place_on_macos(fluidaudio_export, tmp_path):
    """Coverage: `compile` on the FluidAudio folder leaves the four .mlmodelc bundles (with coremldata.bin)
    beside parakeet_vocab.json, where FluidAudio's loader looks."""
    export = shutil.copytree(fluidaudio_export, tmp_path / "parakeet-tdt-0.6b-v3")
    result = runner.invoke(app, ["compile", "--packages", str(export)])
    assert result.exit_code == 0, result.output
    for name in ("Preprocessor", "Encoder", "Decoder", "JointDecisionv3"):
        assert (export / f"{name}.mlmodelc" / "coremldata.bin").is_file(), name
    assert (export / "parakeet_vocab.json").is_file()
