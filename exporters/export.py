"""Trace each component's wrapper, convert it to an mlprogram and publish the set atomically."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from exporters.components import COMPONENTS
from exporters.compression import COMPRESSIBLE, NONE, CompressionSettings, check_compressed_components, compress
from exporters.contract import ComponentContract, Contract, TensorSpec
from exporters.errors import UserError
from exporters.layouts import DEFAULT_LAYOUT, LAYOUTS, Layout, write_vocabulary
from exporters.memory import weights_paged_out
from exporters.runtime import COREML_COMPUTE_UNITS
from exporters.example_inputs import example_inputs
from exporters.metadata import FILENAME, build_metadata, default_author, file_sha256, package_sha256, write_metadata

PRECISIONS = ("fp32", "fp16")
COMPUTE_UNITS = COREML_COMPUTE_UNITS
AUTO_COMPUTE_UNITS = "auto"
# For packages with a tensor dimension the Neural Engine rejects (a flat waveform input).
BEYOND_NEURAL_ENGINE_UNITS = "CPU_AND_GPU"
DEFAULT_COMPUTE_UNITS = "ALL"
TOKENIZER_FILE = "tokenizer.model"
# Multifunction packages are iOS18 packages (the first with several functions).
MULTIFUNCTION_TARGET = "iOS18"


@dataclass(frozen=True)
class ExportSettings:
    precision: str = "fp32"
    components: tuple[str, ...] | None = None  # None: every package of the layout
    compute_units: str = AUTO_COMPUTE_UNITS
    author: str | None = None
    compression: CompressionSettings = CompressionSettings()

    def validate(self, layout: Layout = LAYOUTS[DEFAULT_LAYOUT]) -> None:
        self.compression.validate()
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        offered = exported_components(ExportSettings(), layout)
        unknown = [name for name in self.components or offered if name not in offered]
        if unknown or self.components == ():
            raise UserError(f"unknown component {', '.join(unknown) or '(none given)'} in the {layout.name} layout; "
                            f"choose from {', '.join(offered)}")
        if stray := [name for name in self.compression.components if name not in COMPRESSIBLE]:
            raise UserError(f"cannot compress {', '.join(stray)}; choose from {', '.join(COMPRESSIBLE)}")
        check_compressed_components(self.compression, exported_components(self, layout))
        if self.compute_units not in (AUTO_COMPUTE_UNITS, *COMPUTE_UNITS):
            raise UserError(f"unknown compute units {self.compute_units!r}; "
                            f"choose one of {', '.join((AUTO_COMPUTE_UNITS, *COMPUTE_UNITS))}")

    def recommended_compute_units(self, component: ComponentContract) -> str:
        if self.compute_units != AUTO_COMPUTE_UNITS:
            return self.compute_units
        return DEFAULT_COMPUTE_UNITS if component.fits_neural_engine else BEYOND_NEURAL_ENGINE_UNITS


@dataclass(frozen=True)
class ExportResult:
    component: str
    package: str
    precision: str
    seconds: float
    size_bytes: int
    compute_units: str
    deployment_target: str = "iOS17"
    compression: str | None = None
    function_bytes: dict[str, int] | None = None  # a multifunction package: each window's bytes on its own


def trace(model, contract: Contract, name: str) -> torch.jit.ScriptModule:
    """Trace a component's wrapper on the contract's example inputs (fixed 15 s shapes)."""
    wrapper = COMPONENTS[name].wrap(model, contract).eval()
    example = tuple(torch.from_numpy(value).clone() for value in example_inputs(contract[name]).values())
    with torch.no_grad():
        return torch.jit.trace(wrapper, example, check_trace=False)


def convert(traced: torch.jit.ScriptModule, component: ComponentContract, precision: str,
            keep_fp32: Callable | None = None, target: str = "iOS17"):
    """ct.convert with the contract's names, shapes and dtypes; I/O stays fp32/int32 at any precision."""
    import coremltools as ct

    compute_precision = ct.precision.FLOAT32
    if precision == "fp16":
        compute_precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: not keep_fp32(op)) \
            if keep_fp32 else ct.precision.FLOAT16
    # coremltools folds constant subgraphs (each attention layer's projected positional encodings) with numpy,
    # whose OpenBLAS rounds differently with its thread count on some CPUs (Zen): on one thread an export's bytes
    # do not depend on how many threads the exporting process has.
    with threadpool_limits(limits=1, user_api="blas"):
        mlmodel = ct.convert(
            traced,
            inputs=[coreml_input(s) for s in component.inputs],
            outputs=[ct.TensorType(name=s.name, dtype=s.numpy_dtype) for s in component.outputs],
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=compute_precision,
            skip_model_load=True,
        )
    for spec in (*component.inputs, *component.outputs):
        target = mlmodel.input_description if spec in component.inputs else mlmodel.output_description
        target[spec.name] = f"{spec.description} {list(spec.shape)} {spec.dtype}"
    mlmodel.short_description = f"Parakeet-TDT {component.name} ({precision})"
    return mlmodel


