"""Session fixtures shared by the whole suite: the tiny checkpoint, its contract, exported packages,
and the backend the tests run packages on."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The workers split the cores. Threads beyond a worker's share spin against the other worker: measured on
    # 2 cores, two workers of 2 threads each took twice as long as one process. torch is already loaded here
    # (pyproject's filterwarnings names a torch warning class); the environment reaches the CLI children.
    import torch  # noqa: E402

    THREADS_PER_WORKER = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(THREADS_PER_WORKER)
    torch.set_num_threads(THREADS_PER_WORKER)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from exporters.export import PRECISIONS  # noqa: E402

pytest_plugins = ("tests.memory_report",)  # peak resident memory per test file and process, and its budget

MARKERS = {
    "full": "exports or runs the full-width (627 M parameter) random model: minutes and ~4 GB per precision",
    "macos": "needs Core ML's runtime, which exists only on macOS",
    "judged_exports": "the default exports (JUDGED_BY_DEFAULT) a test of the export under test judges without "
                      "--packages",
}
EXPORTERS = Path(__file__).parent / "exporters"
# The code that shapes an export directory's bytes (packages and metadata.json); runtime, decoding,
# parity and CLI code do not, so changing them reuses the cached exports.
EXPORTER_SOURCES = sorted([*EXPORTERS.joinpath("components").rglob("*.py"),
                           *(EXPORTERS / name for name in ("checkpoints.py", "compression.py", "contract.py",
                                                           "example_inputs.py",
                                                           "export.py", "inspect_model.py", "layouts.py",
                                                           "memory.py", "metadata.py", "multifunction.py",
                                                           "tensors.py"))])
TEST_AUTHOR = "parakeet-coreml tests"
FOREIGN_BUILDER = Path(__file__).parent / "tests" / "foreign_exports.py"
FOREIGN_READY = ".built"  # a foreign export has no metadata.json: this file marks it complete
# Models whose session exports run `convert` in a child process, so their export time and memory are the
# export's own (the export-cost benchmarks reuse them in plain runs instead of exporting again).
EXPORTED_BY_CLI = {"tiny", "full-random"}
# Models whose compressed exports run `convert` in a child: the full-width one peaks at ~4.6 GB (coremltools holds
# the fp16 and the compressed weights at once), which then stays out of the test process and is the export's own.
COMPRESSED_BY_CLI = {"full-random"}
# The windows of the suite's multi-window exports (the README's example set).
TEST_WINDOWS = (2.5, 5.0, 10.0, 15.0)
# Compressed exports hold what greedy decoding in "joint" mode needs (the compressed encoder included).
COMPRESSED_EXPORT = ("preprocessor", "encoder", "mel_encoder", "decoder", "joint")

# Fuzzing depth: "ci" keeps the whole suite quick; HYPOTHESIS_PROFILE=nightly digs deeper.
COMMON_HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
settings.register_profile("ci", max_examples=20, **COMMON_HYPOTHESIS)
settings.register_profile("nightly", max_examples=400, **COMMON_HYPOTHESIS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--backend", default="auto", choices=("auto", "mil", "coreml"),
                     help="runtime for exported packages: coreml (macOS), mil (any OS); auto picks per OS")
    parser.addoption("--packages", type=Path, default=None,
                     help="judge this directory of Core ML packages (any converter's) instead of exporting: the "
                          "tests of the export under test run on it, every other test is skipped")
    parser.addoption("--model", default=None, help="with --packages: the NeMo checkpoint the packages came from "
                                                   "(a .nemo path, a Hugging Face id, or a built-in checkpoint)")
    parser.addoption("--map", action="append", default=[], metavar="COMPONENT=PATH",
                     help="with --packages: judge this package as that component (repeatable)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Plain `pytest` runs each benchmark once, untimed; `pytest --benchmark-only` measures them.
    if not config.getoption("benchmark_only", False) and not config.getoption("benchmark_enable", False):
        config.option.benchmark_disable = True
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): two workers on two or more cores. Each worker loads its own models and
    makes its own NeMo references, so more workers repeat more of that (and hold more memory). Benchmarks
    measure in one process (pytest-benchmark times nothing under xdist)."""
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False):
        return 0
    if "PYTEST_XDIST_AUTO_NUM_WORKERS" in os.environ:
        return None  # xdist's own hook reads it
    cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 0


