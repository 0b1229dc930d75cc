"""Peak resident memory per test file and per process: a pytest plugin (registered by conftest.py).

Hosted CI runners have 16 GB (Linux) or 7 GB (macOS) for both workers, so every process of the suite must
peak at or under BUDGET_GB. Before each test file a process starts, its peak (Linux VmHWM) is reset
(/proc/self/clear_refs), so the peak read when the file's last test is done is that file's own: the tests,
and the session fixtures they were first to need. Child processes (`convert` runs) are counted by
RUSAGE_CHILDREN, whose peak only ever grows: a file is charged a child's peak when it raised it.

The terminal summary lists the files with the highest peaks and each process's peak; `--memory-report PATH`
writes every file's figures as JSON. A process over the budget makes the session fail.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import pytest

BUDGET_GB = 8.0
SHOWN_FILES = 12
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def status_gb(field: str) -> float | None:
    """A /proc/self/status memory field (VmHWM, VmRSS) in GB (1e9 bytes); None off Linux."""
    if not STATUS.exists():
        return None
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e9
    return None


def self_peak_gb() -> float:
    linux = status_gb("VmHWM")
    if linux is not None:
        return linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def children_peak_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def reset_peak() -> bool:
    """Start a new peak (Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class MemoryPerFile:
    """Per test file run in this process: its peak, RSS after it, and any child peak it raised."""

    def __init__(self, worker: str):
        self.worker = worker
        self.files: dict[str, dict] = {}
        self.current: str | None = None
        self.resettable = True
        self.children_before = 0.0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        path = item.location[0]
        if path != self.current:
            self.current = path
            self.resettable = reset_peak() and self.resettable
            self.children_before = children_peak_gb()
        yield
        if nextitem is None or nextitem.location[0] != path:
            self.finish(path)

    def finish(self, path: str) -> None:
        children = children_peak_gb()
        entry = self.files.setdefault(path, {"worker": self.worker, "peak_gb": 0.0, "child_peak_gb": None})
        entry["peak_gb"] = round(max(entry["peak_gb"], self_peak_gb()), 2)
        entry["rss_after_gb"] = round(status_gb("VmRSS") or 0.0, 2)
        if children > self.children_before:
            entry["child_peak_gb"] = round(children, 2)
        self.current = None

    def record(self) -> dict:
        return {"worker": self.worker, "files": self.files, "per_file": self.resettable,
                "process_peak_gb": round(max([e["peak_gb"] for e in self.files.values()] or [self_peak_gb()]), 2),
                "children_peak_gb": round(children_peak_gb(), 2)}


class MemoryReport:
    """Collects the processes' records (xdist workers send theirs when they finish) and reports them."""

    def __init__(self, config, local: MemoryPerFile | None):
        self.config = config
        self.local = local
        self.processes: list[dict] = []

    def pytest_testnodedown(self, node, error):
        record = getattr(node, "workeroutput", {}).get("memory_per_file")
        if record:
            self.processes.append(json.loads(record))

    def over_budget(self) -> list[str]:
        return [f"{p['worker']} {p['process_peak_gb']:.1f} GB" for p in self.processes
                if p["process_peak_gb"] > BUDGET_GB] + \
               [f"{p['worker']}'s child {p['children_peak_gb']:.1f} GB" for p in self.processes
                if p["children_peak_gb"] > BUDGET_GB]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.local is not None:
            self.processes.append(self.local.record())
        if not self.processes:
            return
        if path := self.config.getoption("--memory-report"):
            Path(path).write_text(json.dumps({"budget_gb": BUDGET_GB, "processes": self.processes}, indent=2) + "\n")
        if self.over_budget() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.processes:
            return
        write = terminalreporter.write_line
        terminalreporter.section("peak resident memory")
        files = sorted(((path, entry) for p in self.processes for path, entry in p["files"].items()),
                       key=lambda pair: -pair[1]["peak_gb"])
        for path, entry in files[:SHOWN_FILES]:
            child = f", child {entry['child_peak_gb']:.1f}" if entry["child_peak_gb"] else ""
            write(f"{entry['peak_gb']:5.1f} GB  {path} ({entry['worker']}; {entry['rss_after_gb']:.1f} GB after{child})")
        for p in self.processes:
            scope = "" if p["per_file"] else " (per-file peaks not resettable here: each is the process's so far)"
            write(f"{p['worker']}: process peak {p['process_peak_gb']:.1f} GB, children {p['children_peak_gb']:.1f} GB"
                  f"{scope}")
        if over := self.over_budget():
            write(f"over the {BUDGET_GB:g} GB budget per process: {', '.join(over)}", red=True)


def pytest_addoption(parser):
    parser.addoption("--memory-report", type=Path, default=None, metavar="PATH",
                     help="write each test file's peak resident memory (per process) to this JSON file")


def pytest_configure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    local = MemoryPerFile(worker or "main")
    config.pluginmanager.register(local, "memory-per-file")
    if worker is None:
        controller = config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None)
        config.pluginmanager.register(MemoryReport(config, None if controller else local), "memory-report")


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["memory_per_file"] = json.dumps(session.config.pluginmanager.get_plugin("memory-per-file").record())
