"""`parakeet-coreml compare`: every gate for an export directory, latency, plots, and the record."""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.components import COMPONENTS
from exporters.contract import Contract
from exporters.errors import UserError
from exporters.example_inputs import example_inputs
from exporters.metadata import tool_versions, weights_sha256, write_metadata
from exporters.parity import plots
from exporters.parity.diff import Diff, ParityError, load_tolerances
from exporters.parity.gates import GateContext, clip_gates, default_tokens
from exporters.reference import nemo_runtime
from exporters.runtime import Runtime, default_backend

DEFAULT_CLIP = FIXTURE_AUDIO_DIR / "long_16s.wav"


@dataclass(frozen=True)
class Latency:
    component: str
    side: str  # backend name or "nemo"
    mean_s: float
    stdev_s: float
    rtf: float  # seconds of compute per second of audio in the window

    def to_dict(self) -> dict:
        return {"component": self.component, "side": self.side, "mean_s": self.mean_s, "stdev_s": self.stdev_s,
                "rtf": self.rtf}


@dataclass
class CompareReport:
    diffs: list[Diff]
    latencies: list[Latency] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    view: object | None = None  # the ExportView judged
    diagnoses: list = field(default_factory=list)
    clip: str = ""
    backend: str = ""

    @property
    def passed(self) -> bool:
        """Every gate within tolerance and no package that breaks the contract (another window, no input)."""
        broken = self.view is not None and any(p.incompatible for p in self.view.packages.values())
        return all(d.passed for d in self.diffs) and not broken

    def to_dict(self) -> dict:
        """The record `compare --json` writes and the HTML page renders."""
        from datetime import datetime, timezone

        view = self.view
        return {
            "verdict": "pass" if self.passed else "fail",
            "packages_dir": str(view.directory), "model": model_name(view), "backend": self.backend,
            "clip": self.clip, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": tool_versions(), "export": view.summary(),
            "packages": [p.to_dict(view.directory) for p in view.packages.values()],
            "ignored_files": view.ignored,
            "diffs": [d.to_dict() for d in self.diffs],
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "latency": [latency.to_dict() for latency in self.latencies],
        }


def model_name(view) -> str:
    return view.model_source or type(view.model).__name__


