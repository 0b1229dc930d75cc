"""Run a deterministic sample of coremltools' own torch frontend tests with every Core ML prediction made by
the project's MIL executor (exporters.runtime.mil.MilExecutor) instead of Core ML.

coremltools' tests convert a torch model and, on macOS only, compare Core ML's predictions with torch's
(`_IS_MACOS` and `_macos_version()` guards in coremltools/converters/mil/testing_utils.py and
frontend/torch/test/testing_utils.py). This script lifts those guards as on macOS 15 and replaces
`MLModel.predict` by: save the converted model as an .mlpackage, open it with MilExecutor, predict. A test that
passes compares the executor with torch at coremltools' own tolerances; a test that expects Core ML to refuse a
program (pytest.raises(RuntimeError)) passes only if the executor refuses it too.

    taskset -c 1 uv run python scripts/executor_holdout.py --sample 1500
    taskset -c 1 uv run python scripts/executor_holdout.py -k "TestStack or TestLSTMWithPackedSequence"

Only ML-program tests run (PYMIL_TEST_TARGETS=mlprogram; fp16 and, unless --fp16-only, fp32 precision). The
sample is drawn from the collected test ids, sorted, with a fixed seed; each test runs with numpy and torch
seeded from its id, so a test's data do not depend on which others are drawn. Outcomes: passed, failed,
unsupported (the executor has no kernel for an op or lacks a feature: UnsupportedOpError, NotImplementedError),
skipped, and not applicable (the test builds a neural network, or needs a package not installed here); the pass
rate is passed / (passed + failed + unsupported). Failures are grouped by kind (outcome, test, exception type,
first line of the message with numbers masked); FAILS_ON_CORE_ML notes the tests known to fail on Core ML too.
The executor's code is imported from this script's checkout (its parent directory), so a copy of the script in
another checkout measures that one.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEFAULT_FILES = ("test_torch_ops.py",)
MACOS_VERSION = (15, 5)
UNSUPPORTED = ("UnsupportedOpError", "NotImplementedError")
# Failures that say nothing about the executor: (exception type, message pattern); counted apart, not run.
NOT_APPLICABLE = (
    ("NotAnMlProgram", r""),
    ("NameError", r"name '(torchvision|torchaudio)' is not defined"),
    ("ModuleNotFoundError", r""),
)
# Tests that fail on Core ML as well, with why: shown beside their failures (still counted as failed).
FAILS_ON_CORE_ML = {
    ("TestLinear::test_linear_fp16", "'fp32'"): "fails on Core ML too: the fp32 program computes the product in fp32 "
    "(cast, linear, fp32 output) while torch's reference is rounded to fp16, beyond fp32's atol 1e-4",
}


class NotAnMlProgram(Exception):
    """The test converted to a neural network; the executor runs ML programs only."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=1500, help="tests to draw (0: all collected)")
    parser.add_argument("--seed", type=int, default=29, help="seed of the draw and of each test's data")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression, applied before the draw")
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES),
                        help="test files of coremltools/converters/mil/frontend/torch/test/")
    parser.add_argument("--fp16-only", action="store_true", help="leave out the fp32 ML-program backend")
    parser.add_argument("--show", type=int, default=3, help="test ids shown per failure kind")
    parser.add_argument("--durations", type=int, default=0, help="also list the N slowest tests")
    parser.add_argument("--tb", default="line", help="pytest traceback style for the failures (line, short, long)")
    return parser.parse_args(argv)


