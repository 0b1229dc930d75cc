"""Write the docs' tables from pytest-benchmark JSON and `evaluate` reports, so every figure comes from a command.

    uv run pytest tests/benchmarks --benchmark-only --benchmark-json=bench.json
    uv run parakeet-coreml evaluate --packages build/s-int8 --right-context --report eval/int8.json   # per variant
    uv run python tools/docs_tables.py bench.json eval/*.json

Each table sits in README.md or a docs page between `<!-- table: NAME -->` and `<!-- end table -->`. For benchmarks
NAME picks them (a substring of their names, `|` for several); `<!-- table: evaluate MANIFEST -->` takes the evaluate
reports on that manifest (for example "held-out set of sentences"), one row per export; `<!-- table: custom vocabulary
MANIFEST -->` the reports decoded with phrase boosting or an LM, one row per setting; `<!-- table: streaming -->` the
streaming benchmarks' quality and latency; `<!-- table: evaluate_corpus -->` evaluate over many files by runner;
`<!-- table: long_form -->` long files against NeMo on the whole file; `<!-- table: window_bytes -->` the bytes of
multifunction packages; `<!-- table: full_width_variants -->` the full-width encoder per compression variant, and
`<!-- table: variants -->` (the README's) its bytes with what each is for. The table is replaced whole, with the host
(CPU, family/model, vector instruction set, cores), the versions, the date and the command that made it: a new run
replaces the old figures, history lives in git. A table no file given has figures for is left as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TABLE = re.compile(r"(<!-- table: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def milliseconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.{2 if seconds < 0.001 else 1 if seconds < 0.01 else 0}f} ms"


def markdown_table(header: list[str], rows: Iterable[list]) -> str:
    """The header, its separator and the rows as Markdown lines; a row holds one cell per header column."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(map(str, cells)) + " |" for cells in rows)])


def with_source(made: str, measured: str, command: str) -> str:
    """A table followed by where and with what it was measured, and the command that made it."""
    return f"{made}\n\n{measured}. Command: {command}.\n"


def from_benchmarks(selection: str) -> str:
    """The commands that make a table from the benchmarks `-k selection` picks."""
    return (f"`uv run pytest tests/benchmarks --benchmark-only -k {selection} --benchmark-json=bench.json`, then "
            "`uv run python tools/docs_tables.py bench.json`")


def row(benchmark: dict) -> list:
    stats, extra = benchmark["stats"], benchmark.get("extra_info", {})
    rtfx = f"{extra['rtfx']:.1f}" if "rtfx" in extra else "–"
    ratio = f" (median of the per-round ratios {extra['ratio_median']:.2f}×)" if "ratio_median" in extra else ""
    size = f" ({megabytes(extra['export_bytes'])} read)" if "export_bytes" in extra else ""
    return [f"`{benchmark['name']}`{ratio}{size}", extra.get("model", "–"), extra.get("backend", "–"),
            extra.get("precision", "–"), milliseconds(stats["mean"]), milliseconds(stats["median"]),
            stats["rounds"], rtfx]


def host_line(run: dict, chosen: list[dict]) -> str:
    host = next((b["extra_info"]["host"] for b in chosen if "host" in b.get("extra_info", {})), {})
    versions = host.get("versions", {})
    described = ", ".join(f"{name} {value}" for name, value in versions.items())
    return (f"{host.get('cpu', run['machine_info'].get('cpu', {}).get('brand_raw', '?'))} "
            f"(family/model {host.get('cpu_family_model', '?')}, {host.get('cpu_capability', '?')}), "
            f"{host.get('cores', '?')} cores; {described or 'versions not recorded'}; {run['datetime'][:10]}")


def table(run: dict, name: str) -> str | None:
    patterns = name.split("|")
    chosen = [b for b in run["benchmarks"] if any(p.strip() in b["name"] for p in patterns)]
    if not chosen:
        return None
    made = markdown_table(["benchmark", "model", "backend", "precision", "mean", "median", "rounds", "RTFx"],
                          map(row, sorted(chosen, key=lambda b: b["name"])))
    selection = " or ".join(p.strip() for p in patterns)
    return with_source(made, host_line(run, chosen), from_benchmarks(f'"{selection}"'))


