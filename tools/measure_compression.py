"""Measure how far compressed packages drift from NeMo, per component and output: the numbers behind
the compressed-variant rows of exporters/tolerances.toml.

    uv run python tools/measure_compression.py [--models tiny,digits,sentences] [--precisions fp16,fp32]
        [--variants int8,palette8,palette6,palette4,int4-block32] [--work /tmp/compression-drift]

For each model, precision and variant it exports encoder, mel_encoder, decoder and joint, all four
compressed, runs every gate of those components on the bundled 16 s clip with the MIL executor, and
prints one JSON line per output (max |package - NeMo|, PSNR), then the worst per variant, component and
output over models and precisions.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from exporters.audio import fit_window, load_audio
from exporters.checkpoints import load_model
from exporters.compression import COMPRESSIBLE, VARIANTS, CompressionSettings
from exporters.contract import contract_for_model
from exporters.export import ExportSettings, export_packages
from exporters.metadata import weights_sha256
from exporters.parity.diff import TOLERANCES, Tolerance, psnr_db
from exporters.parity.gates import GateContext, clip_gates
from exporters.parity.report import DEFAULT_CLIP, default_tokens
from exporters.runtime import load

MEASURED = [name for name in VARIANTS if name not in ("none", "mixed")]


def unbounded_table(variant: str, precision: str) -> dict:
    """The variant's rows with every continuous bar lifted, so each diff is reported, none fails."""
    return {(component, variant, output): tol if tol.exact or tol.decision else Tolerance(atol=1e9, rtol=1e9)
            for (component, row, output), tol in TOLERANCES.items() if row == precision}


def measure(source: str, precisions: list[str], variants: list[str], work: Path):
    model = load_model(source)
    contract = contract_for_model(model)
    checksum = weights_sha256(model)
    audio = fit_window(load_audio(DEFAULT_CLIP, contract.model.sample_rate), contract.window_samples)
    for precision in precisions:
        for variant in variants:
            folder = work / f"{source}-{precision}-{variant}"
            if not (folder / "metadata.json").exists():
                settings = ExportSettings(precision=precision, components=COMPRESSIBLE,
                                          compression=CompressionSettings(variant, COMPRESSIBLE))
                export_packages(model, contract, source, checksum, folder, settings)
            gate = GateContext(model, contract, precision, unbounded_table(variant, precision),
                               dict.fromkeys(COMPRESSIBLE, variant))
            opened = {name: load(folder / contract[name].package_name, "mil") for name in COMPRESSIBLE}
            for diff in clip_gates(gate, opened.__getitem__, DEFAULT_CLIP.name, *audio, default_tokens(contract),
                                   list(COMPRESSIBLE)):
                if diff.tolerance.exact or diff.tolerance.decision:
                    continue
                psnr = psnr_db(diff.expected.astype(np.float64), diff.actual.astype(np.float64))
                yield {"model": source, "precision": precision, "variant": variant, "component": diff.component,
                       "output": diff.output, "max_abs": float(f"{diff.max_abs:.4g}"), "psnr": round(psnr, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,digits,sentences")
    parser.add_argument("--precisions", default="fp16,fp32")
    parser.add_argument("--variants", default=",".join(MEASURED))
    parser.add_argument("--work", type=Path, default=Path("/tmp/compression-drift"))
    args = parser.parse_args()
    worst = defaultdict(lambda: [0.0, float("inf")])
    for source in args.models.split(","):
        for row in measure(source, args.precisions.split(","), args.variants.split(","), args.work):
            print(json.dumps(row), flush=True)
            entry = worst[(row["variant"], row["component"], row["output"])]
            entry[0], entry[1] = max(entry[0], row["max_abs"]), min(entry[1], row["psnr"])
    for (variant, component, output), (max_abs, psnr) in sorted(worst.items()):
        print(f"worst {variant:>13} {component:>12}.{output:<16} max abs {max_abs:<8.4g} psnr {psnr:.1f} dB")


if __name__ == "__main__":
    main()
