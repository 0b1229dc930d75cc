"""Compile every .mlpackage of an export to .mlmodelc with Xcode's coremlcompiler (macOS only)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from exporters.errors import UserError
from exporters.lint import package_paths
from exporters.metadata import read_metadata, write_metadata

NEEDS_XCODE = ("compile needs macOS with the Xcode command-line tools (xcrun coremlcompiler); "
               "not available on this system")


def coremlcompiler_args(package: Path, out_dir: Path) -> list[str]:
    """The command compiling one package to out_dir/<name>.mlmodelc."""
    return ["xcrun", "coremlcompiler", "compile", str(package), str(out_dir)]


def compile_commands(directory: Path, out_dir: Path) -> list[list[str]]:
    """One `xcrun coremlcompiler compile` command per .mlpackage in directory."""
    return [coremlcompiler_args(path, out_dir) for path in package_paths(directory)]


def require_coremlcompiler() -> None:
    """Fail unless this is macOS with xcrun able to find coremlcompiler."""
    if sys.platform != "darwin" or shutil.which("xcrun") is None:
        raise UserError(NEEDS_XCODE)
    found = subprocess.run(["xcrun", "--find", "coremlcompiler"], capture_output=True, text=True)
    if found.returncode != 0:
        raise UserError(NEEDS_XCODE)


def compile_timed(package: Path, out_dir: Path) -> float:
    """Compile one package; seconds taken, or a UserError carrying the compiler's last line."""
    started = time.perf_counter()
    result = subprocess.run(coremlcompiler_args(package, out_dir), capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines() or [f"exit code {result.returncode}"]
        raise UserError(f"coremlcompiler failed on {package.name}: {reason[-1]}")
    return time.perf_counter() - started


def compile_directory(directory: Path, out_dir: Path) -> dict[str, float]:
    """Compile every package into out_dir; seconds per package file, also recorded in metadata.json."""
    metadata = read_metadata(directory)
    packages = package_paths(directory)
    require_coremlcompiler()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {package.name: compile_timed(package, out_dir) for package in packages}
    for entry in metadata["packages"].values():
        if entry["file"] in seconds:
            entry["compile_seconds"] = round(seconds[entry["file"]], 3)
    write_metadata(directory, metadata)
    return seconds
