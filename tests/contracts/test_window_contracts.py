"""A multi-window export: one function per window in every window-sized package, each declaring exactly its
window's contract; the weights stored once; metadata.json listing the windows."""

from __future__ import annotations

import json
from collections import Counter

import coremltools as ct
import pytest

from exporters.components import COMPONENTS
from exporters.contract import contract_from_metadata
from exporters.metadata import read_metadata
from exporters.runtime import package_io
from exporters.runtime.mil.program import load_package, tensor_type

# Independent of the code under test: 2.5 / 5 / 10 / 15 s at 16 kHz, NeMo's centred STFT (S / 160 + 1 mel
# frames) and three stride-2 convolutions (k 3, padding 1: ⌈M / 8⌉ encoder frames).
PLAN_WINDOWS = {"window_2500ms": (40000, 251, 32), "window_5000ms": (80000, 501, 63),
                "window_10000ms": (160000, 1001, 126), "window_15000ms": (240000, 1501, 188)}
IOS17_SPEC_VERSION, IOS18_SPEC_VERSION = 8, 9
WINDOWED = [name for name in COMPONENTS if name in ("preprocessor", "encoder", "joint", "mel_encoder", "joint_decision")]


@pytest.fixture(scope="session")
def tiny_windowed(load_subject, precision):
    return load_subject("tiny").windowed(precision)


@pytest.fixture(scope="session")
def tiny_windows(load_subject):
    return load_subject("tiny").window_contract()


def test_windows_follow_nemo_frame_rules(tiny_windows):
    """Coverage: each window's samples, mel frames and encoder frames, and its function name."""
    found = {c.function_name: (c.window_samples, c.mel_frames, c.encoder_frames) for c in tiny_windows.window_contracts()}
    assert found == PLAN_WINDOWS
    assert tiny_windows.function_name == "window_15000ms"


def test_windowed_components_are_the_window_sized_ones(tiny_windows):
    """Coverage: exactly the packages with a time axis are windowed; the decoder side is not."""
    assert [name for name, c in tiny_windows.components.items() if c.windowed] == WINDOWED


@pytest.mark.parametrize("name", WINDOWED)
def test_every_function_declares_its_window_contract(tiny_windowed, tiny_windows, name):
    """Coverage: names, order, shapes, dtypes and defaults of every function of every windowed package; the
    default function is the largest window; the package declares iOS18 (multifunction) and keeps its author."""
    path = tiny_windowed / tiny_windows[name].package_name
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == IOS18_SPEC_VERSION
    assert [f.name for f in spec.description.functions] == list(PLAN_WINDOWS)
    assert spec.description.defaultFunctionName == "window_15000ms"
    assert spec.description.metadata.author == "parakeet-coreml tests"  # kept through save_multifunction
    for window in tiny_windows.window_contracts():
        component = window[name]
        inputs, outputs = package_io(path, window.function_name)
        assert [d.interface for d in inputs] == [s.interface for s in component.inputs]
        assert [d.interface for d in outputs] == [s.interface for s in component.outputs]


@pytest.mark.parametrize("name", [name for name in COMPONENTS if name not in WINDOWED])
def test_window_independent_packages_stay_single_function_ios17(tiny_windowed, tiny_windows, name):
    """Coverage: the decoder-side packages of a multi-window export are the plain iOS17 ones."""
    spec = ct.utils.load_spec(str(tiny_windowed / tiny_windows[name].package_name))
    assert spec.specificationVersion == IOS17_SPEC_VERSION
    assert not spec.description.functions


@pytest.mark.parametrize("name", ["encoder", "mel_encoder", "preprocessor"])
def test_functions_share_one_copy_of_the_weights(tiny_windowed, tiny_windows, name):
    """Coverage: every stored tensor the windows have in common (the model's weights, the DFT basis) is one
    blob that every function reads, and the package is smaller than its windows saved apart."""
    assert_common_constants_stored_once(tiny_windowed / tiny_windows[name].package_name, list(PLAN_WINDOWS))
    entry = read_metadata(tiny_windowed)["packages"][name]
    assert entry["size_bytes"] < sum(function["size_bytes_alone"] for function in entry["functions"].values())


