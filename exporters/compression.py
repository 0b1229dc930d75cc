"""Post-training weight compression of exported packages, one named variant per format.

Weights only, through coremltools.optimize.coreml, applied to the layers' weights (linear, conv, LSTM
and embedding weights of the NeMo model); activations, the front end's DFT basis and mel filterbank and
every small constant stay as exported. Quantization is per output channel where the format has it.
A variant raises the deployment target only when its ops need it (block-wise int4 needs iOS18).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import json
from pathlib import Path

import numpy as np

from exporters.errors import UserError

NONE = "none"
MIXED = "mixed"
DEFAULT_COMPRESSED = ("encoder", "mel_encoder")
# Components with compressed-variant rows in the tolerance table.
COMPRESSIBLE = ("encoder", "mel_encoder", "decoder", "joint")
# coremltools compresses constants of at least this many elements (its own default).
WEIGHT_THRESHOLD = 2048
# (op type, input) pairs whose constant is a layer's weight.
WEIGHT_INPUTS = {("linear", "weight"), ("conv", "weight"), ("gather", "x"), ("lstm", "weight_ih"),
                 ("lstm", "weight_hh")}


@dataclass(frozen=True)
class Variant:
    """One compression format: how coremltools is asked for it and what it costs."""

    name: str
    family: str | None  # "quantize", "palettize" or None (not compressed)
    options: dict[str, Any] = field(default_factory=dict)
    bits: int = 16
    minimum_target: str = "iOS17"
    summary: str = ""

    def op_config(self):
        import coremltools.optimize.coreml as cto

        if self.family == "quantize":
            return cto.OpLinearQuantizerConfig(weight_threshold=WEIGHT_THRESHOLD, **self.options)
        if self.family == "palettize":
            return cto.OpPalettizerConfig(weight_threshold=WEIGHT_THRESHOLD, **self.options)
        raise ValueError(f"variant {self.name!r} has no coremltools config")

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "options": self.options, "bits": self.bits,
                "minimum_deployment_target": self.minimum_target}


def _palette(bits: int) -> Variant:
    return Variant(f"palette{bits}", "palettize", {"mode": "kmeans", "nbits": bits, "granularity": "per_tensor"},
                   bits, summary=f"{bits}-bit k-means palette (LUT of {2 ** bits} values) per tensor")


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant(NONE, None, summary="weights as exported (fp32 or fp16)"),
    Variant("int8", "quantize", {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"}, 8,
            summary="int8, symmetric, one scale per output channel"),
    _palette(8),
    _palette(6),
    _palette(4),
    Variant("int4-block32", "quantize", {"mode": "linear_symmetric", "dtype": "int4", "granularity": "per_block",
                                         "block_size": 32}, 4, "iOS18",
            summary="int4, symmetric, one scale per 32 input weights of an output channel (iOS18)"),
    Variant(MIXED, "mixed", bits=0, summary="per weight the smallest of palette4/palette6/palette8/int8 whose "
                                            "decisions agree with NeMo on a calibration set"),
)}
# The formats a mixed plan chooses from, smallest first (all iOS17, so a mixed package stays iOS17).
MIXED_CANDIDATES = ("palette4", "palette6", "palette8", "int8")


@dataclass(frozen=True)
class CompressionSettings:
    """Which variant, on which components; `plan` maps weight names to variants for `mixed`."""

    variant: str = NONE
    components: tuple[str, ...] = DEFAULT_COMPRESSED
    plan: dict[str, str] | None = None

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown compression {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.variant == MIXED and not self.plan:
            raise UserError("--compress mixed needs a plan: pass --mixed-plan FILE "
                            "(written by `parakeet-coreml search-mixed`)")
        if self.plan:
            unknown = sorted({v for v in self.plan.values() if v not in (*MIXED_CANDIDATES, NONE)})
            if unknown:
                raise UserError(f"mixed plan names unknown formats {unknown}; allowed: "
                                f"{', '.join((*MIXED_CANDIDATES, NONE))}")

    def applies_to(self, component: str) -> bool:
        return self.variant != NONE and component in self.components

    def minimum_target(self, component: str) -> str:
        return VARIANTS[self.variant].minimum_target if self.applies_to(component) else "iOS17"

    def to_dict(self) -> dict:
        entry = {"variant": VARIANTS[self.variant].to_dict(), "components": list(self.components)}
        if self.plan:
            entry["plan"] = dict(sorted(self.plan.items()))
        return entry


def weight_names(mlmodel) -> list[str]:
    """Names of the layer-weight constants of a program that compression may touch: constants of at
    least WEIGHT_THRESHOLD elements feeding a layer's weight input, and named after a model parameter
    (so the wrapper's own front-end constants, such as the DFT basis, are left alone) or feeding an LSTM."""
    function = mlmodel.get_spec().mlProgram.functions["main"]
    operations = function.block_specializations[function.opset].operations
    sizes = {op.outputs[0].name: _element_count(op.outputs[0].type) for op in operations if op.type == "const"}
    names = set()
    for op in operations:
        for param, argument in op.inputs.items():
            for binding in argument.arguments:
                name = binding.name
                if (op.type, param) in WEIGHT_INPUTS and sizes.get(name, 0) >= WEIGHT_THRESHOLD \
                        and ("weight" in name or op.type == "lstm"):
                    names.add(name)
    return sorted(names)


def _element_count(value_type) -> int:
    dims = value_type.tensorType.dimensions
    return int(np.prod([d.constant.size for d in dims])) if dims else 1


def compress(mlmodel, settings: CompressionSettings):
    """The model with its layer weights compressed as `settings` says (unchanged for `none`)."""
    import coremltools.optimize.coreml as cto

    names = weight_names(mlmodel)
    chosen = _choices(names, settings)
    for family, apply in (("quantize", cto.linear_quantize_weights), ("palettize", cto.palettize_weights)):
        configs = {name: VARIANTS[v].op_config() for name, v in chosen.items() if VARIANTS[v].family == family}
        if configs:
            mlmodel = apply(mlmodel, cto.OptimizationConfig(op_name_configs=configs))
    return mlmodel


def _choices(names: list[str], settings: CompressionSettings) -> dict[str, str]:
    """Variant per weight name (weights left out stay as they are)."""
    if settings.variant != MIXED:
        return {name: settings.variant for name in names}
    return {name: settings.plan[key] for name in names
            if (key := plan_key(name, settings.plan)) is not None and settings.plan[key] != NONE}


def plan_key(const_name: str, plan: dict[str, str]) -> str | None:
    """The plan entry (a NeMo parameter name, dots as underscores) that a package constant stores:
    constants are named by coremltools after the wrapper's parameter path, plus suffixes for the fp16
    cast and the compression."""
    base = const_name
    for suffix in ("_palettized", "_quantized", "_to_fp16"):  # compressed output, then fp16 cast
        base = base.removesuffix(suffix)
    matches = [key for key in plan if base == key or base.endswith("_" + key)]
    return max(matches, key=len) if matches else None


def parameter_key(parameter_name: str) -> str:
    """A NeMo parameter name as it appears in package constant names."""
    return parameter_name.replace(".", "_")


def read_plan(path: Path) -> dict[str, str]:
    """A mixed plan file's {parameter key: variant} (one clear error if unreadable)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read mixed plan {path}: {error}") from None
    if not isinstance(document, dict) or "weights" not in document:
        raise UserError(f"mixed plan {path} has no 'weights' object (weight name -> format), as "
                        "`parakeet-coreml search-mixed` writes")
    plan = document["weights"]
    if not isinstance(plan, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in plan.items()):
        raise UserError(f"cannot read mixed plan {path}: 'weights' must map weight names to formats")
    if not plan:
        raise UserError(f"mixed plan {path} names no weights: its 'weights' object is empty")
    return plan


def check_compressed_components(settings: CompressionSettings, exported: tuple[str, ...]) -> None:
    """Refuse compression settings that compress none of the exported components."""
    if settings.variant != NONE and not set(settings.components) & set(exported):
        raise UserError(f"--compress {settings.variant} compresses nothing: none of its components "
                        f"({', '.join(settings.components)}) is exported ({', '.join(exported)})")


def check_plan(settings: CompressionSettings, parameter_names: list[str], exported: tuple[str, ...]) -> None:
    """A mixed plan names parameters the model has, and compresses one in an exported, compressed component
    (parameters are named from the model: 'encoder.…' belongs to the encoder and mel_encoder)."""
    if not settings.plan:
        return
    keys = {parameter_key(name): name for name in parameter_names}
    unknown = sorted(key for key in settings.plan if key not in keys)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise UserError(f"mixed plan names weights this model does not have: {shown}")
    owners = {"encoder": ("encoder", "mel_encoder"), "decoder": ("decoder", "decode_step"),
              "joint": ("joint", "joint_decision", "joint_decision_single_step", "decode_step")}
    compressed = set(settings.components) & set(exported)
    if not any(set(owners.get(keys[key].split(".")[0], ())) & compressed
               for key, variant in settings.plan.items() if variant != NONE):
        raise UserError(f"mixed plan compresses no weight of the compressed components exported "
                        f"({', '.join(sorted(compressed))})")
