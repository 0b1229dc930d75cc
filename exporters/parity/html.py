"""The `compare` report as one self-contained HTML page: the verdict, what was compared, why it failed, and the plots.

The page is meant to be attached to a bug report or opened from a CI artifact, so it stands alone: the style is
inline, the PNG plots are embedded as data: URLs, and nothing is fetched from elsewhere. Every text that comes from
the report (paths, case names, messages) is HTML-escaped, since those come from users.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

DASH = "—"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: 0.3rem; overflow-wrap: break-word; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85rem;
                overflow-wrap: break-word; }
td.path div { max-width: 26rem; }
td ul { margin: 0; padding-left: 1.1rem; }
#verdict { display: inline-block; font-weight: bold; font-size: 1.1rem; padding: 0.2rem 0.9rem; border-radius: 4px;
           color: #fff; margin: 0.3rem 0; }
#verdict.pass { background: #1a7f37; }
#verdict.fail { background: #cf222e; }
tr.pass td.verdict, .ok { color: #1a7f37; font-weight: bold; }
tr.fail td { background: #ffebe9; }
tr.fail td.verdict, .bad { color: #cf222e; font-weight: bold; }
.muted { color: #656d76; }
li.diagnosis { margin-bottom: 0.3rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: 0.9rem; color: #656d76; }
"""


def esc(value) -> str:
    """Escaped text of a report value; a missing value is a dash."""
    return DASH if value is None else html.escape(str(value))


def path_text(value) -> str:
    """An escaped path that may wrap after each slash (html.escape never emits a slash)."""
    return esc(value).replace("/", "/<wbr>")


def number(value) -> str:
    """A number with 3 significant digits; a missing value is a dash."""
    if value is None:
        return DASH
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return esc(value)


def verdict_of(report: dict) -> str:
    """'pass' or 'fail' (anything but an explicit pass counts as a failure)."""
    return "pass" if report.get("verdict") == "pass" else "fail"


def table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def joined(values, empty: str = "none") -> str:
    values = list(values or [])
    return ", ".join(str(v) for v in values) if values else empty


def export_rows(export: dict) -> list[tuple[str, str]]:
    """(label, escaped value) for the export's fields."""
    window = number(export.get("window_seconds"))
    if export.get("window_seconds") is not None:
        window += " s"
    if export.get("windows"):
        window += f" (windows: {', '.join(number(w) for w in export['windows'])} s)"
    compressed = export.get("compressed") or {}
    return [
        ("origin", esc(export.get("origin"))),
        ("window", window),
        ("precision", esc(export.get("precision"))),
        ("io dtype", esc(export.get("io_dtype"))),
        ("compressed", esc(joined(f"{k}: {v}" for k, v in compressed.items()))),
        ("top_k", esc(export.get("top_k"))),
        ("waveform", esc(export.get("waveform"))),
        ("decoder steps", esc(export.get("decoder_steps"))),
        ("flexible inputs", esc(joined(export.get("flexible_inputs")))),
    ]


def summary_section(report: dict) -> str:
    versions = report.get("versions") or {}
    fields = [
        ("model", esc(report.get("model"))),
        ("packages", f"<code>{path_text(report.get('packages_dir'))}</code>"),
        ("backend", esc(report.get("backend"))),
        ("clip", f"<code>{path_text(report.get('clip'))}</code>"),
        *export_rows(report.get("export") or {}),
        ("versions", esc(joined(f"{k} {v}" for k, v in versions.items()))),
        ("generated", esc(report.get("generated_at"))),
    ]
    rows = [f"<tr><th>{esc(label)}</th><td>{value}</td></tr>" for label, value in fields]
    return '<section id="summary">\n<h2>Summary</h2>\n<table>\n' + "\n".join(rows) + "\n</table>\n</section>"


def diagnosis_section(report: dict) -> str:
    diagnoses = report.get("diagnoses") or []
    if diagnoses:
        items = [f'<li class="diagnosis" data-cause="{esc(d.get("cause"))}"><b>{esc(d.get("component"))}</b>: '
                 f'{esc(d.get("message"))} <span class="muted">({esc(d.get("cause"))})</span></li>'
                 for d in diagnoses]
        body = "<ul>\n" + "\n".join(items) + "\n</ul>"
    elif verdict_of(report) == "fail":
        body = "<p>No likely cause was identified; see the gates and plots below.</p>"
    else:
        body = '<p class="muted">Nothing to diagnose: every gate passes.</p>'
    return f'<section id="diagnosis">\n<h2>Diagnosis</h2>\n{body}\n</section>'