def time_predict(runtime: Runtime, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> tuple[float, float]:
    """Mean and standard deviation of predict's wall time over `runs`, after `warmup` untimed calls."""
    for _ in range(warmup):
        runtime.predict(inputs)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runtime.predict(inputs)
        times.append(time.perf_counter() - started)
    return statistics.fmean(times), statistics.stdev(times) if len(times) > 1 else 0.0


def measure_latency(model, contract: Contract, name: str, package: Runtime, runs: int, warmup: int) -> list[Latency]:
    """Latency of one call of the package and of NeMo on the contract's example inputs."""
    inputs = example_inputs(contract[name])
    fed = {spec.name for spec in package.inputs}  # a package of another converter may leave optional ones out
    window_s = contract.window_samples / contract.model.sample_rate
    results = []
    for side, runtime, given in ((package.backend, package, {k: v for k, v in inputs.items() if k in fed}),
                                 ("nemo", nemo_runtime(model, contract, name), inputs)):
        mean, stdev = time_predict(runtime, given, runs, warmup)
        results.append(Latency(name, side, mean, stdev, mean / window_s))
    return results


def write_plots(diffs: list[Diff], out_dir: Path) -> list[Path]:
    """One PNG per comparison a component declares a plot for (its `plots`), from the diff's own arrays."""
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {(name, output): getattr(plots, maker) for name, component in COMPONENTS.items()
              for output, maker in component.plots.items()}
    written = []
    for diff in diffs:
        maker = makers.get((diff.component, diff.output))
        if maker is not None and diff.expected is not None:
            slug = "".join(ch if ch.isalnum() else "_" for ch in diff.case)
            written.append(maker(diff.expected, diff.actual, out_dir / f"{diff.component}_{diff.output}_{slug}.png"))
    return written


def load_recorded_model(metadata: dict, source: str | None = None):
    """The model named in metadata.json (or `source`, another copy of it), checked against the recorded
    weights checksum."""
    from exporters.checkpoints import load_model

    source = source or metadata["model"]["source"]
    model = load_model(source)
    if weights_sha256(model) != metadata["model"]["weights_sha256"]:
        raise UserError(f"model {source!r} no longer matches the exported weights "
                        "(checksum differs); re-export or pass the original checkpoint")
    return model


def run_compare(packages_dir: Path, audio_path: Path | None, backend: str | None, runs: int, warmup: int,
                plots_dir: Path | None, tolerances_file: Path | None = None, model_source: str | None = None,
                mapping: list[str] = ()) -> CompareReport:
    """Run every gate for the packages in a directory: ours (metadata.json) record the result there, any
    other directory is only read. A comparison that cannot be made is a UserError."""
    from exporters.export_view import open_export, parse_mapping

    tolerances = read_tolerances(tolerances_file)
    clip = Path(audio_path or DEFAULT_CLIP)
    if not clip.is_file():
        raise UserError(f"audio clip not found: {clip}")
    view = open_export(packages_dir, model_source, parse_mapping(list(mapping), packages_dir))
    try:
        return compare_view(view, clip, backend, runs, warmup, plots_dir, tolerances)
    except ParityError as error:
        raise UserError(str(error)) from error


def read_tolerances(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        table = load_tolerances(path)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"cannot read tolerance table {path}: {error}") from None
    check_tolerance_table(path, table)
    return table


TOLERANCE_NUMBERS = ("atol", "rtol", "margin", "psnr_min")


def check_tolerance_table(path: Path, table: dict) -> None:
    """Rows for known components and precisions (or compression variants), with non-negative, finite bars:
    checked before any model loads, so a table that would fail every gate is never judged by."""
    import math

    from exporters.compression import VARIANTS
    from exporters.export import PRECISIONS
    from exporters.parity.diff import SCALES

    for (component, precision, output), row in table.items():
        where = f"tolerance table {path}: [{component}.{precision}] {output}"
        if component not in COMPONENTS:
            raise UserError(f"{where}: unknown component {component!r} (known: {', '.join(COMPONENTS)})")
        if precision not in PRECISIONS and precision not in VARIANTS:
            raise UserError(f"{where}: unknown precision {precision!r} (fp32, fp16 or a compression variant)")
        for name in TOLERANCE_NUMBERS:
            value = getattr(row, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise UserError(f"{where}: {name} = {value!r}; give a non-negative finite number")
        if row.scale not in SCALES:
            raise UserError(f"{where}: unknown scale {row.scale!r} (known: {', '.join(s for s in SCALES if s)})")


def smaller_window_gates(gate: GateContext, window, view, backend: str | None, clip_name: str,
                         samples, components: list[str]) -> list:
    """The gates of one smaller window's functions, on the clip's first window-length of samples."""
    windowed = [name for name in components if window[name].windowed]
    opened = {name: view.open(name, backend, function=window.function_name) for name in windowed}
    audio_signal, audio_length = fit_window(samples[:window.window_samples], window.window_samples)
    return clip_gates(replace(gate, contract=window), opened.__getitem__, f"{clip_name} ({window.function_name})",
                      audio_signal, audio_length, default_tokens(window), windowed)


def compare_view(view, clip: Path, backend: str | None, runs: int, warmup: int, plots_dir: Path | None,
                 tolerances: dict | None) -> CompareReport:
    """Every gate of every judged package on one clip (and each smaller window of a multi-window export),
    the likely causes of what fails, latency, plots; recorded in metadata.json for our own exports."""
    from exporters.parity.diagnosis import diagnose

    contract, model = view.contract, view.model
    samples = load_audio(clip, contract.model.sample_rate)
    if len(samples) < contract.model.hop_length:
        raise UserError(f"{clip} holds {len(samples)} samples: NeMo's preprocessor gives no feature frame for less "
                        f"than one hop ({contract.model.hop_length} samples); compare on a longer clip")
    opened = {name: view.open(name, backend) for name in view.judged}
    gate = GateContext(model, contract, view.precision, tolerances, view.rows)
    diffs = []
    for index, (case, audio) in enumerate(clip_cases(clip.name, samples, contract.window_samples)):
        judged = [name for name in opened if index == 0 or COMPONENTS[name].gate != "decoder"]  # no audio in it
        diffs += clip_gates(gate, opened.__getitem__, case, *fit_window(audio, contract.window_samples),
                            default_tokens(contract), judged)
    for window in contract.window_contracts()[:-1]:
        diffs += smaller_window_gates(gate, window, view, backend, clip.name, samples, list(opened))
    chosen_backend = next(iter(opened.values())).backend if opened else (backend or default_backend())
    report = CompareReport(diffs, view=view, diagnoses=diagnose(diffs, view), clip=clip.name, backend=chosen_backend)
    for name, package in opened.items():
        report.latencies += measure_latency(model, contract, name, package, runs, warmup)
    if plots_dir is not None:
        report.plots = write_plots(diffs, plots_dir)
    if view.metadata is not None:
        record_parity(view, report, clip)
    return report


def clip_cases(name: str, samples: np.ndarray, window_samples: int) -> list[tuple[str, np.ndarray]]:
    """The clip in the window (trimmed or zero-padded), and where it fills the window, also its first half
    zero-padded: packages must reproduce NeMo on a file shorter than the window too, where the padding
    past the valid length must not reach the valid frames."""
    cases = [(name, samples)]
    if len(samples) >= window_samples:
        cases.append((f"{name} (first half, padded)", samples[:window_samples // 2]))
    return cases


def record_parity(view, report: CompareReport, clip: Path) -> None:
    """Our export's metadata.json keeps the last comparison."""
    metadata = view.metadata
    metadata["parity"] = {
        "backend": report.backend, "precision": view.precision, "clip": clip.name,
        "clip_sha256": hashlib.sha256(clip.read_bytes()).hexdigest(), "versions": tool_versions(),
        "passed": report.passed, "diffs": [d.to_dict() for d in report.diffs],
        "latency": [latency.to_dict() for latency in report.latencies],
    }
    write_metadata(view.directory, metadata)