def coreml_input(spec: TensorSpec):
    """A contract input as a Core ML TensorType; an optional one declares its default value."""
    import coremltools as ct

    default = np.full(spec.shape, spec.default, spec.numpy_dtype) if spec.optional else None
    return ct.TensorType(name=spec.name, shape=spec.shape, dtype=spec.numpy_dtype, default_value=default)


def exported_components(settings: ExportSettings, layout: Layout) -> tuple[str, ...]:
    """The components an export with these settings writes: those asked for, else every one of the layout."""
    return settings.components or tuple(name for name in COMPONENTS if layout.has(name))


def export_component(model, contract: Contract, name: str, settings: ExportSettings,
                     directory: Path) -> ExportResult:
    """Trace, convert and save one component into directory: one function per window for a windowed
    component of a multi-window export."""
    started = time.perf_counter()
    component = contract[name]
    path = directory / component.package_name
    function_bytes = None
    if component.windowed and contract.multi_window:
        target = later_target(MULTIFUNCTION_TARGET, settings.compression.minimum_target(name))
        function_bytes = save_windows(model, contract, name, settings, target, path)
    else:
        target = settings.compression.minimum_target(name)
        converted(model, contract, name, settings, target).save(str(path))
    return ExportResult(name, component.package_name, settings.precision, time.perf_counter() - started,
                        directory_size(path), settings.recommended_compute_units(component), target,
                        stored_compression(path, settings.compression.variant)
                        if settings.compression.applies_to(name) else None, function_bytes)


def stored_compression(path: Path, variant: str) -> str | None:
    """The variant, if the saved package holds compressed weights (read from its program, so metadata.json never
    claims compression that a plan or a too-small weight left out), else None."""
    from exporters.export_view import program_facts
    from exporters.runtime.mil.program import load_package

    return variant if program_facts(load_package(path)).compression else None


def converted(model, contract: Contract, name: str, settings: ExportSettings, target: str):
    """One component for the contract's window: traced, converted and compressed as the settings ask."""
    mlmodel = convert(trace(model, contract, name), contract[name], settings.precision, COMPONENTS[name].keep_fp32,
                      target)
    if settings.compression.applies_to(name):
        mlmodel = compress(mlmodel, settings.compression)
    if settings.author:
        mlmodel.author = settings.author
    return mlmodel


def save_windows(model, contract: Contract, name: str, settings: ExportSettings, target: str,
                 path: Path) -> dict[str, int]:
    """A multifunction package with one function per window of the contract, the largest the default; the
    weights the functions share are stored once (exporters/multifunction.py, one weight in memory at a time).
    Returns each window's bytes as a package of its own."""
    from exporters.multifunction import merge_functions

    scratch = Path(tempfile.mkdtemp(prefix=f"{name}-windows-"))  # inside the staging folder
    singles = {}
    for window in contract.window_contracts():
        singles[window.function_name] = scratch / f"{window.function_name}.mlpackage"
        converted(model, window, name, settings, target).save(str(singles[window.function_name]))
        gc.collect()
    merge_functions(singles, contract.function_name, path)
    function_bytes = {function: directory_size(single) for function, single in singles.items()}
    restore_model_metadata(path, name, settings)
    shutil.rmtree(scratch, ignore_errors=True)
    return function_bytes


def restore_model_metadata(path: Path, name: str, settings: ExportSettings) -> None:
    """save_multifunction writes a fresh model description: put back the author and short description."""
    import coremltools as ct

    from exporters.runtime.mil.program import root_model_file

    spec = ct.utils.load_spec(str(path))
    spec.description.metadata.shortDescription = f"Parakeet-TDT {name} ({settings.precision}), one function per window"
    if settings.author:
        spec.description.metadata.author = settings.author
    root_model_file(path).write_bytes(spec.SerializeToString())


