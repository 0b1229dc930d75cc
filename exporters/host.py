"""The machine and versions a measurement was made on: benchmarks and `evaluate` reports record it, the docs'
tables print it beside their figures. Virtual machines often name only the vendor's line ("AMD EPYC"), so the
CPU family/model and the vector instruction set torch's kernels run (AVX2, AVX512) tell hosts apart."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path


def host_description() -> dict:
    import torch

    fields = cpuinfo_fields()
    return {"os": platform.platform(), "cpu": fields.get("model name", platform.processor() or platform.machine()),
            "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "versions": versions()}


def versions() -> dict[str, str]:
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