def pytest_collection_modifyitems(config, items):
    """Tests of the full-width model first, in collection order otherwise. xdist's worksteal mode hands each
    worker a contiguous half and steals from the end of a worker's queue, so the full-width model (~25 s to
    load, gigabytes resident) is loaded by one worker, not both. With --packages, only the tests of the export
    under test run."""
    items.sort(key=lambda item: item.get_closest_marker("full") is None)
    if config.getoption("--packages") is not None:
        reason = (f"judging {config.getoption('--packages')}: this test checks parakeet-coreml's own exporter; the "
                  "tests of the export under test (test_export_under_test.py) judge the directory")
        for item in items:
            if "judged_export" not in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skip(reason=reason))


def selected_backend(config) -> str:
    from exporters.runtime import default_backend

    choice = config.getoption("--backend")
    return default_backend() if choice == "auto" else choice


def pytest_report_header(config):
    return f"parakeet-coreml package backend: {selected_backend(config)}"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", [selected_backend(metafunc.config)], scope="session")
    if "precision" in metafunc.fixturenames:
        metafunc.parametrize("precision", PRECISIONS, scope="session")
    if "judged_export" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--packages")
        only = metafunc.definition.get_closest_marker("judged_exports")
        names = [f"packages:{chosen}"] if chosen is not None else \
            [name for name in JUDGED_BY_DEFAULT if only is None or name in only.args]
        metafunc.parametrize("judged_export", names, indirect=True, scope="session")


# Without --packages, the tests of the export under test judge these: foreign exports (made by an independent
# converter, tests/foreign_exports.py) of the tiny and the trained digits model, and this project's tiny export.
JUDGED_BY_DEFAULT = ("foreign:tiny", "foreign:digits", "ours:tiny")


@pytest.fixture(scope="session")
def judged_export(request):
    """The ExportView under test: the --packages directory, or one of JUDGED_BY_DEFAULT."""
    from exporters.errors import UserError
    from exporters.export_view import open_export, parse_mapping

    kind, _, name = request.param.partition(":")
    if kind == "packages":
        directory = Path(name)
        try:
            return open_export(directory, request.config.getoption("--model"),
                               parse_mapping(request.config.getoption("--map"), directory))
        except UserError as error:
            pytest.fail(f"cannot judge {directory}: {error}", pytrace=False)
    loaded = subject(name)
    if kind == "foreign":
        return open_export(foreign_export(loaded), model=loaded.intact_model())
    return open_export(loaded.packages("fp32"), model=loaded.intact_model())


def foreign_export(model_under_test: Subject, flaw: str = "faithful") -> Path:
    """The foreign export of a model (tests/foreign_exports.py) with one seeded flaw, built once per model, flaw,
    builder code and tool versions."""
    from exporters.checkpoints import cache_dir
    from tests.foreign_exports import build_foreign_export

    builder = hashlib.sha256(FOREIGN_BUILDER.read_bytes()).hexdigest()[:12]
    key = export_cache_key(model_under_test.weights_sha, "foreign", f"{flaw}:{builder}", False)
    return export_once(cache_dir() / "foreign", f"{model_under_test.source}-{flaw}-", key,
                       lambda target: build_foreign_export(model_under_test.intact_model(), target, flaw),
                       ready_file=FOREIGN_READY)


@pytest.fixture(scope="session")
def foreign_export_of():
    """foreign_export(subject, flaw): a cached foreign export with one seeded flaw (or "faithful")."""
    return foreign_export