VARIANT_ORDER = ("none", "int8", "palette8", "palette6", "palette4", "int4-block32", "mixed")
EVALUATE = "evaluate "
CUSTOM_VOCABULARY = "custom vocabulary "


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def flips(report: dict, system: str) -> str:
    counted = report.get("right_context", {}).get(system)
    if not counted:
        return "–"
    tokens = counted["tokens_changed"]
    return f"{tokens} token{'' if tokens == 1 else 's'}, {counted['clips_changed']}/{counted['clips']} clips"


def identical_files(summary: dict) -> str:
    return f"{round(summary['decisions_identical'] * summary['files'])}/{summary['files']}"


def evaluate_row(report: dict) -> list:
    summary = report["summary"]
    return [report["compression"] or "none", f"{summary['package_bytes']:,} B", identical_files(summary),
            percent(summary["token_agreement"]), percent(summary["wer"]), percent(summary["nemo_wer"]),
            flips(report, "packages"), flips(report, "nemo")]


def evaluate_table(reports: list[dict], manifest: str) -> str | None:
    chosen = [r for r in reports if r["manifest"] == manifest and "token_agreement" in r["summary"]
              and not r.get("custom_vocabulary")]
    if not chosen:
        return None
    chosen.sort(key=lambda r: VARIANT_ORDER.index(r["compression"]) if r["compression"] in VARIANT_ORDER else 99)
    made = markdown_table(["variant", "bytes of the packages used", "files with NeMo's decisions", "token agreement",
                           "WER", "NeMo's WER", "right-context flips", "NeMo's flips"], map(evaluate_row, chosen))
    return with_source(made, measured_on(chosen[0]), "`uv run parakeet-coreml evaluate --packages DIR --right-context "
                       "--report eval/NAME.json` per export, then `uv run python tools/docs_tables.py eval/*.json`")


def measured_on(report: dict) -> str:
    host = report["measured"]["host"]
    versions = ", ".join(f"{name} {value}" for name, value in host["versions"].items())
    return (f"{host['cpu']} (family/model {host['cpu_family_model']}, {host['cpu_capability']}), {host['cores']} "
            f"cores; {versions}; {report['measured']['date'][:10]}")


def setting(fusion: dict) -> str:
    parts = []
    if fusion["phrases"]:
        parts.append(f"{len(fusion['phrases'])} phrases, `--boost-alpha {fusion['boost_alpha']:g}`")
    if fusion["lm"]:
        parts.append(f"LM, `--lm-alpha {fusion['lm_alpha']:g}`")
    return " + ".join(parts)


def recall(summary: dict, key: str) -> str:
    return "–" if summary.get(key) is None else f"{summary[key] * 100:.0f} % of {summary['phrase_occurrences']}"


def custom_vocabulary_table(reports: list[dict], manifest: str) -> str | None:
    chosen = [r for r in reports if r["manifest"] == manifest and r.get("custom_vocabulary")
              and "token_agreement" in r["summary"]]
    if not chosen:
        return None
    chosen.sort(key=lambda r: (bool(r["custom_vocabulary"]["lm"]), r["custom_vocabulary"]["boost_alpha"],
                               r["custom_vocabulary"]["lm_alpha"]))
    rows = ([setting(report["custom_vocabulary"]), recall(report["summary"], "phrase_recall"),
             recall(report["summary"], "nemo_phrase_recall"), percent(report["summary"]["wer"]),
             percent(report["summary"]["nemo_wer"]), identical_files(report["summary"])] for report in chosen)
    made = markdown_table(["setting", "phrase recall", "NeMo's phrase recall", "WER", "NeMo's WER",
                           "files with NeMo's decisions"], rows)
    return with_source(made, measured_on(chosen[0]), "`uv run parakeet-coreml evaluate --packages DIR --boost-phrases "
                       "PHRASES --boost-alpha A [--lm LM --lm-alpha B] --report eval/NAME.json` per setting, then "
                       "`uv run python tools/docs_tables.py eval/*.json`")