def assert_common_constants_stored_once(path, functions: list[str]) -> None:
    """Every constant the functions hold under the same name and shape (window-independent ones: window-sized
    ones, such as projected positional encodings, change shape) is one blob all of them read."""
    stored = {}  # function -> {const name: (blob offset, shape)}
    for function in functions:
        block = load_package(path, function).main_block
        stored[function] = {op.outputs[0].name: (op.attributes["val"].blobFileValue.offset,
                                                 tensor_type(op.outputs[0].type)[1])
                            for op in block.operations
                            if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"}
    shared = [name for name, (_, shape) in stored[functions[-1]].items()
              if all(consts.get(name, (None, None))[1] == shape for consts in stored.values())]
    assert shared, "no weight common to the windows"
    for const in shared:
        assert len({consts[const][0] for consts in stored.values()}) == 1, f"{const} is stored more than once"


def test_compressed_windows_share_the_compressed_weights(load_subject, tmp_path):
    """Coverage: an int8-compressed encoder exported with 2.5 and 15 s windows: each function declares its
    window's contract and reads the same compressed blobs (weights stored once, compressed)."""
    from exporters.compression import CompressionSettings
    from exporters.export import ExportSettings, export_packages

    tiny = load_subject("tiny")
    contract = tiny.window_contract((2.5, 15.0))
    settings = ExportSettings(components=("encoder",), compression=CompressionSettings("int8", ("encoder",)))
    export_packages(tiny.model, contract, "tiny", tiny.weights_sha, tmp_path / "export", settings)
    path = tmp_path / "export" / contract["encoder"].package_name
    functions = [window.function_name for window in contract.window_contracts()]
    assert_common_constants_stored_once(path, functions)
    assert any(op.type.startswith("constexpr_") for op in load_package(path, functions[0]).main_block.operations)
    for window in contract.window_contracts():
        inputs, _ = package_io(path, window.function_name)
        assert [d.shape for d in inputs] == [s.shape for s in window["encoder"].inputs]


def test_metadata_lists_the_windows(tiny_windowed, tiny_windows):
    """Coverage: metadata.json records every window with its function, the default contract is the largest
    window's, each windowed package names its functions and default, and the recorded contract rebuilds."""
    metadata = json.loads((tiny_windowed / "metadata.json").read_text())
    recorded = metadata["contract"]
    assert {w["function"]: (w["window_samples"], w["mel_frames"], w["encoder_frames"])
            for w in recorded["windows"]} == PLAN_WINDOWS
    assert recorded["window_samples"] == PLAN_WINDOWS["window_15000ms"][0]
    assert contract_from_metadata(metadata) == tiny_windows
    for name, entry in metadata["packages"].items():
        if name in WINDOWED:
            assert entry["deployment_target"] == "iOS18"
            assert entry["default_function"] == "window_15000ms"
            assert list(entry["functions"]) == list(PLAN_WINDOWS)
        else:
            assert entry["deployment_target"] == "iOS17" and "functions" not in entry


def test_lint_checks_every_function(tiny_windowed):
    """Coverage: lint reads each function of a multifunction package: no errors, every window within the
    Neural Engine's limits, the iOS18 packages flagged against an iOS17 target only."""
    from exporters.lint import ERROR, RULE_DIMENSION, RULE_SPEC_VERSION, lint_package

    for path in sorted(tiny_windowed.glob("*.mlpackage")):
        findings = lint_package(path, "iOS18")
        assert not [f for f in findings if f.severity == ERROR or f.rule == RULE_DIMENSION], path.name
        multifunction = bool(ct.utils.load_spec(str(path)).description.functions)
        per_function = Counter(f.function for f in findings if f.function)
        assert set(per_function) <= set(PLAN_WINDOWS)
        assert bool(per_function) == (multifunction and bool(findings)), path.name
        assert bool([f for f in lint_package(path, "iOS17") if f.rule == RULE_SPEC_VERSION]) == multifunction