def package_row(package: dict) -> str:
    interface = package.get("interface") or []
    if interface:
        differences = "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in interface) + "</ul>"
    else:
        differences = '<span class="ok">matches the contract</span>'
    if package.get("judged"):
        judged = "judged"
    else:
        judged = f'<span class="muted">skipped: {esc(package.get("skipped_reason") or "no reason given")}</span>'
    return (f'<tr class="package" data-component="{esc(package.get("component"))}">'
            f'<td>{esc(package.get("component"))}</td><td class="path"><div>{path_text(package.get("path"))}</div></td>'
            f"<td>{differences}</td><td>{judged}</td></tr>")


def packages_section(report: dict) -> str:
    packages = report.get("packages") or []
    if not packages:
        return '<section id="packages">\n<h2>Packages</h2>\n<p>No packages were found.</p>\n</section>'
    rows = [package_row(p) for p in packages]
    body = table(["component", "path", "interface differences", "judged"], rows)
    return f'<section id="packages">\n<h2>Packages</h2>\n{body}\n</section>'


def diff_row(diff: dict) -> str:
    state = "pass" if diff.get("passed") else "fail"
    worst = diff.get("worst_index")
    where = f' title="worst at index {esc(list(worst))}"' if worst else ""
    cells = [
        f"<td>{esc(diff.get('component'))}</td>",
        f"<td>{esc(diff.get('output'))}</td>",
        f"<td>{esc(diff.get('case'))}</td>",
        f"<td>{esc(diff.get('precision'))}</td>",
        f'<td class="num"{where}>{number(diff.get("max_abs"))}</td>',
        f'<td class="num">{number(diff.get("max_rel"))}</td>',
        f'<td class="num">{number(diff.get("psnr"))}</td>',
        f'<td class="num">{esc(diff.get("excluded", 0))}</td>',
        f"<td>{esc(diff.get('tolerance'))}</td>",
        f'<td class="verdict">{"ok" if state == "pass" else "FAIL"}</td>',
    ]
    return (f'<tr class="diff {state}" data-component="{esc(diff.get("component"))}" '
            f'data-output="{esc(diff.get("output"))}">' + "".join(cells) + "</tr>")


def gates_section(report: dict) -> str:
    diffs = report.get("diffs") or []
    if not diffs:
        return '<section id="gates">\n<h2>Parity gates</h2>\n<p>No comparisons were made.</p>\n</section>'
    passed = sum(1 for d in diffs if d.get("passed"))
    css = "ok" if passed == len(diffs) else "bad"
    line = f'<p class="{css}">{passed} of {len(diffs)} comparisons pass</p>'
    headers = ["component", "output", "case", "precision", "max abs", "max rel", "psnr (dB)", "excluded",
               "tolerance", "verdict"]
    body = table(headers, [diff_row(d) for d in diffs])
    return f'<section id="gates">\n<h2>Parity gates</h2>\n{line}\n{body}\n</section>'


def latency_section(report: dict) -> str:
    latency = report.get("latency") or []
    if not latency:
        return '<section id="latency">\n<h2>Latency</h2>\n<p>No latency was measured.</p>\n</section>'
    rows = [f"<tr><td>{esc(r.get('component'))}</td><td>{esc(r.get('side'))}</td>"
            f'<td class="num">{number(r.get("mean_s"))}</td><td class="num">{number(r.get("stdev_s"))}</td>'
            f'<td class="num">{number(r.get("rtf"))}</td></tr>' for r in latency]
    body = table(["component", "side", "mean (s)", "stdev (s)", "RTF"], rows)
    return f'<section id="latency">\n<h2>Latency</h2>\n{body}\n</section>'


def figure(caption: str, png: Path) -> str | None:
    """A <figure> with the PNG embedded, or None when the file is missing."""
    try:
        data = Path(png).read_bytes()
    except OSError:
        return None
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def plots_section(plots: list[tuple[str, Path]]) -> str:
    figures = [f for f in (figure(caption, png) for caption, png in plots) if f]
    body = "\n".join(figures) if figures else "<p>No plots.</p>"
    return f'<section id="plots">\n<h2>Plots</h2>\n{body}\n</section>'


def render_html(report: dict, plots: list[tuple[str, Path]]) -> str:
    """The whole page for `report` (the dict `compare --json` writes), with `plots` (caption, PNG path) embedded."""
    verdict = verdict_of(report)
    heading = f"parakeet-coreml compare: {verdict.upper()} {DASH} "
    packages_dir = report.get("packages_dir") or ""
    sections = [summary_section(report), diagnosis_section(report), packages_section(report),
                gates_section(report), latency_section(report), plots_section(plots)]
    return ("<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(heading + str(packages_dir))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{esc(heading)}{path_text(packages_dir)}</h1>\n"
            f'<p id="verdict" class="{verdict}">{verdict.upper()}</p>\n'
            + "\n".join(sections) + "\n</body>\n</html>\n")


def write_html(path: Path, report: dict, plots: list[tuple[str, Path]]) -> Path:
    """Write the page to `path` (UTF-8) through a temp file in the same folder, so a failed write leaves no half
    file."""
    path = Path(path)
    page = render_html(report, plots)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