def streaming_table(run: dict) -> str | None:
    chosen = sorted((b for b in run["benchmarks"] if "streaming_by_chunk" in b["name"]),
                    key=lambda b: b["extra_info"]["chunk_seconds"])
    if not chosen:
        return None
    steps = {b["extra_info"]["chunk_seconds"]: b["stats"]["median"] for b in run["benchmarks"]
             if "streaming_step" in b["name"]}

    def streaming_row(benchmark: dict) -> list:
        extra = benchmark["extra_info"]
        latency = extra["latency"]
        step = steps.get(extra["chunk_seconds"])
        return [f"{extra['chunk_seconds']:g} / {extra['left_seconds']:g} / {extra['right_seconds']:g} s",
                f"{percent(extra['wer'])} ({percent(extra['offline_wer'])})", extra["words_differing_from_offline"],
                f"{latency['final_mean']:.2f} / {latency['final_max']:.2f} s",
                f"{latency['shown_mean']:.2f} / {latency['shown_max']:.2f} s",
                milliseconds(benchmark["stats"]["mean"] / extra["audio_seconds"]),
                "–" if step is None else milliseconds(step)]

    made = markdown_table(["chunk / left / right", "WER (offline NeMo)", "words differing from offline NeMo",
                           "to final: mean / max", "first shown: mean / max", "compute per audio second",
                           "one step (median)"], map(streaming_row, chosen))
    return with_source(made, host_line(run, chosen), from_benchmarks("'streaming_by_chunk or streaming_step'"))


def long_form_table(run: dict) -> str | None:
    chosen = sorted((b for b in run["benchmarks"] if "long_form_against_nemo" in b["name"]),
                    key=lambda b: (b["extra_info"]["layout"], b["extra_info"]["model"]))
    if not chosen:
        return None
    rows = ([f"`{extra['model']}`", extra["layout"], extra["files"], f"{extra['words']:,}",
             extra["differing_from_nemo"], f"{extra['errors_packages']} / {extra['errors_nemo']}"]
            for extra in (benchmark["extra_info"] for benchmark in chosen))
    made = markdown_table(["model", "how", "files", "words", "words differing from NeMo on the whole file",
                           "errors vs true text: packages / NeMo"], rows)
    measured = f"{host_line(run, chosen)}; fp32 packages, {chosen[0]['extra_info']['backend']} backend"
    return with_source(made, measured, from_benchmarks("long_form"))


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def window_bytes_table(run: dict) -> str | None:
    """Each multifunction package's bytes against its windows apart, from the benchmarks that record `bytes`."""
    sizes = {}
    for benchmark in sorted(run["benchmarks"], key=lambda b: b["name"]):
        extra = benchmark.get("extra_info", {})
        for package, size in (extra.get("bytes") or {}).items():
            sizes.setdefault((extra["model"], package), size)
    if not sizes:
        return None
    rows = ([f"`{model}`", package, megabytes(size["multifunction"]), megabytes(size["largest_window_alone"]),
             megabytes(size["separate"]), f"{size['versus_one_window']:.3f}"]
            for (model, package), size in sorted(sizes.items(), key=lambda item: -item[1]["multifunction"]))
    made = markdown_table(["model", "package", "multifunction (4 windows)", "the 15 s window alone",
                           "4 separate packages", "multifunction / one window"], rows)
    chosen = [b for b in run["benchmarks"] if b.get("extra_info", {}).get("bytes")]
    return with_source(made, f"{host_line(run, chosen)}; fp32", from_benchmarks("multifunction_package_bytes"))


