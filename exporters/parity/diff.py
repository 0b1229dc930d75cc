"""Compare one output of a package with NeMo's, under its tolerance, and say where it fails."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TOLERANCE_FILE = Path(__file__).resolve().parent.parent / "tolerances.toml"


# A tolerance's `scale` names, with how a description says them.
SCALES = {None: "", "per_feature_std": " in log-mel units", "front_end_conditioning": " × front-end conditioning"}


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol for continuous outputs, `exact` for lengths, `decision` + `margin` for argmax outputs."""

    atol: float = 0.0
    rtol: float = 0.0
    exact: bool = False
    decision: bool = False
    margin: float = 0.0
    psnr_min: float | None = None
    # Both sides are multiplied by a per-clip scale before measuring. "per_feature_std": NeMo's
    # normalization divisor (log-mel units); "front_end_conditioning": 1 for speech, below 1 for
    # silence-level clips (exporters.reference.nemo_front_end_conditioning).
    scale: str | None = None

    def describe(self) -> str:
        if self.exact:
            return "exact"
        if self.decision:
            return f"argmax where margin>{self.margin:g}"
        psnr = f", psnr≥{self.psnr_min:g}dB" if self.psnr_min is not None else ""
        scale = SCALES[self.scale]
        return f"atol={self.atol:g} rtol={self.rtol:g}{psnr}{scale}"


def load_tolerances(path: Path = TOLERANCE_FILE) -> dict[tuple[str, str, str], Tolerance]:
    """The whole table, keyed by (component, precision, output)."""
    table = tomllib.loads(path.read_text())
    return {(component, precision, output): Tolerance(**entry)
            for component, precisions in table.items()
            for precision, outputs in precisions.items()
            for output, entry in outputs.items()}


TOLERANCES = load_tolerances()


class ParityError(RuntimeError):
    """A comparison cannot be made (no tolerance for it, shapes that differ, missing margins)."""


def tolerance(component: str, precision: str, output: str, table: dict | None = None) -> Tolerance:
    try:
        return (TOLERANCES if table is None else table)[(component, precision, output)]
    except KeyError:
        raise ParityError(f"no tolerance for {component}/{precision}/{output} in the tolerance table") from None


def continuous_tolerance(component: str, precision: str, table: dict | None = None) -> Tolerance:
    """The table's first atol/rtol entry for a component: the bar for its intermediate values."""
    return next(tol for (c, p, _), tol in (TOLERANCES if table is None else table).items()
                if c == component and p == precision and not (tol.exact or tol.decision))


@dataclass(frozen=True)
class Diff:
    """How far one package output is from NeMo's, and whether that is within tolerance."""

    component: str
    output: str
    precision: str
    case: str
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...]
    expected_value: float
    actual_value: float
    tolerance: Tolerance
    passed: bool
    psnr: float | None = None
    compared: int = 0
    excluded: int = 0
    # The compared arrays themselves (NeMo's, the package's), for plots; not part of the record.
    expected: np.ndarray | None = field(default=None, repr=False, compare=False)
    actual: np.ndarray | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        excluded = f", {self.excluded} of {self.compared + self.excluded} excluded by margin" if self.excluded else ""
        psnr = f", psnr {self.psnr:.1f} dB" if self.psnr is not None else ""
        if self.tolerance.decision:
            return (f"{verdict} {self.component}.{self.output} [{self.precision}, {self.case}]: "
                    f"{int(self.max_abs)} argmax mismatches in {self.compared} clear positions{excluded}; "
                    f"first at {list(self.worst_index)}: NeMo {self.expected_value:.0f} vs package "
                    f"{self.actual_value:.0f}")
        return (f"{verdict} {self.component}.{self.output} [{self.precision}, {self.case}]: "
                f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}{psnr}{excluded}; "
                f"worst at {list(self.worst_index)}: NeMo {self.expected_value:.6g} vs package "
                f"{self.actual_value:.6g}; tolerance {self.tolerance.describe()}")

    def to_dict(self) -> dict:
        return {"component": self.component, "output": self.output, "precision": self.precision,
                "case": self.case, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "psnr": self.psnr, "passed": self.passed, "tolerance": self.tolerance.describe(),
                "worst_index": list(self.worst_index), "excluded": self.excluded}


def psnr_db(expected: np.ndarray, actual: np.ndarray) -> float:
    """Peak signal-to-noise ratio of actual against expected, peak = max |expected|."""
    noise = float(np.mean((actual.astype(np.float64) - expected) ** 2))
    peak = float(np.max(np.abs(expected)))
    return math.inf if noise == 0 else 10 * math.log10(peak ** 2 / noise)


