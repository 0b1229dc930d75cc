"""`parakeet-coreml`: the command-line entry point."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

# coremltools draws progress bars per conversion pass; tqdm reads this only when first imported.
os.environ.setdefault("TQDM_DISABLE", "1")
# Off macOS coremltools warns at import that its Core ML runtime bindings are missing.
logging.getLogger("coremltools").setLevel(logging.ERROR)
# NeMo's telemetry (OneLogger) announces at WARNING that it is disabled, on every model load.
logging.getLogger("nv_one_logger").setLevel(logging.ERROR)
# torch starts a pool of compile workers when NeMo imports its inductor. Nothing here compiles, and the workers,
# in the terminal's process group, printed their own traceback on Ctrl-C.
os.environ.setdefault("TORCH_WARM_POOL", "0")

from exporters.checkpoints import DEFAULT_HF_ID  # noqa: E402
from exporters.compression import DEFAULT_COMPRESSED, VARIANTS  # noqa: E402
from exporters.contract import DEFAULT_TOP_K, WINDOW_SECONDS  # noqa: E402
from exporters.decoding.chunking import Chunking  # noqa: E402
from exporters.decoding.transcriber import JOINT_MODES  # noqa: E402
from exporters.errors import UserError  # noqa: E402
from exporters.lint import DEFAULT_TARGET, ERROR, INFO, WARNING  # noqa: E402
from exporters.runtime import BACKENDS  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export Parakeet-TDT (NeMo) to Core ML packages and check them against NeMo.")
console = Console(stderr=True)
ALL_COMPONENTS = "all"


@app.callback()
def root() -> None:
    """Export Parakeet-TDT (NeMo) to Core ML packages and check them against NeMo."""


def command(*names: str, **options):
    """app.command, ending on Ctrl-C or SIGTERM (after unwinding: staging and temporary folders removed) with
    one line that says how far the command got, and exit 130."""
    def register(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            from exporters.interrupts import start_command, was_interrupted

            start_command()
            try:
                return function(*args, **kwargs)
            except Exception as error:
                if not was_interrupted() or isinstance(error, typer.Exit):
                    raise
                said_interrupted()  # a library's cleanup turned the interrupt into another error
            except KeyboardInterrupt:
                said_interrupted()
        return app.command(*names, **options)(run)
    return register


def said_interrupted() -> None:
    from exporters.interrupts import interrupted_line

    console.print(f"[bold red]error:[/] {interrupted_line()}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=130) from None


def quiet_libraries() -> None:
    """NeMo and coremltools log and warn on every import and conversion; keep errors only."""
    warnings.filterwarnings("ignore")
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    for name in ("coremltools", "nemo_logger", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fail(message: str) -> None:
    from rich.markup import escape

    from exporters.interrupts import was_interrupted

    if was_interrupted():  # a library (omegaconf, mid-restore) turned the interrupt into an error of its own
        said_interrupted()
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # paths may hold [ ]
    raise typer.Exit(code=2)


def one_of(what: str, choices: tuple[str, ...]):
    """A typer callback accepting None or one of `choices`; anything else is one error line."""
    def check(value):
        if value is not None and value not in choices:
            fail(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
        return value
    return check


def parse_components(value: str) -> tuple[str, ...] | None:
    """None for 'all' (every package of the layout)."""
    if value == ALL_COMPONENTS:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_windows(value: str) -> tuple[float, ...]:
    """Window lengths in seconds from "2.5,5,10,15"; anything else is one error line."""
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise UserError(f"windows {value!r}: give comma-separated lengths in seconds, e.g. 2.5,5,10,15") from None


def foreign_model_option():
    return typer.Option(None, help="The NeMo checkpoint the packages were converted from: needed for a directory "
                                   "without this tool's metadata.json (another converter's export).")


def map_option():
    return typer.Option([], "--map", help="component=PATH: take this package as that component (repeatable; "
                                          "overrides discovery by file name).")


def boost_phrases_option():
    return typer.Option(None, help="Custom vocabulary: a file of key phrases, one per line, boosted as NeMo's phrase "
                                   "boosting tree does.")


def boost_alpha_option():
    return typer.Option(1.0, help="Weight of the boosting tree's scores (NeMo's boosting_tree_alpha).")


def boost_score_option():
    return typer.Option(1.0, help="Score of each phrase token matched (NeMo's context_score).")


def lm_option():
    return typer.Option(None, help="Custom vocabulary: a token n-gram LM fused in decoding, ARPA (token i written "
                                   "chr(i + 100), as NeMo's) or NeMo's .nemo LM.")


def lm_alpha_option():
    return typer.Option(1.0, help="Weight of the LM's scores (NeMo's ngram_lm_alpha).")


def jobs_option():
    return typer.Option(None, "--jobs", help="Worker processes over many files, each opening the packages (and NeMo) "
                                             "once (default: one per core, as many as memory holds).")


def output_option():
    return typer.Option(None, "--output", help="Many files: append each finished file's record to this JSON-lines "
                                               "file; run again with it to do only the files without a record.")


def ray_option():
    return typer.Option(None, "--ray", help="Many files on a Ray cluster: 'auto' (the running cluster, else a local "
                                            "one) or its address (needs the cluster extra).")


def fusion_from_options(boost_phrases: Path | None, boost_alpha: float, boost_score: float, lm: Path | None,
                        lm_alpha: float):
    """The Fusion the options ask for, None without phrases or LM (raises UserError on bad input)."""
    from exporters.decoding.fusion import Fusion, read_phrases

    if boost_phrases is None and lm is None:
        return None
    phrases = read_phrases(boost_phrases) if boost_phrases is not None else ()
    return Fusion(phrases, boost_alpha, boost_score, lm=lm, lm_alpha=lm_alpha)


@command()
def convert(
    model: str = typer.Option(
        DEFAULT_HF_ID, help="Hugging Face id, path to a .nemo file, 'tiny', 'full-random', 'digits' or 'sentences'."),
    output_dir: Path = typer.Option(..., help="Directory for the .mlpackage files, tokenizer and metadata.json."),
    precision: str = typer.Option("fp32", help="Compute precision: fp32 or fp16 (I/O stays fp32/int32)."),
    components: str = typer.Option(ALL_COMPONENTS, help="Comma-separated components, or 'all'."),
    compute_units: str = typer.Option("auto", help="Recommended runtime compute units recorded per package "
                                                   "(auto: ALL; CPU_AND_GPU where a tensor dimension "
                                                   "exceeds the Neural Engine's 16384)."),
    author: Optional[str] = typer.Option(None, help="Author recorded in metadata.json (default: git user)."),
    layout: str = typer.Option("default", help="default (eight parakeet_*.mlpackage) or fluidaudio (the four "
                                               "packages and vocabulary FluidAudio's v3 loader opens)."),
    top_k: int = typer.Option(DEFAULT_TOP_K, help="K of the top_k_ids / top_k_logits outputs of joint_decision."),
    windows: str = typer.Option(f"{WINDOW_SECONDS:g}", help="Comma-separated window lengths in seconds. Several "
                                "(e.g. 2.5,5,10,15) make the window-sized packages iOS18 multifunction packages, "
                                "one function per window sharing the weights."),
    compress: str = typer.Option("none", callback=one_of("compression", tuple(VARIANTS)),
                                 help=f"Weight compression: {', '.join(VARIANTS)}."),
    compress_components: str = typer.Option(",".join(DEFAULT_COMPRESSED),
                                            help="Comma-separated components --compress applies to."),
    mixed_plan: Optional[Path] = typer.Option(None, help="Per-weight formats for --compress mixed (JSON written "
                                                         "by `parakeet-coreml search-mixed`)."),
    replace: bool = typer.Option(False, "--replace", help="Replace an export of another model or settings in "
                                                          "--output-dir (refused without it)."),
) -> None:
    """Export the components of a Parakeet-TDT model for a fixed 15 s window (or several, --windows).

    The output directory is replaced as a whole when every component succeeded; until then the work is
    staged beside it. Some --components into an export of the same model and settings update those packages
    and keep the others; into an export of anything else, convert refuses unless --replace. Ctrl-C and SIGTERM
    remove the staging folder; one left by a killed process is removed by the next export to the same directory.

    Example: parakeet-coreml convert --model tiny --output-dir build/tiny
    """
    try:
        from exporters.compression import CompressionSettings, read_plan

        compression = CompressionSettings(compress, parse_components(compress_components) or DEFAULT_COMPRESSED,
                                          read_plan(mixed_plan) if mixed_plan else None)
        run_convert(model, output_dir, precision, components, compute_units, author, layout, top_k, compression,
                    parse_windows(windows), replace)
    except UserError as error:
        fail(str(error))


def output_lock_path(output_dir: Path) -> Path:
    """The lock file of an output directory: named after its resolved path, in the temporary folder."""
    import hashlib

    folder = Path(tempfile.gettempdir()) / "parakeet-coreml-locks"
    folder.mkdir(exist_ok=True)
    return folder / (hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:24] + ".lock")


@contextlib.contextmanager
def exclusive_output(output_dir: Path):
    """Held while a convert writes output_dir: a second convert into the same directory is refused in one line
    instead of both replacing it. An flock on a lock file named after the resolved directory (in the temporary
    folder, so nothing is left beside the user's files); the file is removed on release, and a lock taken on a
    file already removed is taken again."""
    import fcntl

    path = output_lock_path(output_dir)
    while True:
        handle = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise UserError(f"another convert is writing {output_dir} now: wait for it to finish, or choose another "
                            "directory") from None
        if path.exists() and path.stat().st_ino == os.fstat(handle).st_ino:
            break
        os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)


def run_convert(model_source: str, output_dir: Path, precision: str, components: str,
                compute_units: str, author: str | None, layout: str = "default", top_k: int = DEFAULT_TOP_K,
                compression=None, windows: tuple[float, ...] = (WINDOW_SECONDS,), replace: bool = False) -> None:
    from exporters.checkpoints import check_source
    from exporters.contract import check_top_k, check_windows
    from exporters.layouts import layout_named
    from exporters.window_memory import check_window_memory, source_attention

    kind = check_source(model_source)  # before torch and NeMo load: a bad source fails in a moment
    chosen = layout_named(layout)
    from exporters.export import ExportSettings, check_output_dir

    settings = ExportSettings(precision, parse_components(components), compute_units, author,
                              *(() if compression is None else (compression,)))
    settings.validate(chosen)
    check_top_k(top_k)
    check_windows(windows, chosen)
    check_window_memory(windows, source_attention(model_source, kind))
    output_dir = usable_output_dir(output_dir)
    check_output_dir(output_dir)
    with exclusive_output(output_dir), write_failures_said(output_dir):
        export_into(model_source, kind, output_dir, precision, settings, chosen, top_k, windows, layout, replace)


def usable_output_dir(output_dir: Path) -> Path:
    """Where convert writes: a symlink's target (the link is kept), never a folder inside a Core ML package or
    inside another export, and no name longer than the filesystem allows."""
    import errno

    from exporters.export_view import is_our_export

    try:
        chosen = output_dir.resolve() if output_dir.is_symlink() else output_dir
        for parent in chosen.absolute().parents:
            if parent.suffix in (".mlpackage", ".mlmodelc") or is_our_export(parent):
                what = "a Core ML package" if parent.suffix in (".mlpackage", ".mlmodelc") else "an export"
                raise UserError(f"{output_dir} is inside {parent} ({what}): writing there would damage it; choose "
                                "a directory outside it")
        chosen.exists()
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        raise UserError(f"cannot write to output directory {output_dir}: a name in it is longer than the "
                        "filesystem allows") from None
    return chosen


@contextlib.contextmanager
def write_failures_said(output_dir: Path):
    """A disk that fills (or a write that fails) while the export is staged: one line, nothing published (the
    staging folder is removed on the way out). coremltools' MIL weight writer says it as a RuntimeError."""
    import errno

    try:
        yield
    except (OSError, RuntimeError) as error:
        full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if not full and "[MIL FileWriter]" not in str(error):
            raise
        free = shutil.disk_usage(existing_parent(output_dir)).free / 1e6
        cause = "no space left on the device" if full else "coremltools could not write a package's weights"
        raise UserError(f"writing the export failed: {cause} ({free:.1f} MB free beside {output_dir}); nothing was "
                        "published, any earlier export there is untouched") from None


def existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def export_into(model_source: str, kind: str, output_dir: Path, precision: str, settings, chosen, top_k: int,
                windows: tuple[float, ...], layout: str, replace: bool) -> None:
    """Load the model and export it into output_dir (the caller holds the directory's lock): replacing it, or,
    for some components into an export of the same model and settings, updating those packages."""
    from exporters.export import export_packages
    from exporters.partial import existing_export, merge_partial, partial_staging, refuse_other_export

    quiet_libraries()
    from exporters.checkpoints import load_model
    from exporters.compression import check_plan
    from exporters.contract import contract_for_model
    from exporters.export import exported_components
    from exporters.metadata import weights_sha256

    with console.status(f"loading {model_source}"):
        model = load_model(model_source, kind)
    check_plan(settings.compression, list(model.state_dict()), exported_components(settings, chosen))
    contract = contract_for_model(model, windows, top_k, layout)
    existing = None if replace else existing_export(output_dir)
    if existing is not None:
        from exporters.metadata import build_metadata

        planned = build_metadata(contract=contract, source=model_source, model_checksum=weights_sha256(model),
                                 precision=precision, packages={}, tokenizer_file="", author="",
                                 compression=settings.compression.to_dict())
        refuse_other_export(output_dir, existing, planned)
    for window in contract.window_contracts():
        console.print(f"loaded {model_source}: V={contract.model.vocab_size} D={contract.model.d_model} "
                      f"window {window.window_samples} samples → {window.mel_frames} mel → "
                      f"{window.encoder_frames} encoder frames", highlight=False)

    def on_progress(name, result) -> None:
        if result is None:
            console.print(f"exporting {name} ({precision})…", highlight=False)
        else:
            console.print(f"  {result.package}  {result.size_bytes / 1e6:.1f} MB  {result.seconds:.1f} s",
                          highlight=False)

    if existing is not None and settings.components is not None:
        partial = partial_staging(output_dir)
        try:
            results = export_packages(model, contract, model_source, weights_sha256(model), partial, settings,
                                      on_progress)
            kept = sorted(set(merge_partial(output_dir, partial)["packages"]) - set(settings.components))
            console.print(f"updated {', '.join(settings.components)}; kept {', '.join(kept) or 'nothing else'}",
                          highlight=False)
        finally:
            shutil.rmtree(partial.parent, ignore_errors=True)
    else:
        results = export_packages(model, contract, model_source, weights_sha256(model), output_dir, settings,
                                  on_progress)
    table = Table(title=f"exported to {output_dir}")
    for column in ("component", "precision", "compression", "target", "size (MB)", "seconds", "compute units"):
        table.add_column(column)
    for r in results:
        table.add_row(r.component, r.precision, r.compression or "none", r.deployment_target,
                      f"{r.size_bytes / 1e6:.2f}", f"{r.seconds:.1f}", r.compute_units)
    Console(width=160).print(table)
    if chosen.folder_name and Path(output_dir).resolve().name != chosen.folder_name:
        console.print(f"note: {chosen.name} looks for these files in a folder named {chosen.folder_name}",
                      highlight=False)


@command()
def compare(
    packages: Path = typer.Option(..., help="Directory of Core ML packages: an export of this tool (metadata.json) "
                                            "or any other converter's (then pass --model)."),
    model: Optional[str] = foreign_model_option(),
    map_: list[str] = map_option(),
    audio: Optional[Path] = typer.Option(None, help="Clip to compare on (default: the bundled 16 s speech clip)."),
    backend: Optional[str] = typer.Option(None, callback=one_of("backend", BACKENDS),
                                          help="mil or coreml (default: coreml on macOS, mil elsewhere)."),
    runs: int = typer.Option(5, min=1, help="Timed runs per component for latency."),
    warmup: int = typer.Option(1, min=0, help="Untimed warm-up runs per component."),
    plots: Optional[Path] = typer.Option(None, help="Directory for PNG plots (default: <packages>/plots for this "
                                                    "tool's exports, none for others)."),
    tolerances: Optional[Path] = typer.Option(None, help="A tolerance table (TOML, the format of "
                                                         "exporters/tolerances.toml) to judge by instead."),
    report: Optional[Path] = typer.Option(None, help="Write a self-contained HTML page: verdicts, diagnosis, plots."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the same record as JSON (for CI)."),
) -> None:
    """Run every parity gate against NeMo, name the likely cause of a failure, exit 1 on any.

    Example: parakeet-coreml compare --packages their_export/ --model digits --report parity.html
    """
    try:
        quiet_libraries()
        from exporters.export_view import is_our_export
        from exporters.parity.report import run_compare
        from exporters.runtime import BackendUnavailable

        for path in (report, json_out):
            check_output_file(path)
        check_plots_dir(plots)
        plots_dir = plots or (packages / "plots" if is_our_export(packages) and not map_ else None)
        try:
            with plots_for_report(plots_dir, report) as chosen_plots:
                result = run_compare(packages, audio, backend, runs, warmup, chosen_plots, tolerances, model, map_)
                write_compare_records(result, report, json_out)
            if plots_dir is None:
                result.plots = []  # only the HTML page holds them
        except BackendUnavailable as error:
            raise UserError(str(error)) from error
    except UserError as error:
        fail(str(error))
    print_compare(result)
    if not result.passed:
        console.print("[bold red]parity gates failed[/]")
        raise typer.Exit(code=1)


def check_output_file(path: Optional[Path]) -> None:
    """An output file can be written: its folder exists and it is no directory (checked before any work)."""
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"{path} is a directory: name a file to write")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")


def check_plots_dir(path: Optional[Path]) -> None:
    """A plots folder can be made or is one (checked before any work)."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise UserError(f"--plots {path} is a file: name a folder for the plots")
    if not path.exists() and not path.parent.is_dir():
        raise UserError(f"cannot make --plots {path}: folder {path.parent} does not exist")


@contextlib.contextmanager
def plots_for_report(plots_dir: Optional[Path], report: Optional[Path]):
    """The plots folder: the one asked for, else a temporary one when an HTML page will embed them."""
    if plots_dir is not None or report is None:
        yield plots_dir
        return
    with tempfile.TemporaryDirectory(prefix="parakeet-plots-") as folder:
        yield Path(folder)


def write_compare_records(result, report: Optional[Path], json_out: Optional[Path]) -> None:
    """The HTML page and the JSON record of one comparison (each written whole, or not at all)."""
    from exporters.parity.html import write_html

    record = result.to_dict()
    if json_out is not None:
        write_whole(json_out, json.dumps(record, indent=2) + "\n")
        console.print(f"record: {json_out}", highlight=False)
    if report is not None:
        write_html(report, record, [(path.stem.replace("_", " "), path) for path in result.plots])
        console.print(f"report: {report}", highlight=False)


def write_whole(path: Path, text: str) -> None:
    """Write through a temporary file beside `path`, so a failure leaves no half-written file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as handle:
        try:
            handle.write(text)
            handle.flush()
            os.chmod(handle.name, 0o666 & ~current_umask())  # a temporary file is private; the result is not
            os.replace(handle.name, path)
        except BaseException:
            os.unlink(handle.name)
            raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def print_compare(report) -> None:
    out = Console(width=160)
    view = report.view
    for package in view.packages.values():
        verdict = "judged" if package.not_judged is None else f"[red]not judged[/]: {package.not_judged}"
        out.print(f"{package.component}: {package.path.name} — {verdict}", highlight=False)
        for line in package.interface:
            out.print(f"  {line}", highlight=False)
    for line in view.ignored:
        out.print(f"ignored {line}", highlight=False)
    table = Table(title="parity vs NeMo")
    for column in ("component", "output", "case", "max abs", "max rel", "tolerance", "pass"):
        table.add_column(column)
    for d in report.diffs:
        table.add_row(d.component, d.output, d.case, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", d.tolerance.describe(),
                      "yes" if d.passed else "[red]NO[/]")
    seconds = view.contract.window_samples / view.contract.model.sample_rate
    latency = Table(title=f"latency per call ({seconds:g} s window)")
    for column in ("component", "side", "mean s", "stdev s", "RTF"):
        latency.add_column(column)
    for entry in report.latencies:
        latency.add_row(entry.component, entry.side, f"{entry.mean_s:.4f}", f"{entry.stdev_s:.4f}", f"{entry.rtf:.4f}")
    out.print(table)
    out.print(latency)
    for diagnosis in report.diagnoses:
        out.print(f"[bold]likely cause[/] ({diagnosis.component}, {diagnosis.cause}): {diagnosis.message}",
                  highlight=False)
    for path in report.plots:
        out.print(f"plot: {path}", highlight=False)


@command()
def transcribe(
    audio: list[Path] = typer.Argument(..., help="WAV/FLAC files (any rate, mono or stereo, int or float), folders "
                                                  "of them, or NeMo JSON-lines manifests."),
    packages: Path = typer.Option(..., help="Export directory: this tool's (metadata.json), or any converter's "
                                            "with --model."),
    model: Optional[str] = foreign_model_option(),
    map_: list[str] = map_option(),
    json_output: bool = typer.Option(False, "--json", help="One file: print tokens and words with timestamps as JSON."),
    fused: bool = typer.Option(False, help="Use the fused packages: mel_encoder and single-step joint_decision."),
    joint_mode: Optional[str] = typer.Option(None, callback=one_of("joint mode", JOINT_MODES),
                                             help="joint, joint_decision, single_step or decode_step (overrides "
                                                  "--fused; default: the first of them the export holds)."),
    backend: Optional[str] = typer.Option(None, callback=one_of("backend", BACKENDS),
                                          help="mil or coreml (default: coreml on macOS, mil elsewhere)."),
    chunk_seconds: Optional[float] = typer.Option(None, help="Decoded chunk: of audio longer than the window "
                                                             f"(default {Chunking.chunk_seconds}), or of a --stream "
                                                             "(default 2.0, NeMo's streaming default)."),
    left_context_seconds: Optional[float] = typer.Option(None, help="Audio before each chunk in its window (default "
                                                                    f"{Chunking.left_seconds}; --stream: 10.0)."),
    right_context_seconds: Optional[float] = typer.Option(None, help="Audio after each chunk in its window (default "
                                                                     f"{Chunking.right_seconds}; --stream: 2.0)."),
    stream: bool = typer.Option(False, help="Live streaming of one file, or of raw PCM on stdin with '-': NeMo's "
                                            "buffered streaming (chunk, left and right context); partial and final "
                                            "text as the audio arrives."),
    as_fast_as_possible: bool = typer.Option(False, help="--stream a file without waiting for real time."),
    sample_rate: Optional[int] = typer.Option(None, help="--stream -: the PCM's sample rate (default: the model's)."),
    pcm_format: str = typer.Option("s16le", "--format", callback=one_of("format", ("s16le", "f32le")),
                                   help="--stream -: the PCM's sample format, mono (s16le or f32le)."),
    allow_script: Optional[list[str]] = typer.Option(None, help="Language lock: emit only pieces written in this "
                                                                "Unicode script (latin, cyrillic, greek, …); repeatable."),
    allow_tokens: Optional[Path] = typer.Option(None, help="Language lock: a file of allowed token ids or pieces, "
                                                           "one per line (with --allow-script: allowed as well)."),
    boost_phrases: Optional[Path] = boost_phrases_option(),
    boost_alpha: float = boost_alpha_option(),
    boost_score: float = boost_score_option(),
    lm: Optional[Path] = lm_option(),
    lm_alpha: float = lm_alpha_option(),
    jobs: Optional[int] = jobs_option(),
    output: Optional[Path] = output_option(),
    ray: Optional[str] = ray_option(),
) -> None:
    """Transcribe audio with greedy TDT decoding over the exported packages.

    One file prints its text (or --json). Several files, a folder or a manifest print JSON lines, one
    record per file (text, tokens, words, duration, rtf; or error), and exit 1 if any file failed.

    Example: parakeet-coreml transcribe --packages build/tiny fixtures/audio/short_4s.wav --json
    """
    import json

    from exporters.decoding.batch import MANIFEST_SUFFIXES, expand_inputs, is_folder
    from exporters.decoding.language_lock import LanguageLock, read_token_list

    mode = joint_mode or ("single_step" if fused else None)
    contexts = (chunk_seconds, left_context_seconds, right_context_seconds)
    try:
        lock = None
        if allow_script or allow_tokens:
            lock = LanguageLock(tuple(allow_script or ()), read_token_list(allow_tokens) if allow_tokens else ())
        fusion = fusion_from_options(boost_phrases, boost_alpha, boost_score, lm, lm_alpha)
        if stream and (jobs is not None or output is not None or ray is not None):
            raise UserError("--stream decodes one stream as it arrives: --jobs, --output and --ray are for many files")
        if stream:
            run_stream(audio, packages, mode, fused, backend, contexts, as_fast_as_possible, sample_rate, pcm_format,
                       model, map_, lock, fusion)
            return
        chunking = Chunking(*(given if given is not None else default for given, default in
                              zip(contexts, (Chunking.chunk_seconds, Chunking.left_seconds, Chunking.right_seconds))))
        one_file = len(audio) == 1 and not is_folder(audio[0]) and audio[0].suffix.lower() not in MANIFEST_SUFFIXES
        if one_file and jobs is None and output is None and ray is None:
            transcriber = open_packages_transcriber(packages, mode, fused, backend, chunking, lock, model, map_,
                                                    fusion)
            transcript = run_transcribe(transcriber, audio[0])
            typer.echo(json.dumps(transcript.to_dict(), indent=2) if json_output else transcript.text)
            return
        from exporters.corpus import Entry, TranscribeWork, check_jobs, run

        check_jobs(jobs)
        check_export_alone(packages, model or map_, mode, fused, "transcribe", chunking)
        entries = [Entry(index, path, None) for index, path in enumerate(expand_inputs(audio))]
        work = TranscribeWork(packages, mode, fused, backend, chunking, lock, model, tuple(map_), fusion)
        if model or map_ or fusion:
            quiet_libraries()
        outcome = run(work, entries, jobs, output, ray, on_record=lambda record: typer.echo(json.dumps(record)))
    except UserError as error:
        fail(str(error))
    if not said_failures(outcome):
        raise typer.Exit(code=1)


def run_stream(audio: list[Path], packages, mode, fused, backend, contexts, as_fast_as_possible: bool,
               sample_rate: int | None, pcm_format: str, model, map_, lock, fusion) -> None:
    """transcribe --stream: events as the audio arrives, one rewritten line on a terminal, JSON lines when piped."""
    import sys

    from exporters.decoding.streaming import (CHUNK_SECONDS, LEFT_SECONDS, RIGHT_SECONDS, StreamSettings,
                                              check_stream_settings)

    if len(audio) != 1:
        raise UserError("--stream takes one file, or '-' for raw PCM on stdin")
    settings = StreamSettings(*(given if given is not None else default
                                for given, default in zip(contexts, (CHUNK_SECONDS, LEFT_SECONDS, RIGHT_SECONDS))))
    check_stream_settings(settings)
    source = audio[0]
    if str(source) != "-" and sample_rate is not None:
        raise UserError("--sample-rate is for raw PCM on stdin ('-'); a file says its own rate")
    transcriber = open_packages_transcriber(packages, mode, fused, backend, Chunking(), lock, model, map_, fusion)
    from exporters.decoding.streaming import Stream

    rate = transcriber.contract.model.sample_rate
    stream = Stream(transcriber, settings, sample_rate if str(source) == "-" else rate)
    show = TerminalLine(sys.stdout) if sys.stdout.isatty() else json_line
    pushes = stdin_pcm(pcm_format) if str(source) == "-" else file_pushes(source, rate, not as_fast_as_possible)
    for samples in pushes:
        for event in stream.push(samples):
            show(event)
    for event in stream.end():
        show(event)


PUSH_SECONDS = 0.02  # what a microphone callback delivers


def file_pushes(path: Path, rate: int, real_time: bool):
    """The file's samples in 20 ms pushes, at the pace they would arrive live (or at once)."""
    import time

    from exporters.audio import load_audio

    samples = load_audio(path, rate)
    size = int(rate * PUSH_SECONDS)
    started = time.perf_counter()
    for start in range(0, len(samples), size):
        if real_time:
            time.sleep(max(0.0, start / rate - (time.perf_counter() - started)))
        yield samples[start:start + size]


def stdin_pcm(pcm_format: str, block_bytes: int = 4096):
    """Raw mono PCM from stdin as float32 pushes, as it arrives."""
    import sys

    import numpy as np

    width, dtype, scale = (2, "<i2", 1 / 32768) if pcm_format == "s16le" else (4, "<f4", 1.0)
    pending = b""
    while block := sys.stdin.buffer.read1(block_bytes) if hasattr(sys.stdin.buffer, "read1") \
            else sys.stdin.buffer.read(block_bytes):
        pending += block
        whole = len(pending) - len(pending) % width
        if whole:
            yield np.frombuffer(pending[:whole], dtype).astype(np.float32) * scale
            pending = pending[whole:]


def json_line(event) -> None:
    import json

    typer.echo(json.dumps(event.to_dict()), nl=True)


class TerminalLine:
    """Final text written once, the partial tail rewritten in place after it; a full line is ended at its last
    space and the rest carried to the next, so an hour of speech scrolls instead of rewriting one wrapped line."""

    def __init__(self, out, width: int | None = None):
        import shutil

        self.out = out
        self.width = max(20, (width or shutil.get_terminal_size().columns) - 1)
        self.line = ""  # final text on the current line

    def __call__(self, event) -> None:
        if event.kind == "final":
            self.line += event.text
        while len(self.line) > self.width:
            cut = self.line.rfind(" ", 0, self.width + 1)
            cut = cut if cut > 0 else self.width
            self.out.write("\r\033[K" + self.line[:cut] + "\n")
            self.line = self.line[cut:].lstrip(" ")
        tail = event.text if event.kind == "partial" else ""
        self.out.write("\r\033[K" + (self.line + tail)[-self.width:])
        if event.kind == "end":
            self.out.write("\n")
        self.out.flush()


def open_packages_transcriber(packages: Path, joint_mode: str | None, fused: bool, backend: str | None, chunking,
                              lock=None, model: str | None = None, mapping: list[str] = (), fusion=None):
    from exporters.decoding.chunking import check_chunking
    from exporters.decoding.transcriber import open_transcriber
    from exporters.export_view import parse_mapping
    from exporters.runtime import BackendUnavailable

    try:
        if model or mapping or fusion:
            quiet_libraries()
        transcriber = open_transcriber(packages, backend, joint_mode, fused, chunking, lock, model,
                                       parse_mapping(list(mapping), packages), fusion)
    except BackendUnavailable as error:
        raise UserError(str(error)) from error
    check_chunking(transcriber.contract, chunking)
    return transcriber


def run_transcribe(transcriber, audio: Path):
    from exporters.audio import load_audio

    return transcriber.transcribe(load_audio(audio, transcriber.contract.model.sample_rate))


def check_export_alone(packages: Path, judged_with, joint_mode: str | None, fused: bool, command: str, chunking=None):
    """Before any worker starts: an export judged without a model (`judged_with`: the --model or --map given, if
    any) must be ours, and what its packages lack for the joint mode, or chunk settings that cannot fit them, is
    said from its metadata.json. Its view; None when judged with a model (the workers check the packages with it)."""
    from exporters.decoding.chunking import check_chunking
    from exporters.decoding.transcriber import decoding_components
    from exporters.export_view import open_export

    if judged_with:
        return None
    view = open_export(packages)
    decoding_components(view, joint_mode, fused, command)
    if chunking is not None:
        check_chunking(view.contract, chunking)
    return view


def said_failures(outcome) -> bool:
    """Say how many files failed (their records say why); True when none did."""
    failed = sum("error" in record for record in outcome.records)
    if failed:
        console.print(f"[bold red]error:[/] {failed} of {len(outcome.records)} files failed (see their records)",
                      highlight=False, soft_wrap=True)
    return failed == 0


SEVERITY_STYLES = {ERROR: "bold red", WARNING: "yellow", INFO: "dim"}


@command("search-mixed")
def search_mixed(
    model: str = typer.Option(..., help="load_model source: 'digits', 'sentences', a .nemo path, …"),
    output: Path = typer.Option(..., help="Plan file to write (JSON), for convert --compress mixed --mixed-plan."),
    precision: str = typer.Option("fp16", callback=one_of("precision", ("fp32", "fp16")),
                                  help="Precision the plan's packages will be exported at."),
    calibration: Optional[Path] = typer.Option(None, help="NeMo manifest of calibration audio (default: the "
                                                          "even-indexed held-out clips of a trained model)."),
) -> None:
    """Per encoder weight, the smallest of palette4/palette6/palette8/int8 whose decisions agree with NeMo
    on the calibration audio.

    Example: parakeet-coreml search-mixed --model sentences --output plan.json
    """
    try:
        quiet_libraries()
        from exporters.checkpoints import check_source, load_model
        from exporters.contract import contract_for_model
        from exporters.metadata import weights_sha256
        from exporters.mixed import calibration_clips, plan_document, search_mixed_plan

        check_output_file(output)
        kind = check_source(model)
        nemo_model = load_model(model, kind)
        contract = contract_for_model(nemo_model)
        clips, names = calibration_clips(model, calibration, contract.model.sample_rate)
        with console.status("searching"):
            plan, sizes = search_mixed_plan(nemo_model, contract, precision, clips, names)
        document = plan_document(plan, sizes, model, weights_sha256(nemo_model), precision)
    except UserError as error:
        fail(str(error))
    if write_or_say(output, document):
        typer.echo(document)
        raise typer.Exit(code=1)
    console.print(f"wrote {output}: {plan.mean_bits(sizes):.2f} bits per weight over {len(sizes)} weights, "
                  f"{plan.trials} trials, {plan.rounds} combination rounds", highlight=False)


@command()
def evaluate(
    packages: Optional[Path] = typer.Option(None, help="Export directory to evaluate (any converter's, with "
                                                       "--model)."),
    model: Optional[str] = typer.Option(None, help="Alone: evaluate NeMo itself (a load_model source: 'digits', "
                                                   "'sentences', a .nemo path, …). With --packages: the checkpoint "
                                                   "another converter's packages came from."),
    map_: list[str] = map_option(),
    manifest: Optional[Path] = typer.Option(None, help="NeMo JSON-lines manifest with audio_filepath and text "
                                                       "(default: the trained model's held-out set)."),
    report: Optional[Path] = typer.Option(None, help="Also write the JSON report to this file."),
    backend: Optional[str] = typer.Option(None, callback=one_of("backend", BACKENDS),
                                          help="mil or coreml (default: coreml on macOS, mil elsewhere)."),
    joint_mode: Optional[str] = typer.Option(None, callback=one_of("joint mode", JOINT_MODES),
                                             help="joint, joint_decision, single_step or decode_step."),
    right_context: bool = typer.Option(False, help="Also count decisions before each clip's middle that change "
                                                   "when only the audio after it changes (packages and NeMo)."),
    boost_phrases: Optional[Path] = boost_phrases_option(),
    boost_alpha: float = boost_alpha_option(),
    boost_score: float = boost_score_option(),
    lm: Optional[Path] = lm_option(),
    lm_alpha: float = lm_alpha_option(),
    jobs: Optional[int] = jobs_option(),
    output: Optional[Path] = output_option(),
    ray: Optional[str] = ray_option(),
) -> None:
    """WER/CER (jiwer, one normalizer), agreement with NeMo's decisions, RTFx and package bytes on a
    manifest: JSON report on stdout, a table on stderr.

    Example: parakeet-coreml evaluate --packages build/digits --manifest my.jsonl --report report.json
    """
    import json

    try:
        if packages is None and model is None:
            raise UserError("pass --packages (an export), --model (NeMo itself), or both (another converter's export)")
        check_output_file(report)
        fusion = fusion_from_options(boost_phrases, boost_alpha, boost_score, lm, lm_alpha)
        if model is not None:
            from exporters.checkpoints import check_source

            check_source(model)  # an unknown model is said before the manifest is looked for
        if right_context and (jobs not in (None, 1) or output is not None or ray is not None):
            raise UserError("--right-context splices clips across the whole set in one process: drop --jobs, "
                            "--output and --ray")
        quiet_libraries()
        from exporters.evaluate import summary_rows
        from exporters.export_view import parse_mapping
        from exporters.runtime import BackendUnavailable

        mapping = parse_mapping(list(map_), packages)
        try:
            result = evaluate_in_one_pass(packages, model, mapping, manifest, backend, joint_mode, fusion) \
                if right_context else \
                evaluate_file_by_file(packages, model, mapping, manifest, backend, joint_mode, fusion, jobs, output,
                                      ray)
        except BackendUnavailable as error:
            raise UserError(str(error)) from error
    except UserError as error:
        fail(str(error))
    document = json.dumps(result.to_dict(), indent=2)
    typer.echo(document)
    unwritten = write_or_say(report, document + "\n")
    table = Table(title=f"{result.system} on {result.manifest}")
    table.add_column("measure")
    table.add_column("value")
    for row in summary_rows(result):
        table.add_row(*row)
    console.print(table)
    for error in result.errors:
        console.print(f"not evaluated: {error['error']}", highlight=False, soft_wrap=True)
    if result.errors or unwritten:
        raise typer.Exit(code=1)


def evaluate_in_one_pass(packages, model, mapping, manifest, backend, joint_mode, fusion):
    """evaluate --right-context: NeMo on the whole set, then the packages, then the spliced clips."""
    from exporters.evaluate import evaluate_nemo, evaluate_packages

    if packages is None:
        return evaluate_nemo(model, manifest, right_context=True, fusion=fusion)
    return evaluate_packages(packages, manifest, backend, joint_mode, right_context=True, model_source=model,
                             mapping=mapping, fusion=fusion)


def evaluate_file_by_file(packages, model, mapping, manifest, backend, joint_mode, fusion, jobs, output, ray):
    """evaluate as exporters.corpus runs it: each file by the packages and NeMo in a worker, records in manifest
    order (resumed from `output`), the report's totals over all of them."""
    from exporters.corpus import Entry, EvaluateWork, check_jobs, run
    from exporters.evaluate import manifest_entries, report_from_records

    check_jobs(jobs)
    view = None if packages is None else check_export_alone(packages, model or mapping, joint_mode, False, "evaluate")
    source = model or view.model_source
    name, entries = manifest_entries(manifest, source)
    work = EvaluateWork(packages, model, mapping, backend, joint_mode, fusion)
    outcome = run(work, [Entry(index, path, text) for index, (path, text) in enumerate(entries)], jobs, output, ray)
    return report_from_records(outcome.description, name, outcome.records, fusion)


def write_or_say(path: Optional[Path], text: str) -> bool:
    """Write a finished result to the file asked for (whole or not at all); if that fails now, after the work,
    say why in one line (the caller prints the result on stdout). True when it was not written."""
    if path is None:
        return False
    try:
        write_whole(path, text)
    except OSError as error:
        console.print(f"[bold red]error:[/] {path} was not written ({error.strerror or error}); it is printed "
                      "on stdout instead", highlight=False, soft_wrap=True)
        return True
    return False


@command()
def lint(
    packages: Path = typer.Option(..., help="Export directory (with metadata.json) to check."),
    target: str = typer.Option(DEFAULT_TARGET, help="Deployment target the packages must match (e.g. iOS17)."),
) -> None:
    """Check every package statically for Neural Engine and Core ML problems; exit 1 on any error.

    Example: parakeet-coreml lint --packages build/tiny --target iOS17
    """
    from exporters.lint import lint_export, severity_counts

    try:
        findings = lint_export(packages, target)
    except (UserError, OSError) as error:
        fail(str(error))
    print_findings(findings)
    if errors := severity_counts(findings)[ERROR]:
        console.print(f"[bold red]lint found {errors} error(s)[/]")
        raise typer.Exit(code=1)


def print_findings(findings) -> None:
    from exporters.lint import severity_counts

    table = Table(title="lint")
    for column in ("package", "severity", "rule", "op", "message"):
        table.add_column(column)
    for package, package_findings in findings.items():
        for f in package_findings:
            where = ": ".join(part for part in (f.function, f.op) if part)
            table.add_row(package, f"[{SEVERITY_STYLES[f.severity]}]{f.severity}[/]", f.rule, where, f.message)
        if not package_findings:
            table.add_row(package, "ok", "", "", "")
    counts = severity_counts(findings)
    out = Console(width=160)
    out.print(table)
    out.print(", ".join(f"{s}: {counts[s]}" for s in SEVERITY_STYLES), highlight=False)


@command("compile")
def compile_packages(
    packages: Path = typer.Option(..., help="Export directory (with metadata.json) whose packages to compile."),
    output_dir: Optional[Path] = typer.Option(None, help="Directory for the .mlmodelc bundles (default: <packages>)."),
) -> None:
    """Compile every .mlpackage to .mlmodelc with xcrun coremlcompiler (macOS) and record the seconds taken.

    Example: parakeet-coreml compile --packages build/tiny
    """
    from exporters.compile import compile_directory

    try:
        seconds = compile_directory(packages, output_dir or packages)
    except (UserError, OSError) as error:
        fail(str(error))
    table = Table(title=f"compiled to {output_dir or packages}")
    table.add_column("package")
    table.add_column("seconds")
    for package, taken in seconds.items():
        table.add_row(package, f"{taken:.2f}")
    Console(width=160).print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