# What each full-width encoder variant is for, beside its measured bytes in the README (the figures behind these
# words: docs/compression.md).
VARIANT_USES = {
    ("fp32", "none"): "the reference; CPU and GPU",
    ("fp16", "none"): "Neural Engine and GPU, half the bytes",
    ("fp16", "int8"): "half again; NeMo's decisions on most files ([decisions](docs/compression.md))",
    ("fp16", "palette8"): "as small as int8, a k-means palette per tensor",
    ("fp16", "palette6"): "smaller, with more decisions changed ([decisions](docs/compression.md))",
    ("fp16", "palette4"): "smallest, most decisions changed ([decisions](docs/compression.md))",
    ("fp16", "int4-block32"): "iOS 18; its documented gains are on the GPU",
}
FULL_WIDTH_VARIANTS_COMMAND = from_benchmarks("'full_width_encoder_variant or multifunction_package_bytes'")


def convert_options(extra: dict) -> str:
    if extra["variant"] == "none":
        return f"`--precision {extra['precision']}`"
    return f"`--precision {extra['precision']} --compress {extra['variant']}`"


def full_width_variants(run: dict) -> list[dict]:
    """The full-width encoder variant benchmarks, in VARIANT_USES order."""
    order = list(VARIANT_USES)
    chosen = [b for b in run["benchmarks"] if "full_width_encoder_variant" in b["name"]]
    return sorted(chosen, key=lambda b: order.index((b["extra_info"]["precision"], b["extra_info"]["variant"])))


def full_width_variants_table(run: dict) -> str | None:
    """Each full-width encoder variant: bytes, distance from NeMo under its row, the export's peak, one call."""
    chosen = full_width_variants(run)
    if not chosen:
        return None
    rows = ([f"{extra['variant']} ({extra['precision']})", convert_options(extra), f"{extra['encoder_bytes']:,} B",
             f"{extra['max_abs']:.3g} / {extra['psnr']:.1f} dB", extra["tolerance"],
             gigabytes(extra["export_peak_mb"]), milliseconds(benchmark["stats"]["median"])]
            for benchmark, extra in ((b, b["extra_info"]) for b in chosen))
    made = markdown_table(["variant", "`convert` options", "encoder bytes", "max \\|Δ\\| / PSNR against NeMo",
                           "its tolerance row", "export's peak memory", "one encoder call (median)"], rows)
    measured = (f"{host_line(run, chosen)}; {chosen[0]['extra_info']['backend']} backend, the 16 s clip in the 15 s "
                "window; the uncompressed rows' peak is that of their export of every package")
    return with_source(made, measured, FULL_WIDTH_VARIANTS_COMMAND)


def variants_table(run: dict) -> str | None:
    """The README's variants: the full-width encoder's bytes per variant, what each is for, and the windows' cost."""
    chosen = full_width_variants(run)
    if not chosen:
        return None
    rows = [[extra["variant"] if extra["variant"] != "none" else extra["precision"], convert_options(extra),
             f"{extra['encoder_bytes'] / 1e6:,.0f} MB", VARIANT_USES[extra["precision"], extra["variant"]]]
            for extra in (b["extra_info"] for b in chosen)]
    rows.append(["mixed", "`--compress mixed --mixed-plan plan.json`", "per plan",
                 "per weight the smallest format that keeps NeMo's decisions on your calibration audio"])
    windows = [b for b in run["benchmarks"] if "multifunction_package_bytes" in b["name"]
               and b["extra_info"]["model"] == "full-random" and "encoder" in b["extra_info"].get("bytes", {})]
    if windows:
        ratio = windows[0]["extra_info"]["bytes"]["encoder"]["versus_one_window"]
        rows.append(["several windows", "`--windows 2.5,5,10,15`", f"{(ratio - 1) * 100:+.1f} %",
                     "short utterances run in a short window ([windows](docs/windows.md))"])
    made = markdown_table(["variant", "`convert` options", "encoder bytes", "for"], rows)
    return with_source(made, host_line(run, chosen), FULL_WIDTH_VARIANTS_COMMAND)


