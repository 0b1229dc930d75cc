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
from exporters.metadata import read_metadata, tool_versions, weights_sha256, write_metadata
from exporters.parity import plots
from exporters.parity.diff import Diff, ParityError, load_tolerances
from exporters.parity.gates import GateContext, clip_gates, default_tokens
from exporters.reference import nemo_runtime
from exporters.runtime import Runtime, load

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

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)


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
    window_s = contract.window_samples / contract.model.sample_rate
    results = []
    for side, runtime in ((package.backend, package), ("nemo", nemo_runtime(model, contract, name))):
        mean, stdev = time_predict(runtime, inputs, runs, warmup)
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


def load_recorded_model(metadata: dict):
    """The model named in metadata.json, checked against its recorded weights checksum."""
    from exporters.checkpoints import load_model

    model = load_model(metadata["model"]["source"])
    if weights_sha256(model) != metadata["model"]["weights_sha256"]:
        raise UserError(f"model {metadata['model']['source']!r} no longer matches the exported weights "
                        "(checksum differs); re-export or pass the original checkpoint")
    return model


def run_compare(packages_dir: Path, audio_path: Path | None, backend: str | None, runs: int, warmup: int,
                plots_dir: Path | None, tolerances_file: Path | None = None) -> CompareReport:
    """Run every gate for the packages in a directory and record the results in its metadata.json; a
    comparison that cannot be made is a UserError."""
    try:
        return compare_export(packages_dir, audio_path, backend, runs, warmup, plots_dir, tolerances_file)
    except ParityError as error:
        raise UserError(str(error)) from error


def compressed_components(metadata: dict) -> dict[str, str]:
    """component -> compression variant, for the packages of an export that were compressed."""
    return {name: entry["compression"] for name, entry in metadata["packages"].items() if entry.get("compression")}


def read_tolerances(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return load_tolerances(path)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"cannot read tolerance table {path}: {error}") from None


def smaller_window_gates(gate: GateContext, window, packages_dir: Path, backend: str | None, clip_name: str,
                         samples, components: list[str]) -> list:
    """The gates of one smaller window's functions, on the clip's first window-length of samples."""
    windowed = [name for name in components if window[name].windowed]
    opened = {name: load(packages_dir / window[name].package_name, backend, function=window.function_name)
              for name in windowed}
    audio_signal, audio_length = fit_window(samples[:window.window_samples], window.window_samples)
    return clip_gates(replace(gate, contract=window), opened.__getitem__, f"{clip_name} ({window.function_name})",
                      audio_signal, audio_length, default_tokens(window), windowed)


def compare_export(packages_dir: Path, audio_path: Path | None, backend: str | None, runs: int, warmup: int,
                   plots_dir: Path | None, tolerances_file: Path | None) -> CompareReport:
    from exporters.contract import contract_for_model

    metadata = read_metadata(packages_dir)
    model = load_recorded_model(metadata)
    recorded = metadata["contract"]
    windows = tuple(w["window_seconds"] for w in recorded.get("windows", ())) or (recorded["window_seconds"],)
    contract = contract_for_model(model, windows, recorded["top_k"], recorded["layout"])
    clip = audio_path or DEFAULT_CLIP
    if not Path(clip).is_file():
        raise UserError(f"audio clip not found: {clip}")
    samples = load_audio(clip, contract.model.sample_rate)
    audio_signal, audio_length = fit_window(samples, contract.window_samples)
    opened = {name: load(packages_dir / entry["file"], backend) for name, entry in metadata["packages"].items()}
    precision = metadata["precision"]
    gate = GateContext(model, contract, precision, read_tolerances(tolerances_file), compressed_components(metadata))
    diffs = clip_gates(gate, opened.__getitem__, Path(clip).name, audio_signal, audio_length,
                       default_tokens(contract), list(opened))
    for window in contract.window_contracts()[:-1]:
        diffs += smaller_window_gates(gate, window, packages_dir, backend, Path(clip).name, samples, list(opened))
    report = CompareReport(diffs)
    for name, package in opened.items():
        report.latencies += measure_latency(model, contract, name, package, runs, warmup)
    if plots_dir is not None:
        report.plots = write_plots(diffs, plots_dir)
    metadata["parity"] = {
        "backend": next(iter(opened.values())).backend, "precision": precision, "clip": Path(clip).name,
        "clip_sha256": hashlib.sha256(Path(clip).read_bytes()).hexdigest(), "versions": tool_versions(),
        "passed": report.passed, "diffs": [d.to_dict() for d in diffs],
        "latency": [latency.to_dict() for latency in report.latencies],
    }
    write_metadata(packages_dir, metadata)
    return report