def later_target(first: str, second: str) -> str:
    """The later of two deployment target names (iOS17 < iOS18)."""
    import coremltools as ct

    return max(first, second, key=lambda name: getattr(ct.target, name).value)


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_packages(model, contract: Contract, source: str, model_checksum: str, output_dir: Path,
                    settings: ExportSettings,
                    on_progress: Callable[[str, ExportResult | None], None] = lambda name, result: None
                    ) -> list[ExportResult]:
    """Export the selected components, tokenizer and metadata.json; publish only if all succeed."""
    settings.validate(contract.layout)
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    remove_stale_staging(output_dir)
    staging = make_staging_dir(output_dir)
    try:
        with temporary_files_in(staging / ".tmp"), weights_paged_out([*model.parameters(), *model.buffers()]):
            results = []
            for name in settings.components or tuple(contract.components):
                on_progress(name, None)
                results.append(export_component(model, contract, name, settings, staging))
                gc.collect()  # a full-width component's traced graph and MIL program hold gigabytes
                on_progress(name, results[-1])
            if settings.compression.variant != NONE and not any(r.compression for r in results):
                raise UserError(f"--compress {settings.compression.variant} compressed no weight of the exported "
                                "packages; nothing was published")
        (staging / TOKENIZER_FILE).write_bytes(model.tokenizer.tokenizer.serialized_model_proto())
        if contract.layout.vocabulary_file:
            write_vocabulary(model.tokenizer.tokenizer, staging / contract.layout.vocabulary_file)
        write_metadata(staging, build_metadata(
            contract=contract, source=source, model_checksum=model_checksum,
            precision=settings.precision, tokenizer_file=TOKENIZER_FILE, files=file_checksums(staging),
            compression=settings.compression.to_dict(),
            packages={r.component: package_entry(r, contract, staging) for r in results},
            author=settings.author or default_author(),
        ))
        publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def file_checksums(directory: Path) -> dict[str, str]:
    """The sha256 of every plain file an export holds beside its packages (tokenizer, vocabulary)."""
    return {file.name: file_sha256(file) for file in sorted(directory.iterdir())
            if file.is_file() and not file.name.startswith(".") and file.name != FILENAME}


def package_entry(result: ExportResult, contract: Contract, directory: Path) -> dict:
    return {"file": result.package, "sha256": package_sha256(directory / result.package),
            "size_bytes": result.size_bytes, "export_seconds": round(result.seconds, 3),
            "recommended_compute_units": result.compute_units,
            "deployment_target": result.deployment_target, "compression": result.compression,
            "waveform_input": contract[result.component].waveform_input, **functions_entry(result, contract)}


def functions_entry(result: ExportResult, contract: Contract) -> dict:
    """A multifunction package's functions (one per window) and its default one."""
    if result.function_bytes is None:
        return {}
    return {"default_function": contract.function_name,
            "functions": {name: {"size_bytes_alone": size} for name, size in result.function_bytes.items()}}


@contextlib.contextmanager
def temporary_files_in(folder: Path):
    """Point tempfile (and so coremltools' scratch .mlpackage folders) into the staging folder, so a killed
    export leaves nothing in /tmp: its staging folder is removed by the next export."""
    folder.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved
        gc.collect()  # MLModel objects delete their scratch folders when collected
        shutil.rmtree(folder, ignore_errors=True)


def staging_prefix(output_dir: Path) -> str:
    return f".{output_dir.name}.staging-"


def remove_stale_staging(output_dir: Path) -> None:
    """Delete staging folders beside output_dir left by exports whose process no longer runs."""
    parent = output_dir.resolve().parent
    if not parent.is_dir():
        return
    for folder in parent.glob(f"{staging_prefix(output_dir)}*"):
        pid = folder.name[len(staging_prefix(output_dir)):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_dir(output_dir: Path) -> None:
    """Fail before any work if output_dir cannot be created or written, or holds something else than an
    export (convert replaces an export directory as a whole)."""
    output_dir = Path(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / FILENAME).is_file():
        raise UserError(f"{output_dir} is not empty and holds no {FILENAME}: convert replaces its output "
                        "directory as a whole, so choose a new or empty directory")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"cannot write to output directory {output_dir}: it is a file")
    existing = output_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to output directory {output_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output directory {output_dir}: {existing} is not writable")


def make_staging_dir(output_dir: Path) -> Path:
    """A scratch dir beside output_dir (same filesystem, so publishing is a rename)."""
    parent = output_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{staging_prefix(output_dir)}{os.getpid()}-", dir=parent))
    except OSError as error:
        raise UserError(f"cannot write to output directory {output_dir}: {error.strerror}") from error


def publish(staging: Path, output_dir: Path) -> None:
    """Replace output_dir with the staged export as a whole (renames on one filesystem): an export
    directory never mixes packages of two runs. If the swap fails, the previous export is put back."""
    retired = staging.with_name(staging.name + "-retired")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private; the export gets ordinary permissions
    try:
        if output_dir.exists():
            os.replace(output_dir, retired)
        os.replace(staging, output_dir)
    except OSError as error:
        if retired.exists() and not output_dir.exists():
            os.replace(retired, output_dir)
        raise UserError(f"cannot write to output directory {output_dir}: {error.strerror}") from error
    shutil.rmtree(retired, ignore_errors=True)