CORPUS_RUNNERS = {"jobs 1": "`evaluate --jobs 1`", "jobs 2": "`evaluate --jobs 2`",
                  "ray": "`evaluate --ray auto` (2 CPUs)", "transcribe full-width": "`transcribe --jobs 2`, full-width",
                  "evaluate full-width": "`evaluate --jobs 2`, full-width"}


def gigabytes(mebibytes: float | None) -> str:
    return "–" if mebibytes is None else f"{mebibytes / 1024:.2f} GB"


def per_file_ms(extra: dict) -> str:
    """Wall time per file once the workers are ready: the mean file's audio over the steady rate."""
    rate = extra["steady_rate"]
    return f"{1000 * extra['audio_seconds'] / extra['files'] / rate:.0f}" if rate else "–"


def corpus_table(run: dict) -> str | None:
    chosen = [b for b in run["benchmarks"] if "evaluate_corpus" in b["name"] or "corpus_worker_memory" in b["name"]]
    if not chosen:
        return None
    by_runner = {b["extra_info"]["runner"]: b["extra_info"] | {"wall": b["stats"]["mean"]} for b in chosen}
    one = by_runner.get("jobs 1")

    def runner_row(label: str, extra: dict) -> list:
        rate = extra["steady_rate"]
        speed = f"{rate / one['steady_rate']:.2f}×" if one and extra["model"] == one["model"] and rate else "–"
        return [label, extra["model"], extra["files"], f"{extra['audio_seconds']:.0f} s", f"{extra['wall']:.1f} s",
                f"{rate:.1f}" if rate else "–", per_file_ms(extra), speed, gigabytes(extra["worker_peak_mb"])]

    made = markdown_table(["runner", "model", "files", "audio", "wall, start-up included",
                           "audio s per s, workers ready", "ms per file, workers ready", "vs `--jobs 1`",
                           "peak memory per worker"],
                          (runner_row(label, by_runner[name]) for name, label in CORPUS_RUNNERS.items()
                           if name in by_runner))
    return with_source(made, host_line(run, chosen), from_benchmarks("'evaluate_corpus or corpus_worker_memory'"))


def rewrite(page: Path, run: dict, reports: list[dict] = ()) -> list[str]:
    """Replace the page's tables that the run or reports have figures for; the names of those replaced."""
    replaced = []

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name.startswith(EVALUATE):
            made = evaluate_table(list(reports), name[len(EVALUATE):])
        elif name == "streaming":
            made = streaming_table(run)
        elif name == "evaluate_corpus":
            made = corpus_table(run)
        elif name == "long_form":
            made = long_form_table(run)
        elif name == "window_bytes":
            made = window_bytes_table(run)
        elif name == "full_width_variants":
            made = full_width_variants_table(run)
        elif name == "variants":
            made = variants_table(run)
        elif name.startswith(CUSTOM_VOCABULARY):
            made = custom_vocabulary_table(list(reports), name[len(CUSTOM_VOCABULARY):])
        else:
            made = table(run, name)
        if made is None:
            return match.group(0)
        replaced.append(match["name"])
        return match.group(1) + made + match.group(4)

    text = page.read_text()
    updated = TABLE.sub(fill, text)
    if updated != text:
        page.write_text(updated)
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_files", type=Path, nargs="+", help="pytest-benchmark JSON and evaluate reports")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    arguments = parser.parse_args()
    documents = [json.loads(path.read_text()) for path in arguments.json_files]
    runs = [d for d in documents if "benchmarks" in d]
    run = {**runs[-1], "benchmarks": [b for r in runs for b in r["benchmarks"]]} if runs else {"benchmarks": []}
    reports = [d for d in documents if "summary" in d]
    for page in [arguments.readme, *sorted(arguments.docs.glob("*.md"))]:
        for name in rewrite(page, run, reports):
            print(f"{page.name}: {name}")


if __name__ == "__main__":
    main()
