"""What every benchmark records next to its timings."""

from __future__ import annotations

import os

import pytest

from exporters.host import host_description as machine_description


def host_description() -> dict:
    """The host and versions next to every timing, with the BLAS code paths numpy and torch run."""
    return {**machine_description(), "numpy_blas": numpy_blas(),
            "blas_env": {name: os.environ[name] for name in BLAS_ENV if name in os.environ}}


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