@dataclass
class Subject:
    """A model under test: the loaded NeMo model, its contract, and its exports (made on first use)."""

    source: str
    model: object
    contract: object
    weights_sha: str
    exports: dict = field(default_factory=dict)

    def intact_model(self):
        """The model, checked against the weights it was loaded with: exports are cached under those weights'
        checksum, so a model some test changed and did not restore exactly must never be exported under it."""
        from exporters.metadata import weights_sha256

        if weights_sha256(self.model) != self.weights_sha:
            raise AssertionError(f"the shared {self.source!r} model no longer has the weights it was loaded with: a "
                                 "test changed them and did not restore them bit for bit")
        return self.model

    @property
    def trained(self) -> bool:
        """A trained checkpoint decides with clear margins; random weights give near-ties."""
        from exporters.checkpoints import TRAINED

        return self.source in TRAINED

    def packages(self, precision: str, layout: str = "default") -> Path:
        if (precision, layout) not in self.exports:
            self.exports[(precision, layout)] = cached_export(self, precision, layout)
        return self.exports[(precision, layout)]

    def windowed(self, precision: str, windows: tuple[float, ...] = TEST_WINDOWS,
                 components: tuple[str, ...] | None = None) -> Path:
        """A multi-window export (window-sized packages multifunction) of `components` (None: all)."""
        key = (precision, windows, components)
        if key not in self.exports:
            self.exports[key] = cached_windowed_export(self, precision, windows, components)
        return self.exports[key]

    def window_contract(self, windows: tuple[float, ...] = TEST_WINDOWS):
        """The contract of a multi-window export (its largest window; window_contracts() gives each)."""
        from exporters.contract import contract_for_model

        return contract_for_model(self.model, windows)

    def compressed(self, precision: str, variant: str, components: tuple[str, ...] = COMPRESSED_EXPORT) -> Path:
        """An export whose encoder and mel_encoder are compressed by `variant` (`mixed`: by the plan the
        mixed search makes for this model), holding `components` only."""
        key = (precision, variant, components)
        if key not in self.exports:
            self.exports[key] = cached_compressed_export(self, precision, variant, components)
        return self.exports[key]


LOADED: dict[str, Subject] = {}  # subject()'s models by source: its memo, and what the session's end checks


def subject(source: str) -> Subject:
    """Load a model once per session: 'tiny', 'full-random', 'digits' or any load_model source."""
    from exporters.checkpoints import build_checkpoint, check_source, load_model
    from exporters.contract import contract_for_model
    from exporters.metadata import weights_sha256

    if source not in LOADED:
        if check_source(source) == "preset":  # built on first use: one worker builds, the other waits
            with cache_lock(f"checkpoint-{source}"):
                build_checkpoint(source)
        model = load_model(source)
        LOADED[source] = Subject(source, model, contract_for_model(model), weights_sha256(model))
    return LOADED[source]


@pytest.fixture(scope="session", autouse=True)
def shared_models_stay_unchanged():
    """After the session, every model this process loaded still has the weights it was loaded with: tests share
    one instance per model, so a test that changes a weight must restore it bit for bit (x + d - d is not x)."""
    yield
    for loaded in LOADED.values():
        loaded.intact_model()


@contextlib.contextmanager
def cache_lock(name: str):
    """Held while this process builds a shared cache entry: pytest-xdist workers share the cache, and a worker
    that finds another building the same entry waits, then reuses it."""
    from filelock import FileLock

    from exporters.checkpoints import cache_dir

    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{name}.lock"):
        yield


def built_once(ready: Path, key: str, build) -> None:
    """Run build() unless `ready` exists, once across processes (under the lock, so a half-written `ready`
    is never read)."""
    with cache_lock(key):
        if not ready.exists():
            build()


