"""fp16 audit: run an fp16 package and its fp32 twin op by op, and find where half precision breaks.

Ops are matched by output name (both programs come from the same trace; fp16 programs only add
casts), so the first op whose fp16 value leaves the fp32 value's tolerance, and every op whose
fp16 value leaves fp16's range (|x| > 65504, inf, nan), can be named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporters.runtime.mil import MilExecutor

FP16_SUFFIX = "_cast_fp16"  # coremltools renames the outputs of ops it moves to fp16


@dataclass(frozen=True)
class OpFinding:
    name: str
    op_type: str
    max_abs: float  # fp16 value's max |x| (overflow) or max |fp16 - fp32| (divergence)

    def describe(self) -> str:
        return f"{self.op_type} {self.name} ({self.max_abs:.4g})"


@dataclass
class Fp16Audit:
    package: str
    first_divergent: OpFinding | None = None
    overflows: list[OpFinding] = field(default_factory=list)

    def describe(self) -> str:
        divergent = self.first_divergent.describe() if self.first_divergent else "none"
        overflows = ", ".join(f.describe() for f in self.overflows[:5]) or "none"
        return f"{self.package}: first divergent op {divergent}; fp16 range exceeded at {overflows}"


def audit_fp16(fp32_package: Path, fp16_package: Path, inputs: dict[str, np.ndarray],
               atol: float, rtol: float) -> Fp16Audit:
    """Compare every shared op output of the two programs on the same inputs."""
    reference = {e.name: e for e in MilExecutor(fp32_package).trace(inputs).entries}
    audit = Fp16Audit(Path(fp16_package).name)
    for entry in MilExecutor(fp16_package).trace(inputs).entries:
        if entry.overflows_fp16:
            audit.overflows.append(OpFinding(entry.name, entry.op_type, entry.max_abs))
        twin = reference.get(entry.name.removesuffix(FP16_SUFFIX))
        if audit.first_divergent or twin is None or twin.value.shape != entry.value.shape:
            continue
        if entry.value.dtype.kind != "f" or entry.op_type in ("const", "cast"):
            continue
        expected = twin.value.astype(np.float64)
        error = np.abs(entry.value.astype(np.float64) - expected)
        if not np.all(error <= atol + rtol * np.abs(expected)):
            audit.first_divergent = OpFinding(entry.name, entry.op_type, float(np.nanmax(error)))
    return audit
