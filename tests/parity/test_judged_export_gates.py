"""The export under test (`--packages DIR --model SRC`, or by default independent foreign exports of the tiny and
digits models and this project's tiny export): every package it holds passes its gates against NeMo."""

from __future__ import annotations

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.components import COMPONENTS
from exporters.parity.diagnosis import diagnose
from exporters.parity.gates import GateContext, clip_gates, default_tokens
from exporters.parity.report import clip_cases

CLIPS = ("long_16s.wav", "short_4s.wav")


@pytest.fixture(scope="session")
def opened_packages(judged_export, backend, open_or_skip):
    """open(component) on the selected backend, each package once, under the contract's interface."""
    opened = {}

    def open_(name: str):
        if name not in opened:
            try:
                opened[name] = judged_export.open(name, backend)
            except Exception as error:  # noqa: BLE001 - Core ML off macOS: the same skip as every test
                from exporters.runtime import BackendUnavailable

                if isinstance(error, BackendUnavailable):
                    pytest.skip(str(error))
                raise
        return opened[name]
    return open_


def judged_package(view, component: str):
    """The package of a component, or a skip (not held, or holding a decoder U the gates do not feed); a package
    that breaks the contract (another window, an input it lacks) fails."""
    if component not in view.packages:
        pytest.skip(f"{view.directory.name} holds no {component} package")
    package = view.packages[component]
    assert not package.incompatible, f"{package.path.name}: {package.not_judged}"
    if package.not_judged:
        pytest.skip(f"{package.path.name}: {package.not_judged}")
    return package


@pytest.mark.parametrize("clip_file", CLIPS)
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_package_passes_its_gates(judged_export, opened_packages, component, clip_file):
    """Coverage: each package of any export against NeMo's own modules on speech, filling the window and padded
    (a file that fills it also runs its first half), by the tolerance row of its precision or compression."""
    view = judged_export
    judged_package(view, component)
    gate = GateContext(view.model, view.contract, view.precision, None, view.rows)
    samples = load_audio(FIXTURE_AUDIO_DIR / clip_file, view.contract.model.sample_rate)
    diffs = []
    for case, audio in clip_cases(clip_file, samples, view.contract.window_samples):
        diffs += clip_gates(gate, opened_packages, case, *fit_window(audio, view.contract.window_samples),
                            default_tokens(view.contract), [component])
    assert diffs, f"no comparison was made for {component}"
    failures = [d.describe() for d in diffs if not d.passed]
    causes = [f"likely cause ({d.cause}): {d.message}" for d in diagnose(diffs, view)]
    assert not failures, "\n".join(failures + causes)


def test_export_holds_a_judged_package(judged_export):
    """Coverage: discovery found something to judge (a directory whose packages are all skipped proves nothing)."""
    assert judged_export.judged, f"{judged_export.directory}: no package could be judged: " + "; ".join(
        f"{p.component}: {p.not_judged}" for p in judged_export.packages.values())
