"""Execute exported packages behind one interface: `load(path) -> runtime.predict(dict) -> dict`.

Backends:
- `coreml`: coremltools' MLModel with a chosen compute unit (macOS only).
- `mil`: the project's own numpy executor of the saved MIL program (any OS).
The reference side (NeMo's modules or our torch wrappers behind the same interface) is
`exporters.reference.TorchRuntime`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from exporters.tensors import TensorSpec

BACKENDS = ("coreml", "mil")
COREML_COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this host (e.g. Core ML off macOS)."""


def with_defaults(inputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """inputs plus every optional input they leave out, filled with its default (as Core ML does)."""
    missing = {s.name: np.full(s.shape, s.default, s.numpy_dtype) for s in specs
               if s.optional and s.name not in inputs}
    return {**inputs, **missing}


class Runtime(Protocol):
    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class CountingRuntime:
    """Any runtime, counting its calls (model calls per window are what a device pays overhead for)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.calls = 0

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return self.runtime.predict(inputs)


def default_backend() -> str:
    """Core ML where it exists (macOS), the MIL executor elsewhere."""
    return "coreml" if sys.platform == "darwin" else "mil"


def coreml_available() -> bool:
    return sys.platform == "darwin"


def load(path: Path | str, backend: str | None = None, compute_units: str = "CPU_ONLY",
         function: str | None = None) -> Runtime:
    """Open a saved .mlpackage with the chosen backend; `function` picks one function of a multifunction
    package by name (None: its default function)."""
    backend = backend or default_backend()
    if backend == "mil":
        return MilRuntime(Path(path), function)
    if backend == "coreml":
        return CoreMLRuntime(Path(path), compute_units, function)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def package_io(path: Path, function: str | None = None
               ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs one function of a package declares, in order (optional inputs with their defaults)."""
    from exporters.runtime.mil.program import load_package

    package = load_package(Path(path), function)
    return tuple(package.inputs), tuple(package.outputs)


class MilRuntime:
    """The saved MIL program executed by the project's numpy executor."""

    backend = "mil"

    def __init__(self, path: Path, function: str | None = None):
        from exporters.runtime.mil import MilExecutor

        self.path = path
        self.executor = MilExecutor(path, function)
        self.inputs, self.outputs = tuple(self.executor.inputs), tuple(self.executor.outputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.predict(inputs)


class CoreMLRuntime:
    """Core ML itself (macOS only)."""

    backend = "coreml"

    def __init__(self, path: Path, compute_units: str = "CPU_ONLY", function: str | None = None):
        if not coreml_available():
            raise BackendUnavailable(f"Core ML can run packages only on macOS (this is {sys.platform})")
        import coremltools as ct

        self.path = path
        self.compute_units = compute_units
        self.inputs, self.outputs = package_io(path, function)  # also rejects an unknown function
        chosen = {} if function is None else {"function_name": function}
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units), **chosen)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.model.predict(inputs)
        return {d.name: np.asarray(outputs[d.name]).astype(d.numpy_dtype, copy=False) for d in self.outputs}
