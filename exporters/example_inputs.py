"""Inputs generated from the contract: for tracing, for tests and for the compare CLI."""

from __future__ import annotations

import numpy as np

from exporters.contract import FP32, ComponentContract, TensorSpec


def example_value(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """A plausible value: full lengths, random token ids in range, small random floats, an optional
    input's default."""
    if spec.optional:
        return np.full(spec.shape, spec.default, dtype=spec.numpy_dtype)
    if spec.dtype == FP32:
        scale = 0.1 if spec.name == "audio_signal" else 1.0
        return (rng.standard_normal(spec.shape) * scale).astype(np.float32)
    if spec.name.endswith("_length"):
        return np.full(spec.shape, spec.max_value, dtype=np.int32)
    return rng.integers(0, spec.max_value + 1, size=spec.shape, dtype=np.int32)


def example_inputs(component: ComponentContract, seed: int = 0) -> dict[str, np.ndarray]:
    """One value per input of the component, in contract order."""
    rng = np.random.default_rng(seed)
    return {spec.name: example_value(spec, rng) for spec in component.inputs}
