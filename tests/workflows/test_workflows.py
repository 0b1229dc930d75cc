"""GitHub Actions workflows: actionlint finds nothing, and the Linux job runs exactly the CI script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).parents[2] / ".github" / "workflows"


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    """Run the dev group's actionlint; shell/python integrations off so results never depend on the host."""
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("actionlint", path=search_path)
    if binary is None:
        pytest.fail("actionlint not installed: run `uv sync` (it is in the dev dependency group)")
    return subprocess.run([binary, "-no-color", "-shellcheck=", "-pyflakes=", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_workflows_pass_actionlint():
    """Coverage: every workflow file is clean under actionlint."""
    assert workflow_files(), f"no workflows in {WORKFLOWS}"
    result = actionlint(*workflow_files())
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path):
    """Coverage: the check above can fail: a job without runs-on is reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n")
    result = actionlint(broken)
    assert result.returncode == 1
    assert "runs-on" in result.stdout


def test_linux_job_runs_ci_script():
    """Coverage: the Linux job installs uv and then runs `bash .ci/run`, the same entry point as local CI."""
    linux = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]["linux"]
    assert linux["runs-on"] == "ubuntu-latest"
    commands = [step["run"].strip() for step in linux["steps"] if "run" in step]
    assert commands[-2:] == ["pip install uv", "bash .ci/run"]


def test_latest_dependencies_job_runs_the_suite_on_coremltools_9():
    """Coverage: a second Linux job runs the suite through `.ci/run-latest`, which re-pins coremltools 9.0,
    torch 2.7 and an unpinned NeMo in a copy of the tree (so the main lock is not what it tests)."""
    job = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]["latest-dependencies"]
    commands = [step["run"].strip() for step in job["steps"] if "run" in step]
    assert commands[-1] == "bash .ci/run-latest"
    script = (WORKFLOWS.parents[1] / ".ci" / "run-latest").read_text()
    for pin in ("coremltools==9.0", "torch>=2.7,<2.8", "rm -f uv.lock", "exec bash .ci/run"):
        assert pin in script


def test_macos_job_on_apple_silicon_uploads_artifacts():
    """Coverage: the macOS job runs on an Apple-silicon macOS 15 runner (Core ML loads iOS18 packages, the
    multi-window and block-wise int4 ones, from macOS 15 on), lints and compiles, and uploads artifacts (reports, parity pages, packages)."""
    jobs = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]
    macos = jobs["macos"]
    assert macos["runs-on"] == "macos-15"
    commands = "\n".join(step.get("run", "") for step in macos["steps"])
    for command in ("parakeet-coreml compile", "parakeet-coreml lint", "--backend coreml", "--benchmark-json",
                    "tests/compile"):
        assert command in commands
    assert sum(step.get("uses", "").startswith("actions/upload-artifact@") for step in macos["steps"]) == 3


def test_macos_job_uploads_the_html_parity_reports():
    """Coverage: the macOS job's compare steps write an HTML page and a JSON record per precision of v3, and an
    always-run step uploads that folder as an artifact."""
    steps = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]["macos"]["steps"]
    compare_lines = [line for step in steps for line in step.get("run", "").splitlines() if " compare " in line]
    assert compare_lines and all("--report parity/" in line and "--json parity/" in line for line in compare_lines)
    upload = next(step for step in steps if step.get("with", {}).get("name") == "parity-reports")
    assert upload["if"] == "always()" and upload["with"]["path"].strip() == "parity/"
