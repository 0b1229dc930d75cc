"""What every benchmark records next to its timings."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest


def host_description() -> dict:
    """The host next to every timing. Virtual machines often name only the vendor's line ("AMD EPYC"), so the
    CPU family/model and the vector instruction set torch's kernels run (AVX2, AVX512) tell hosts apart."""
    import torch

    fields = cpuinfo_fields()
    return {"os": platform.platform(), "cpu": fields.get("model name", platform.processor() or platform.machine()),
            "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "numpy_blas": numpy_blas(), "blas_env": {name: os.environ[name] for name in BLAS_ENV if name in os.environ},
            "versions": versions()}


def versions() -> dict[str, str]:
    """The versions a figure depends on (docs tables print them beside it)."""
    from importlib.metadata import version

    return {"python": platform.python_version(),
            **{name: version(package) for name, package in (("torch", "torch"), ("coremltools", "coremltools"),
                                                             ("nemo", "nemo-toolkit"), ("numpy", "numpy"))}}


def cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none: macOS)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return {}
    first = cpuinfo.read_text().split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


# Environment variables that pick BLAS code paths: numpy's OpenBLAS kernel family, torch's MKL instruction set.
BLAS_ENV = ("OPENBLAS_CORETYPE", "MKL_ENABLE_INSTRUCTIONS")


def numpy_blas() -> list[str]:
    """numpy's BLAS and the kernel family it chose for this CPU (OpenBLAS honours OPENBLAS_CORETYPE)."""
    from threadpoolctl import threadpool_info

    return [f"{info['internal_api']} {info.get('architecture', '')}".strip() for info in threadpool_info()
            if info["user_api"] == "blas" and "numpy" in info["filepath"]]


@pytest.fixture(scope="session")
def host() -> dict:
    return host_description()


def record(benchmark, *, audio_seconds: float, backend: str, precision: str, model: str, host: dict,
           compute_unit: str | None = None, **extra) -> None:
    """Attach real-time factor (compute s per audio s), RTFx and the run's context to a benchmark."""
    benchmark.extra_info.update({"backend": backend, "compute_unit": compute_unit, "precision": precision,
                                 "model": model, "host": host, "audio_seconds": audio_seconds, **extra})
    stats = benchmark.stats
    if stats is not None and stats.stats.rounds:  # only when timed (pytest --benchmark-only)
        mean = stats.stats.mean
        benchmark.extra_info.update({"rtf": mean / audio_seconds, "rtfx": audio_seconds / mean})


@pytest.fixture
def record_run():
    return record
