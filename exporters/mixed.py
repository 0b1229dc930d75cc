"""The `mixed` compression plan: per encoder weight, the smallest format whose decisions still agree
with NeMo on a calibration set.

The candidates' weights are the ones Core ML would hold: the encoder is converted once, compressed in
each candidate format by coremltools, and the executor decompresses every weight from the saved
packages. The search then runs in NeMo itself: a weight is replaced by its decompressed value, the
model decodes the calibration clips greedily (NeMo's own decoding), and the format is kept when every
token, frame and duration equals the uncompressed model's. Weights are tried one at a time, smallest
format first; then all choices together, and while the combination still disagrees, the weight whose
choice moved the encoder output most is raised to its next format. The plan is judged afterwards on
held-out data by the real package (`evaluate`), never by this search.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exporters.compression import (MIXED_CANDIDATES, NONE, VARIANTS, CompressionSettings, compress,
                                   parameter_key, plan_key)
from exporters.reference import NemoGreedy

ORDER = (*MIXED_CANDIDATES, NONE)


@dataclass
class MixedPlan:
    weights: dict[str, str]
    calibration: list[str]
    rounds: int = 0
    trials: int = 0
    bits: dict[str, int] = field(default_factory=dict)

    def mean_bits(self, sizes: dict[str, int]) -> float:
        """Weight-count-weighted bits per weight (none counts as the precision's 16 or 32)."""
        total = sum(sizes.values())
        return sum(sizes[name] * self.bits[variant] for name, variant in self.weights.items()) / total

    def to_dict(self, sizes: dict[str, int]) -> dict:
        return {"weights": dict(sorted(self.weights.items())), "calibration": self.calibration,
                "trials": self.trials, "rounds": self.rounds, "mean_bits_per_weight": round(self.mean_bits(sizes), 3)}


def candidate_weights(model, contract, precision: str) -> dict[str, dict[str, np.ndarray]]:
    """{format: {parameter key: weight as that format's package stores it, decompressed}} for the
    encoder's compressible weights."""
    from exporters.components import COMPONENTS
    from exporters.export import convert, trace
    from exporters.runtime.mil import MilExecutor

    mlmodel = convert(trace(model, contract, "encoder"), contract["encoder"], precision,
                      COMPONENTS["encoder"].keep_fp32)
    keys = parameter_keys(model)
    by_format = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant in MIXED_CANDIDATES:
            path = Path(folder) / f"{variant}.mlpackage"
            compress(mlmodel, CompressionSettings(variant, ("encoder",))).save(str(path))
            decompressed = MilExecutor(path).decompressed
            by_format[variant] = {key: decompressed[name] for name in decompressed
                                  if (key := plan_key(name, keys)) is not None}
    return by_format


def parameter_keys(model) -> dict[str, torch.nn.Parameter]:
    """The model's encoder parameters by plan key ("encoder_layers_0_..._weight")."""
    return {parameter_key(f"encoder.{name}"): parameter for name, parameter in model.encoder.named_parameters()}


def search_mixed_plan(model, contract, precision: str, clips: list[np.ndarray], names: list[str],
                      max_rounds: int = 64) -> tuple[MixedPlan, dict[str, int]]:
    """The plan (and each weight's element count) for `model` on calibration `clips`."""
    candidates = candidate_weights(model, contract, precision)
    parameters = parameter_keys(model)
    searched = sorted(set.intersection(*(set(weights) for weights in candidates.values())))
    originals = {key: parameters[key].detach().clone() for key in searched}
    decisions = NemoGreedy(model, clips)
    reference_encoded = decisions.encode()
    reference = decisions.decide(reference_encoded)
    plan = MixedPlan({}, names, bits={**{v: VARIANTS[v].bits for v in MIXED_CANDIDATES},
                                      NONE: 16 if precision == "fp16" else 32})
    drift: dict[str, float] = {}

    def set_weight(key: str, variant: str) -> None:
        value = originals[key] if variant == NONE else torch.from_numpy(
            np.asarray(candidates[variant][key], np.float32)).reshape(originals[key].shape)
        with torch.no_grad():
            parameters[key].copy_(value)

    def agrees() -> tuple[bool, float]:
        plan.trials += 1
        encoded = decisions.encode()
        change = max(float((a[0] - b[0]).norm() / b[0].norm()) for a, b in zip(encoded, reference_encoded))
        return decisions.decide(encoded) == reference, change

    try:
        for key in searched:
            for variant in ORDER:
                set_weight(key, variant)
                ok, change = (True, 0.0) if variant == NONE else agrees()
                if ok:
                    plan.weights[key], drift[key] = variant, change
                    break
            set_weight(key, NONE)
        for key in searched:
            set_weight(key, plan.weights[key])
        while plan.rounds < max_rounds and not agrees()[0]:
            plan.rounds += 1
            raised = [key for key in searched if plan.weights[key] != NONE]
            if not raised:
                break
            key = max(raised, key=lambda k: drift[k])
            plan.weights[key] = ORDER[ORDER.index(plan.weights[key]) + 1]
            drift[key] = drift[key] / 2  # let another weight be raised next, unless it still dominates
            set_weight(key, plan.weights[key])
    finally:
        for key in searched:
            set_weight(key, NONE)
    return plan, {key: originals[key].numel() for key in searched}


def calibration_clips(model_name: str, manifest: Path | None, sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
    """Calibration audio: a manifest's files, or the even-indexed held-out clips of a built-in trained model."""
    from exporters.audio import load_audio
    from exporters.evaluate import manifest_entries

    _, entries = manifest_entries(manifest, model_name)
    if manifest is None:
        entries = entries[0::2]
    return [load_audio(path, sample_rate) for path, _ in entries], [Path(path).name for path, _ in entries]


def plan_document(plan: MixedPlan, sizes: dict[str, int], source: str, weights_sha: str, precision: str) -> str:
    """The plan file's text (JSON), as `convert --mixed-plan` reads it."""
    import json

    document = {"model": source, "weights_sha256": weights_sha, "precision": precision, **plan.to_dict(sizes)}
    return json.dumps(document, indent=2) + "\n"