def set_environment(args: argparse.Namespace) -> None:
    """Before coremltools' testing modules are imported: ML-program backends only."""
    os.environ["PYMIL_TEST_TARGETS"] = "mlprogram"
    if not args.fp16_only:
        os.environ["INCLUDE_MIL_FP32_UNIT_TESTS"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def act_as_macos() -> None:
    """Make coremltools' test helpers take their macOS path: predictions compared, not skipped."""
    import coremltools.models.utils as model_utils

    model_utils._macos_version = lambda: MACOS_VERSION
    from coremltools.converters.mil import testing_utils
    from coremltools.converters.mil.frontend.torch.test import testing_utils as torch_testing_utils

    testing_utils._IS_MACOS = True
    torch_testing_utils._IS_MACOS = True


class ExecutorPredictions:
    """Stands in for MLModel.predict: each converted model is saved once and run by MilExecutor."""

    def __init__(self, root: Path):
        self.root = root
        self.packages: list[Path] = []

    def install(self) -> None:
        from coremltools.models import MLModel

        predictions = self

        def predict(model, data, state=None):
            return predictions.predict(model, data, state)

        MLModel.predict = predict

    def predict(self, model, data, state):
        if state is not None:
            raise NotImplementedError("stateful models (MLState) are not supported by the executor")
        if isinstance(data, list):
            return [self.predict(model, item, None) for item in data]
        if model._spec.WhichOneof("Type") != "mlProgram":
            raise NotAnMlProgram(f"a {model._spec.WhichOneof('Type')} model")
        executor = self.executor(model)
        return executor.predict({name: _as_array(value) for name, value in data.items()})

    def executor(self, model):
        from exporters.runtime.mil import MilExecutor

        if getattr(model, "_holdout_executor", None) is None:
            kinds = {feature.type.WhichOneof("Type") for feature in model._spec.description.input}
            if kinds - {"multiArrayType"}:
                raise NotImplementedError(f"model inputs of type {sorted(kinds - {'multiArrayType'})}")
            path = Path(tempfile.mkdtemp(dir=self.root)) / "model.mlpackage"
            model.save(str(path))
            self.packages.append(path.parent)
            model._holdout_executor = MilExecutor(path)
        return model._holdout_executor

    def clean(self) -> None:
        for directory in self.packages:
            shutil.rmtree(directory, ignore_errors=True)
        self.packages.clear()


def _as_array(value):
    import numpy as np

    array = np.asarray(value)
    return array.reshape(1) if array.ndim == 0 else array


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    kinds: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    durations: dict[str, float] = field(default_factory=dict)


class HoldoutPlugin:
    """Draws the sample, seeds each test, routes predictions to the executor and tallies the outcomes."""

    def __init__(self, args: argparse.Namespace, predictions: ExecutorPredictions):
        self.args = args
        self.predictions = predictions
        self.tally = Tally()

    @pytest.hookimpl(trylast=True)  # after -k has deselected
    def pytest_collection_modifyitems(self, session, config, items):
        if not self.args.sample or self.args.sample >= len(items):
            return
        chosen = set(random.Random(self.args.seed).sample(sorted(item.nodeid for item in items), self.args.sample))
        deselected = [item for item in items if item.nodeid not in chosen]
        items[:] = [item for item in items if item.nodeid in chosen]
        config.hook.pytest_deselected(items=deselected)

    def pytest_runtest_setup(self, item):
        import numpy as np
        import torch

        seed = zlib.crc32(f"{self.args.seed}:{item.nodeid}".encode())
        np.random.seed(seed)
        torch.manual_seed(seed)

    def pytest_runtest_teardown(self, item):
        self.predictions.clean()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.excinfo is not None:
            outcome.get_result().holdout_kind = failure_kind(call.excinfo.value)

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.tally.durations[report.nodeid] = report.duration
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = "skipped" if report.skipped else report.outcome
            if report.failed:
                outcome = self.record_failure(report)
            self.tally.outcomes[outcome] += 1

    def record_failure(self, report) -> str:
        kind, message = getattr(report, "holdout_kind", ("?", str(report.longrepr)[:160]))
        outcome = outcome_of(kind, message)
        self.tally.kinds[(outcome, _test_name(report.nodeid), f"{kind}: {message}")].append(report.nodeid)
        return outcome


def outcome_of(kind: str, message: str) -> str:
    if any(kind == name and re.search(pattern, message) for name, pattern in NOT_APPLICABLE):
        return "not applicable"
    return "unsupported" if kind in UNSUPPORTED else "failed"


def failure_kind(error: BaseException) -> tuple[str, str]:
    """(exception type, first line of its message with numbers masked). An unsupported feature anywhere in
    the chain of causes names the kind (the executor wraps a kernel's error in OpExecutionError)."""
    chain, cause = [], error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    chosen = next((e for e in chain if type(e).__name__ in UNSUPPORTED or isinstance(e, NotImplementedError)), error)
    lines = [line.strip() for line in str(chosen).splitlines() if line.strip()]
    kind = "NotImplementedError" if isinstance(chosen, NotImplementedError) else type(chosen).__name__
    return kind, re.sub(r"\d+(\.\d+)?", "#", lines[0] if lines else "")[:160]


def _test_name(nodeid: str) -> str:
    return nodeid.split("::", 1)[-1].split("[", 1)[0]


def report(tally: Tally, args: argparse.Namespace, seconds: float) -> None:
    counts = tally.outcomes
    ran = counts["passed"] + counts["failed"] + counts["unsupported"]
    rate = 100.0 * counts["passed"] / ran if ran else float("nan")
    print(f"\nexecutor holdout: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['unsupported']} unsupported, {counts['skipped']} skipped, "
          f"{counts['not applicable']} not applicable; pass rate {rate:.1f} % of {ran} run ({seconds / 60:.1f} min)")
    for (outcome, test, kind), nodeids in sorted(tally.kinds.items(), key=lambda entry: (entry[0][0], -len(entry[1]))):
        print(f"\n{len(nodeids):4d}  {outcome}  {test}  {kind}")
        notes = {note for (name, part), note in FAILS_ON_CORE_ML.items()
                 if name == test and any(part in nodeid for nodeid in nodeids)}
        for note in sorted(notes):
            print(f"      note: {note}")
        for nodeid in nodeids[:args.show]:
            print(f"        {nodeid.split('::', 1)[-1]}")
    if args.durations:
        print("\nslowest:")
        for nodeid, duration in sorted(tally.durations.items(), key=lambda entry: -entry[1])[:args.durations]:
            print(f"  {duration:6.1f} s  {nodeid.split('::', 1)[-1]}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    set_environment(args)
    import coremltools

    act_as_macos()
    package_dir = Path(coremltools.__file__).parent
    test_dir = package_dir / "converters" / "mil" / "frontend" / "torch" / "test"
    with tempfile.TemporaryDirectory(prefix="executor_holdout_") as root:
        predictions = ExecutorPredictions(Path(root))
        predictions.install()
        plugin = HoldoutPlugin(args, predictions)
        pytest_args = [str(test_dir / name) for name in args.files]
        pytest_args += ["-q", "--no-header", "-p", "no:cacheprovider", "-p", "no:randomly", "-c", os.devnull,
                        f"--rootdir={package_dir}", f"--confcutdir={package_dir}", "-W", "ignore", f"--tb={args.tb}",
                        "-rN", "-o", "console_output_style=count", "--continue-on-collection-errors"]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        start = time.perf_counter()
        pytest.main(pytest_args, plugins=[plugin])
        report(plugin.tally, args, time.perf_counter() - start)
    import exporters

    print(f"\nexecutor code: {Path(exporters.__file__).parent}; coremltools {coremltools.__version__}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))
