"""Export memory: memory-mapped weights, paged out while converting, and the packages unchanged by it (nor by
the exporting process's BLAS threads).

The budget (issue 14): a full-width export must peak at or under 4 GiB resident, so the real v3 exports
at both precisions on a hosted macOS runner (about 7 GB). The figure is the exporting process's own
(`provenance.process_peak_rss_mb`, written by `convert` in a fresh child process).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from exporters.checkpoints import build_checkpoint, load_model
from exporters.components import COMPONENTS
from exporters.contract import contract_for_model
from exporters.export import ExportSettings, export_component
from exporters.memory import process_peak_rss_mb, weights_paged_out
from exporters.metadata import read_metadata

FULL_WIDTH_EXPORT_BUDGET_MIB = 4096
MANIFEST = "Manifest.json"  # coremltools writes fresh random item identifiers into it on every save


CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"


def plain_nemo_restore(path: Path):
    from nemo.collections.asr.models import ASRModel

    return ASRModel.restore_from(str(path), map_location="cpu").eval()


def package_files(package: Path) -> dict[str, object]:
    """Every file in a package but its manifest: the spec (model.mlmodel) parsed, any other file's sha256.

    The spec is compared as a message: protobuf writes its map fields in an order that can differ from one
    process to the next, so the same spec can serialize to different bytes. coremltools' conversion date
    is left out (exports made either side of midnight differ there only).
    """
    from coremltools.proto import Model_pb2

    files = {}
    for file in sorted(package.rglob("*")):
        if not file.is_file() or file.name == MANIFEST:
            continue
        if file.suffix == ".mlmodel":
            spec = Model_pb2.Model.FromString(file.read_bytes())
            spec.description.metadata.userDefined.pop(CONVERSION_DATE, None)
            files[file.relative_to(package).as_posix()] = spec
        else:
            files[file.relative_to(package).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return files


def test_lean_restore_gives_nemo_weights():
    """Coverage: load_model (memory-mapped, assigned) holds exactly the tensors NeMo's own restore_from
    loads, under the same names."""
    path = build_checkpoint("tiny")
    plain, lean = plain_nemo_restore(path).state_dict(), load_model("tiny").state_dict()
    assert list(plain) == list(lean)
    different = [name for name in plain if not torch.equal(plain[name], lean[name])]
    assert not different, different


def test_packages_are_byte_identical_without_the_memory_change(tiny_packages, precision, tmp_path):
    """Coverage: every tiny package exported the memory-lean way (mapped weights paged out during the
    export) equals, file by file, the one converted from NeMo's plain restore_from without paging: weight
    blobs byte for byte, the spec field for field."""
    model = plain_nemo_restore(build_checkpoint("tiny"))
    contract = contract_for_model(model)
    settings = ExportSettings(precision=precision, author=read_metadata(tiny_packages)["provenance"]["author"])
    for name in COMPONENTS:
        package = tmp_path / export_component(model, contract, name, settings, tmp_path).package
        assert package_files(package) == package_files(tiny_packages / package.name), name


def test_packages_do_not_depend_on_the_blas_thread_count(tiny_model, tiny_contract, tmp_path):
    """Coverage: the tiny encoder, whose conversion folds each attention layer's projected positional encodings
    with numpy, exported with numpy's BLAS on one thread and on two is the same package, file by file (the
    suite's workers and a `convert` child run with different thread counts, and share one export cache)."""
    settings = ExportSettings(precision="fp32", author="parakeet-coreml tests")
    packages = []
    for threads in (1, 2):
        directory = tmp_path / f"{threads}-threads"
        directory.mkdir()
        with threadpool_limits(limits=threads, user_api="blas"):
            packages.append(directory / export_component(tiny_model, tiny_contract, "encoder", settings,
                                                         directory).package)
    assert package_files(packages[0]) == package_files(packages[1])


def test_paging_out_keeps_every_value(tmp_path):
    """Coverage: paging out memory-mapped weights, clean or written in place, never changes a value."""
    saved = torch.arange(3 << 20, dtype=torch.float32)
    torch.save({"weight": saved, "written": saved.clone()}, tmp_path / "weights.pt")
    mapped = torch.load(tmp_path / "weights.pt", mmap=True)
    mapped["written"][::1000] = -1.0  # private copy-on-write pages, dirty
    expected_written = saved.clone()
    expected_written[::1000] = -1.0
    with weights_paged_out(mapped.values(), interval_s=0.001):
        assert torch.equal(mapped["weight"], saved)
    assert torch.equal(mapped["weight"], saved)
    assert torch.equal(mapped["written"], expected_written)


def test_peak_memory_is_the_child_process_own():
    """Coverage: a small child started by this process reports its own peak, not this process's (Linux
    keeps ru_maxrss across exec)."""
    ballast = np.ones(300 << 20, dtype=np.uint8)  # 300 MiB resident here
    child = subprocess.run([sys.executable, "-c",
                            "from exporters.memory import process_peak_rss_mb; print(process_peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < process_peak_rss_mb() - 250
    assert ballast.sum() == ballast.size


@pytest.mark.full
def test_full_width_export_fits_memory_budget(full_packages, precision):
    """Coverage: `convert --model full-random` (627 M parameters) peaks at or under 4 GiB resident at each
    precision, loading included, in its own process."""
    provenance = read_metadata(full_packages)["provenance"]
    assert provenance["author"] == "parakeet-coreml tests"  # made by the CLI child (conftest.export_with_cli)
    assert 0 < provenance["process_peak_rss_mb"] <= FULL_WIDTH_EXPORT_BUDGET_MIB


@pytest.mark.full
def test_full_width_multi_window_export_fits_memory_budget(full_windowed_packages):
    """Coverage: `convert --model full-random --windows 2.5,5,10,15` (the encoder a multifunction package of four
    windows) peaks within the same 4 GiB as one window, in its own process: the functions are merged one
    weight at a time (coremltools' save_multifunction held all four windows' weights: 12.5 GiB)."""
    provenance = read_metadata(full_windowed_packages)["provenance"]
    assert provenance["author"] == "parakeet-coreml tests"  # made by the CLI child (conftest.export_with_cli)
    assert 0 < provenance["process_peak_rss_mb"] <= FULL_WIDTH_EXPORT_BUDGET_MIB
