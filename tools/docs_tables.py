"""Write the docs' benchmark tables from pytest-benchmark JSON, so every figure there comes from a command.

    uv run pytest tests/benchmarks --benchmark-only --benchmark-json=bench.json
    uv run python tools/docs_tables.py bench.json

Each table sits in a docs page between `<!-- table: NAME -->` and `<!-- end table -->`; NAME picks the
benchmarks (a substring of their names, `|` for several). The table is replaced whole, with the host (CPU,
family/model, vector instruction set, cores), the versions, the date and the command that made it: a new
run replaces the old figures, history lives in git. Benchmarks that are not in the JSON leave their table
as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
TABLE = re.compile(r"(<!-- table: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def milliseconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.{2 if seconds < 0.001 else 1 if seconds < 0.01 else 0}f} ms"


def row(benchmark: dict) -> str:
    stats, extra = benchmark["stats"], benchmark.get("extra_info", {})
    rtfx = f"{extra['rtfx']:.1f}" if "rtfx" in extra else "–"
    ratio = f" (median of the per-round ratios {extra['ratio_median']:.2f}×)" if "ratio_median" in extra else ""
    return (f"| `{benchmark['name']}`{ratio} | {extra.get('model', '–')} | {extra.get('backend', '–')} | "
            f"{extra.get('precision', '–')} | {milliseconds(stats['mean'])} | {milliseconds(stats['median'])} | "
            f"{stats['rounds']} | {rtfx} |")


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
    lines = ["| benchmark | model | backend | precision | mean | median | rounds | RTFx |",
             "|---|---|---|---|---|---|---|---|", *map(row, sorted(chosen, key=lambda b: b["name"]))]
    selection = " or ".join(p.strip() for p in patterns)
    return ("\n".join(lines) + f"\n\n{host_line(run, chosen)}. Command: `uv run pytest tests/benchmarks "
            f"--benchmark-only -k \"{selection}\" --benchmark-json=bench.json`, then "
            "`uv run python tools/docs_tables.py bench.json`.\n")


def rewrite(page: Path, run: dict) -> list[str]:
    """Replace the page's tables that the run has benchmarks for; the names of those replaced."""
    replaced = []

    def fill(match: re.Match) -> str:
        made = table(run, match["name"])
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
    parser.add_argument("benchmark_json", type=Path)
    parser.add_argument("--docs", type=Path, default=DOCS)
    arguments = parser.parse_args()
    run = json.loads(arguments.benchmark_json.read_text())
    for page in sorted(arguments.docs.glob("*.md")):
        for name in rewrite(page, run):
            print(f"{page.name}: {name}")


if __name__ == "__main__":
    main()