def source_fingerprint() -> str:
    """Hash of the exporter code, so a code change never reuses stale packages."""
    digest = hashlib.sha256()
    for path in EXPORTER_SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def export_cache_key(weights_sha: str, precision: str, layout: str, by_cli: bool) -> str:
    """Same key, same bytes: weights, precision, layout, export code, tool versions, and whether a `convert`
    child made it (its metadata then records that child's own time and memory)."""
    import coremltools
    import nemo
    import torch

    parts = [weights_sha, precision, layout, source_fingerprint(), torch.__version__, coremltools.__version__,
             nemo.__version__, "cli" if by_cli else "in-process"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cached_export(model_under_test: Subject, precision: str, layout: str = "default") -> Path:
    """Export every package of a layout once per (model, precision, layout, code, tool versions); reuse
    afterwards. Models in EXPORTED_BY_CLI, and every non-default layout, export through `convert`."""
    from exporters.checkpoints import cache_dir
    from exporters.export import ExportSettings, export_packages

    name = model_under_test.source
    exports = cache_dir() / "exports"
    prefix = f"{name}-{precision}-" if layout == "default" else f"{name}-{layout}-{precision}-"
    by_cli = name in EXPORTED_BY_CLI or layout != "default"

    def export(target: Path) -> None:
        if by_cli:
            export_with_cli(name, precision, target, "--layout", layout)
        else:
            export_packages(model_under_test.intact_model(), model_under_test.contract, name,
                            model_under_test.weights_sha, target,
                            ExportSettings(precision=precision, author=TEST_AUTHOR))
    return export_once(exports, prefix, export_cache_key(model_under_test.weights_sha, precision, layout, by_cli),
                       export)


def export_once(exports: Path, prefix: str, key: str, export, ready_file: str = "metadata.json") -> Path:
    """exports/<prefix><key>, made by export(target) once across processes; older exports of the same prefix
    are removed first (full-width exports take gigabytes each). `ready_file` is written last by export."""
    target = exports / f"{prefix}{key}"

    def build():
        remove_stale_exports(exports, prefix)
        shutil.rmtree(target, ignore_errors=True)
        export(target)
        if ready_file != "metadata.json":
            (target / ready_file).touch()
    built_once(target / ready_file, target.name, build)
    return target


def remove_stale_exports(exports: Path, prefix: str) -> None:
    """Delete older exports of exactly this prefix (prefix + a 16-hex key: "tiny-fp16-" never matches
    "tiny-fp16-int8-…")."""
    for stale in exports.glob(f"{prefix}*"):
        if re.fullmatch(re.escape(prefix) + "[0-9a-f]{16}", stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def cached_windowed_export(model_under_test: Subject, precision: str, windows: tuple[float, ...],
                           components: tuple[str, ...] | None) -> Path:
    """A multi-window export, made once per (model, precision, windows, components, code, tools): by `convert`
    in a child for models in EXPORTED_BY_CLI (the full-width one's memory is then the export's own), else
    in-process."""
    from exporters.checkpoints import cache_dir
    from exporters.export import ExportSettings, export_packages

    name = model_under_test.source
    exports = cache_dir() / "exports"
    label = "" if windows == TEST_WINDOWS else "-".join(f"{seconds:g}" for seconds in windows) + "s-"
    prefix = f"{name}-{precision}-windows-{label}" + ("" if components is None else "some-")
    by_cli = name in EXPORTED_BY_CLI
    key = export_cache_key(model_under_test.weights_sha, precision, f"windows:{windows}:{components}", by_cli)

    def export(target: Path) -> None:
        if by_cli:
            export_with_cli(name, precision, target, "--windows", ",".join(f"{seconds:g}" for seconds in windows),
                            *(("--components", ",".join(components)) if components else ()))
            return
        export_packages(model_under_test.intact_model(), model_under_test.window_contract(windows), name,
                        model_under_test.weights_sha, target,
                        ExportSettings(precision=precision, components=components, author=TEST_AUTHOR))
    return export_once(exports, prefix, key, export)


def cached_compressed_export(model_under_test: Subject, precision: str, variant: str,
                             components: tuple[str, ...]) -> Path:
    """A compressed export, made once per (model, precision, variant, components, code, tools): in-process, or by
    `convert` in a child for models in COMPRESSED_BY_CLI."""
    from exporters.checkpoints import cache_dir
    from exporters.compression import CompressionSettings
    from exporters.export import ExportSettings, export_packages

    name = model_under_test.source
    plan = mixed_plan(model_under_test, precision) if variant == "mixed" else None
    exports = cache_dir() / "exports"
    prefix = f"{name}-{precision}-{variant}-"
    layout = f"compressed:{variant}:{','.join(components)}:{sorted((plan or {}).items())}"
    by_cli = name in COMPRESSED_BY_CLI

    def export(target: Path) -> None:
        if by_cli:
            export_with_cli(name, precision, target, "--components", ",".join(components), "--compress", variant)
            return
        settings = ExportSettings(precision=precision, components=components, author=TEST_AUTHOR,
                                  compression=CompressionSettings(variant, plan=plan))
        export_packages(model_under_test.intact_model(), model_under_test.contract, name,
                        model_under_test.weights_sha, target, settings)
    return export_once(exports, prefix, export_cache_key(model_under_test.weights_sha, precision, layout, by_cli),
                       export)


def mixed_plan(model_under_test: Subject, precision: str) -> dict[str, str]:
    """The mixed search's plan for a trained model (calibrated on its even-indexed held-out clips), made
    once per weights, precision, exporter and search code."""
    import json

    from exporters.checkpoints import cache_dir
    from exporters.mixed import calibration_clips, plan_document, search_mixed_plan

    search_code = hashlib.sha256((EXPORTERS / "mixed.py").read_bytes()).hexdigest()[:12]
    key = export_cache_key(model_under_test.weights_sha, precision, f"mixed-plan:{search_code}", False)
    path = cache_dir() / "plans" / f"{model_under_test.source}-{precision}-{key}.json"

    def build():
        path.parent.mkdir(parents=True, exist_ok=True)
        clips, names = calibration_clips(model_under_test.source, None, model_under_test.contract.model.sample_rate)
        plan, sizes = search_mixed_plan(model_under_test.intact_model(), model_under_test.contract, precision, clips,
                                        names)
        path.write_text(plan_document(plan, sizes, model_under_test.source, model_under_test.weights_sha, precision))
    built_once(path, path.stem, build)
    return json.loads(path.read_text())["weights"]


def export_with_cli(source: str, precision: str, target: Path, *options: str) -> None:
    """`parakeet-coreml convert` in a fresh process: the user's command, and its metadata's peak memory
    (provenance.process_peak_rss_mb) is the export's own, not the test process's."""
    command = [sys.executable, "-m", "exporters.cli", "convert", "--model", source, "--precision", precision,
               "--output-dir", str(target), "--author", TEST_AUTHOR, *options]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="session")
def convert_in_child():
    """export_with_cli(source, precision, target): `convert` in a fresh process, for tests of any folder."""
    return export_with_cli


@pytest.fixture(scope="session")
def full_windowed_packages() -> Path:
    """The full-width 2.5 / 5 / 10 / 15 s export (fp32) of the packages a decode-step transcription needs."""
    return subject("full-random").windowed("fp32", TEST_WINDOWS, ("preprocessor", "encoder", "decoder", "decode_step"))


@pytest.fixture(scope="session")
def tiny_model():
    return subject("tiny").model


@pytest.fixture(scope="session")
def tiny_contract():
    return subject("tiny").contract


@pytest.fixture(scope="session")
def tiny_packages(precision) -> Path:
    """Directory holding every tiny package and metadata.json at the parametrized precision."""
    return subject("tiny").packages(precision)


@pytest.fixture(scope="session")
def tiny_packages_fp32() -> Path:
    return subject("tiny").packages("fp32")


@pytest.fixture(scope="session")
def tiny_packages_fp16() -> Path:
    return subject("tiny").packages("fp16")


@pytest.fixture(scope="session")
def full_model():
    return subject("full-random").model


@pytest.fixture(scope="session")
def full_contract():
    return subject("full-random").contract


@pytest.fixture(scope="session")
def full_packages(precision) -> Path:
    """Every full-random package at the parametrized precision (minutes on first use, then cached)."""
    return subject("full-random").packages(precision)


def stored_fp32_blobs(package_dir: Path):
    """(const name, blob metadata offset, element count) of every fp32 tensor stored in weight.bin."""
    import numpy as np
    from coremltools.proto import MIL_pb2

    from exporters.runtime.mil.program import load_package

    for op in load_package(package_dir).main_block.operations:
        value = op.attributes["val"] if op.type == "const" else None
        if value is not None and value.WhichOneof("value") == "blobFileValue":
            tensor = op.outputs[0].type.tensorType
            if tensor.dataType == MIL_pb2.FLOAT32:
                yield (op.outputs[0].name, value.blobFileValue.offset,
                       int(np.prod([d.constant.size for d in tensor.dimensions])))


def perturb_largest_weight(package_dir: Path, factor: float = 1.05) -> str:
    """Scale the largest stored fp32 weight tensor by `factor`, in place in weight.bin; returns its name."""
    import struct

    import numpy as np

    name, metadata_offset, _ = max(stored_fp32_blobs(package_dir), key=lambda blob: blob[2])
    weights = next(Path(package_dir).rglob("weight.bin"))
    with open(weights, "r+b") as handle:
        handle.seek(metadata_offset)
        # MIL blob metadata: uint32 sentinel, uint32 dtype, uint64 size in bytes, uint64 data offset.
        _, _, size, data_offset = struct.unpack("<IIQQ", handle.read(24))
        handle.seek(data_offset)
        values = np.frombuffer(handle.read(size), dtype=np.float32) * np.float32(factor)
        handle.seek(data_offset)
        handle.write(values.tobytes())
    return name


def scale_compressed_weight(package_dir: Path, factor: float = 4.0) -> str:
    """Scale the quantization scale (or palette) of the largest compressed weight of a package by
    `factor`, where it is stored (weight.bin or the spec); returns the op's output name. A silently
    damaged compressed export: what the variant's tolerance row must catch."""
    import struct

    import numpy as np
    from coremltools.proto import MIL_pb2, Model_pb2

    from exporters.runtime.mil.program import root_model_file

    model_file = root_model_file(Path(package_dir))
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    function = spec.mlProgram.functions["main"]
    operations = function.block_specializations[function.opset].operations
    consts = {op.outputs[0].name: op.attributes["val"] for op in operations if op.type == "const"}

    def stored(op, name):
        """The Value proto holding input `name` of a constexpr op (an attribute in iOS16, a const in iOS18)."""
        if name in op.attributes:
            return op.attributes[name]
        if name not in op.inputs:
            return None
        binding = op.inputs[name].arguments[0]
        return binding.value if binding.WhichOneof("binding") == "value" else consts[binding.name]

    def size(op) -> int:
        return int(np.prod([d.constant.size for d in op.outputs[0].type.tensorType.dimensions]))

    target = max((op for op in operations if op.type.startswith("constexpr_")), key=size)
    value = stored(target, "scale") or stored(target, "lut")
    dtype = np.float16 if value.type.tensorType.dataType == MIL_pb2.FLOAT16 else np.float32
    if value.WhichOneof("value") == "blobFileValue":
        weights = next(Path(package_dir).rglob("weight.bin"))
        with open(weights, "r+b") as handle:
            handle.seek(value.blobFileValue.offset)
            _, _, byte_count, data_offset = struct.unpack("<IIQQ", handle.read(24))
            handle.seek(data_offset)
            scaled = (np.frombuffer(handle.read(byte_count), dtype) * factor).astype(dtype)
            handle.seek(data_offset)
            handle.write(scaled.tobytes())
    else:
        tensor = value.immediateValue.tensor
        if tensor.WhichOneof("value") == "bytes":
            tensor.bytes.values = (np.frombuffer(tensor.bytes.values, dtype) * factor).astype(dtype).tobytes()
        else:
            values = [v * factor for v in tensor.floats.values]
            del tensor.floats.values[:]
            tensor.floats.values.extend(values)
        model_file.write_bytes(spec.SerializeToString())
    return target.outputs[0].name


def reseal(export_dir: Path) -> None:
    """Re-record every package checksum in metadata.json: an export that is consistent but drifted, as a
    conversion regression would produce (what the parity gates, not the checksums, must catch)."""
    import json

    from exporters.metadata import FILENAME, package_sha256

    path = Path(export_dir) / FILENAME
    metadata = json.loads(path.read_text())
    for entry in metadata["packages"].values():
        entry["sha256"] = package_sha256(Path(export_dir) / entry["file"])
    path.write_text(json.dumps(metadata, indent=2) + "\n")


@pytest.fixture
def perturb_package():
    """perturb_largest_weight(package_dir): one weight tensor of a package copy scaled by 5%."""
    return perturb_largest_weight


@pytest.fixture
def damage_compressed_weight():
    """scale_compressed_weight(package_dir, factor=4.0): a compressed weight's scale or palette scaled."""
    return scale_compressed_weight


@pytest.fixture
def reseal_export():
    """reseal(export_dir): metadata.json's checksums re-recorded after a deliberate change."""
    return reseal


def load_or_skip(path, backend: str, compute_units: str = "CPU_ONLY", function: str | None = None):
    """runtime.load, or skip the test with the reason this backend cannot run here (Core ML off macOS)."""
    from exporters.runtime import BackendUnavailable, load

    try:
        return load(path, backend, compute_units, function)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(scope="session")
def open_or_skip():
    """load_or_skip(path, backend, compute_units="CPU_ONLY", function=None): a package (one function of a
    multifunction package) on a backend, or a skip with the reason."""
    return load_or_skip


@pytest.fixture(scope="session")
def sentences_lm(load_subject, tmp_path_factory):
    """A token trigram of the sentences model from its training corpus (tests/custom_vocabulary.py), as ARPA."""
    from tests.custom_vocabulary import write_sentences_lm

    return write_sentences_lm(tmp_path_factory.mktemp("lm") / "sentences.arpa", load_subject("sentences").model.tokenizer)


@pytest.fixture(scope="session")
def load_subject():
    """subject(source): a model under test by load_model source, loaded once per session."""
    return subject


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI failure as the README promises it: exit 2 and exactly one line, starting `error:` and holding
    every fragment."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


@pytest.fixture
def one_line_error():
    """assert_one_line_error, for tests of any command."""
    return assert_one_line_error
