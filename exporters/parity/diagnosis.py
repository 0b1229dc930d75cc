"""From failing gates to a likely cause: what a converter most often gets wrong, told by its fingerprint.

Each rule reads the diffs (with NeMo's and the package's arrays) and the export's view, and names a cause
only when the evidence has that cause's shape:
- fp16_overflow: inf, NaN or values saturated at fp16's largest finite value where NeMo is finite;
- unmasked_subsampling: the error peaks at the last valid encoder frames, the frames before them differ only
  by what attention spreads (the subsampling convolutions read the window's padding);
- end_of_audio_padding: a length output counts the whole window (the padding taken for audio);
- swapped_state / transposed_state: the state outputs are NeMo's with h and c exchanged, or NeMo's laid out
  in another axis order;
- duration_mapping: the duration output is NeMo's index mapped through a fixed table (the durations
  themselves, or a permutation); a joint's duration logits in another order;
- wrong_window: a package built for another window than the export's (from the interface);
- compressed_weights: a package with compressed weights fails its compressed tolerance row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporters.parity.diff import Diff

FP16_MAX = float(np.finfo(np.float16).max)
# Share of frames whose duration follows one fixed table for a mapping to be named (near-ties of random
# weights may flip a few).
MAPPING_AGREEMENT = 0.9
LENGTH_OUTPUTS = {"mel_length": "mel_frames", "encoder_length": "encoder_frames"}
TIME_OUTPUTS = {("encoder", "encoder"), ("mel_encoder", "encoder"), ("preprocessor", "mel")}
STATE_COMPONENTS = ("decoder", "decode_step")


@dataclass(frozen=True)
class Diagnosis:
    component: str
    cause: str
    message: str

    def to_dict(self) -> dict:
        return {"component": self.component, "cause": self.cause, "message": self.message}


def diagnose(diffs: list[Diff], view=None) -> list[Diagnosis]:
    """Every likely cause the evidence shows, at most one per (component, cause)."""
    found: dict[tuple[str, str], Diagnosis] = {}
    failing = [d for d in diffs if not d.passed and d.actual is not None]
    for rule in (fp16_overflow, unmasked_subsampling, end_of_audio_padding, duration_mapping):
        for diff in failing:
            if (diagnosis := rule(diff, view)) is not None:
                found.setdefault((diagnosis.component, diagnosis.cause), diagnosis)
    for diagnosis in state_layout(failing) + window_and_compression(diffs, view):
        found.setdefault((diagnosis.component, diagnosis.cause), diagnosis)
    for (component, cause), explained in EXPLAINED_BY.items():
        if (component, cause) in found and (component, explained) in found:
            del found[(component, explained)]
    return list(found.values())


# (component, cause) -> a cause it also produces, which it then explains: a length that counts the padding
# makes the last frames differ too.
EXPLAINED_BY = {(name, "end_of_audio_padding"): "unmasked_subsampling" for name in ("encoder", "mel_encoder",
                                                                                    "preprocessor")}


def fp16_overflow(diff: Diff, view) -> Diagnosis | None:
    actual = np.asarray(diff.actual)
    if diff.tolerance.decision or not np.issubdtype(actual.dtype, np.floating):
        return None
    expected = np.asarray(diff.expected, np.float64)
    finite_expected = np.isfinite(expected)
    infinite = int(np.sum(np.isinf(actual) & finite_expected))
    nans = int(np.sum(np.isnan(actual) & finite_expected))
    saturated = int(np.sum((np.abs(actual) >= FP16_MAX) & np.isfinite(actual) & (np.abs(expected) < FP16_MAX)))
    if not (infinite or nans or saturated):
        return None
    peak = float(np.max(np.abs(expected[finite_expected]), initial=0.0))
    return Diagnosis(diff.component, "fp16_overflow",
                     f"fp16 overflow in {diff.output} ({diff.case}): {infinite} inf, {nans} NaN and {saturated} "
                     f"saturated at ±{FP16_MAX:.0f} where NeMo is finite (NeMo's largest |value| {peak:.3g}): an "
                     "intermediate exceeds fp16's range; keep that op in fp32 or rescale it")


# The last valid frames of an encoder whose subsampling reads padding are off by far more than the rest (which
# differ only by what attention spreads from them): measured on the tiny model 0.105 on the last frame against
# a median of 0.0018 (58x).
TAIL_PEAK_RATIO = 10.0


def frame_errors(diff: Diff) -> np.ndarray:
    """The largest error of each time frame (last axis) of a time output, NaN and inf counted as inf."""
    error = np.abs(np.asarray(diff.actual, np.float64) - np.asarray(diff.expected, np.float64))
    error[~np.isfinite(error)] = np.inf
    return error.reshape(-1, error.shape[-1]).max(axis=0)


def unmasked_subsampling(diff: Diff, view) -> Diagnosis | None:
    if (diff.component, diff.output) not in TIME_OUTPUTS or diff.tolerance.scale is not None:
        return None
    errors = frame_errors(diff)
    frames = errors.size
    tail = max(4, frames // 16)
    if frames < 2 * tail or not np.all(np.isfinite(errors)):
        return None
    peak, rest = float(errors[-tail:].max()), float(np.median(errors[:-tail]))
    if peak <= diff.tolerance.atol or peak < TAIL_PEAK_RATIO * max(rest, 1e-12) or errors.argmax() < frames - tail:
        return None
    return Diagnosis(diff.component, "unmasked_subsampling",
                     f"end of audio: the error peaks at the last {tail} valid {diff.output} frames ({peak:.3g} at "
                     f"most, {peak / max(rest, 1e-12):.0f}x the median {rest:.2g} of the {frames - tail} before; "
                     f"{diff.case}): the subsampling convolutions read the window's padding past the valid length "
                     "(mask each convolution's input past its valid length, as NeMo's masked conv stack does)")


def end_of_audio_padding(diff: Diff, view) -> Diagnosis | None:
    if diff.output not in LENGTH_OUTPUTS or view is None:
        return None
    window_frames = getattr(view.contract, LENGTH_OUTPUTS[diff.output])
    actual, expected = int(np.asarray(diff.actual).reshape(-1)[0]), int(np.asarray(diff.expected).reshape(-1)[0])
    if actual != window_frames or expected == window_frames:
        return None
    return Diagnosis(diff.component, "end_of_audio_padding",
                     f"{diff.output} is the whole window's {actual} frames where NeMo's is {expected} ({diff.case}): "
                     "the end-of-audio padding is taken for audio (the package ignores the valid length it is given)")


def duration_mapping(diff: Diff, view) -> Diagnosis | None:
    if diff.output == "duration_logits":
        expected, actual = np.asarray(diff.expected), np.asarray(diff.actual)
        if np.allclose(actual[..., ::-1], expected, atol=diff.tolerance.atol, rtol=max(diff.tolerance.rtol, 1e-3)):
            return Diagnosis(diff.component, "duration_mapping",
                             f"the duration logits are NeMo's in reverse order ({diff.case}): the durations list is "
                             "mapped backwards")
        return None
    if diff.output != "duration":
        return None
    expected = np.asarray(diff.expected).reshape(-1).astype(int)
    actual = np.asarray(diff.actual).reshape(-1).astype(int)
    table = {}
    for index in np.unique(expected):
        values, counts = np.unique(actual[expected == index], return_counts=True)
        table[int(index)] = int(values[counts.argmax()])
    followed = np.mean([table[index] == value for index, value in zip(expected, actual)])
    if followed < MAPPING_AGREEMENT or all(index == value for index, value in table.items()):
        return None
    durations = view.contract.model.durations if view is not None else ()
    if table and all(0 <= i < len(durations) and durations[i] == v for i, v in table.items()):
        return Diagnosis(diff.component, "duration_mapping",
                         f"duration returns the duration in frames (durations[index]), not its index into the "
                         f"durations list {list(durations)} ({diff.case}): app code would skip the wrong number "
                         "of frames")
    mapping = ", ".join(f"{i}→{v}" for i, v in sorted(table.items()))
    return Diagnosis(diff.component, "duration_mapping",
                     f"duration is NeMo's index through a fixed table ({mapping}; {diff.case}): the duration index "
                     "mapping is wrong")


def state_layout(failing: list[Diff]) -> list[Diagnosis]:
    """h and c exchanged, or laid out in another axis order, told from a case where both state outputs fail."""
    by_case: dict[tuple[str, str], dict[str, Diff]] = {}
    for diff in failing:
        if diff.component in STATE_COMPONENTS and diff.output in ("h_out", "c_out"):
            by_case.setdefault((diff.component, diff.case), {})[diff.output] = diff
    found = []
    for (component, case), pair in by_case.items():
        if len(pair) != 2:
            continue
        h, c = pair["h_out"], pair["c_out"]
        if close(h.actual, c.expected, h) and close(c.actual, h.expected, c):
            found.append(Diagnosis(component, "swapped_state",
                                   f"h_out is NeMo's c and c_out NeMo's h ({case}): the LSTM state outputs are "
                                   "swapped"))
            continue
        layout = relaid(h.actual, h.expected, h)
        if layout is not None and relaid(c.actual, c.expected, c) == layout:
            found.append(Diagnosis(component, "transposed_state",
                                   f"h_out and c_out hold NeMo's state values laid out {layout} ({case}): the state "
                                   "is transposed; it must be [layers, 1, hidden]"))
    return found


def close(actual, expected, diff: Diff) -> bool:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return actual.shape == expected.shape and bool(
        np.all(np.abs(actual - expected) <= diff.tolerance.atol + diff.tolerance.rtol * np.abs(expected)))


def relaid(actual, expected, diff: Diff) -> str | None:
    """How NeMo's state values [layers, steps, hidden] (a state [layers, 1, hidden] per step) must be laid out to
    give the package's, if the memory order [hidden, layers] or the layers reversed does."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if expected.ndim != 3 or actual.shape != expected.shape or expected.shape[0] == 1:
        return None
    layers, steps, hidden = expected.shape
    per_step = np.moveaxis(expected, 1, 0)  # [steps, layers, hidden]
    transposed = np.swapaxes(per_step, 1, 2).reshape(steps, layers, hidden)
    candidates = {"as [hidden, layers] (transposed)": np.moveaxis(transposed, 0, 1),
                  "with the layers in reverse order": expected[::-1]}
    return next((name for name, laid in candidates.items() if close(actual, laid, diff)), None)


def window_and_compression(diffs: list[Diff], view) -> list[Diagnosis]:
    if view is None:
        return []
    found = []
    for name, package in view.packages.items():
        if package.window_mismatch:
            seconds = view.contract.window_samples / view.contract.model.sample_rate
            found.append(Diagnosis(name, "wrong_window",
                                   f"wrong window length: {package.window_mismatch} (the export's window is "
                                   f"{seconds:g} s); re-export it for that window"))
        failed = [d for d in diffs if d.component == name and not d.passed and not d.tolerance.exact]
        if package.compression and failed:
            worst = max(failed, key=lambda d: d.max_abs)
            found.append(Diagnosis(name, "compressed_weights",
                                   f"compressed weights beyond their tolerance row: {worst.output} is off by "
                                   f"{worst.max_abs:.3g} ({worst.tolerance.describe()}, row {package.compression}); "
                                   "compress less (more bits, or leave this component uncompressed)"))
    return found