def compare(component: str, output: str, precision: str, case: str, expected: np.ndarray,
            actual: np.ndarray, margins: np.ndarray | None = None, scale: np.ndarray | None = None,
            table: dict | None = None) -> Diff:
    """Diff actual against expected under the tolerance for (component, precision, output) in `table`
    (default: exporters/tolerances.toml).

    `scale` (for tolerances with `scale` set) multiplies both sides before measuring.
    """
    tol = tolerance(component, precision, output, table)
    if expected.shape != actual.shape:
        raise ParityError(f"{component}.{output} [{precision}, {case}]: shape {actual.shape}, "
                          f"NeMo has {expected.shape}")
    if tol.decision:
        return compare_decisions(component, output, precision, case, expected, actual, margins, tol)
    expected64, actual64 = expected.astype(np.float64), actual.astype(np.float64)
    if tol.scale is not None:
        if scale is None:
            raise ParityError(f"{component}.{output}: tolerance measured in scaled units needs the scale")
        expected64, actual64 = expected64 * scale, actual64 * scale
    error = np.abs(actual64 - expected64)
    error[~np.isfinite(actual64)] = np.inf
    # NeMo itself yields NaN for a one-frame clip (std over one frame); the same NaN/inf agrees.
    same_nonfinite = (np.isnan(expected64) & np.isnan(actual64)) | (np.isinf(expected64) & (expected64 == actual64))
    error[same_nonfinite] = 0.0
    allowed = tol.atol + tol.rtol * np.nan_to_num(np.abs(expected64))
    worst = np.unravel_index(int(np.argmax(error - allowed)), error.shape) if error.size else ()
    significant = np.abs(expected64) > max(tol.atol, 1e-12)  # relative error is meaningless near zero
    max_rel = float(np.max(error[significant] / np.abs(expected64[significant]))) if significant.any() else 0.0
    psnr = psnr_db(expected64, actual64) if tol.psnr_min is not None else None
    passed = bool(np.all(error <= allowed)) and (psnr is None or psnr >= tol.psnr_min)
    return Diff(component, output, precision, case, float(error.max(initial=0.0)), max_rel,
                tuple(int(i) for i in worst), float(expected64[worst]), float(actual64[worst]), tol, passed,
                psnr, compared=int(error.size), expected=expected, actual=actual)


def compare_decisions(component, output, precision, case, expected, actual, margins, tol) -> Diff:
    """Argmax outputs must agree wherever NeMo's margin is clear; report how many were not."""
    if margins is None:
        raise ParityError(f"{component}.{output}: a decision comparison needs NeMo's margins")
    clear = margins > tol.margin
    mismatched = (expected != actual) & clear
    worst = np.unravel_index(int(np.argmax(mismatched)), expected.shape) if expected.size else ()
    mismatches = int(mismatched.sum())
    return Diff(component, output, precision, case, float(mismatches), float(mismatches / max(int(clear.sum()), 1)),
                tuple(int(i) for i in worst), float(expected[worst]), float(actual[worst]), tol,
                passed=mismatches == 0, compared=int(clear.sum()), excluded=int((~clear).sum()),
                expected=expected, actual=actual)


def top1_margin(scores: np.ndarray) -> np.ndarray:
    """Gap between the best and second-best score along the last axis."""
    top2 = np.sort(scores, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def rank_margins(scores: np.ndarray, k: int) -> np.ndarray:
    """For each of the k best scores along the last axis (best first), the gap to its nearer neighbour in
    that order: the rank of a score is a clear decision only when both neighbours are far from it."""
    ranked = -np.sort(-scores, axis=-1)[..., :k + 1]
    gaps = ranked[..., :-1] - ranked[..., 1:]
    if gaps.shape[-1] < k:  # k is every score: the last has no lower neighbour
        gaps = np.concatenate([gaps, np.full((*gaps.shape[:-1], 1), np.inf)], axis=-1)
    before = np.concatenate([np.full((*gaps.shape[:-1], 1), np.inf), gaps[..., :k - 1]], axis=-1)
    return np.minimum(before, gaps[..., :k])


def assert_passed(diffs: list[Diff]) -> None:
    """Fail with one line per failing output (all of them, not just the first)."""
    failures = [d.describe() for d in diffs if not d.passed]
    assert not failures, "\n".join(failures)
