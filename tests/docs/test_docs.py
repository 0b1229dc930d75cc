"""The README and docs/ as a user reads them: every relative link leads somewhere, every documented command and
option exists in the CLI, every generated table holds figures, the README's figures in prose are its tables', and
the README's two commands are what CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
TABLE = re.compile(r"<!-- table: ([^>]+?) -->\n(.*?)<!-- end table -->", re.S)
COMMANDS = sorted(command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = CODE_BLOCK.sub("", page.read_text())
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_lead_somewhere(page):
    """Coverage: a link to a file that does not exist, or to a heading its page does not have, fails."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment}")
    assert broken == []


def documented_invocations(page: Path) -> list[list[str]]:
    """The `parakeet-coreml COMMAND ...` invocations in a page's code blocks and inline code, as words."""
    text = page.read_text()
    found = []
    snippets = [line for block in CODE_BLOCK.findall(text) for line in block.replace("\\\n", " ").splitlines()]
    snippets += INLINE_CODE.findall(CODE_BLOCK.sub("", text))
    for snippet in snippets:
        if "parakeet-coreml " not in snippet:
            continue
        words = shlex.split(snippet.split("parakeet-coreml ", 1)[1].split("#")[0].split("|")[0], posix=True)
        if words and not words[0].startswith("-"):
            found.append(words)
    return found


def help_text(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_commands_and_options_exist(page):
    """Coverage: a documented command the CLI lacks, or an option its --help does not list, fails."""
    helps = {}
    missing = []
    for words in documented_invocations(page):
        command = words[0]
        if command not in COMMANDS:
            missing.append(f"parakeet-coreml {command}: no such command")
            continue
        helps.setdefault(command, help_text(command))
        for word in words[1:]:
            option = word.split("=")[0]
            if option.startswith("--") and option not in helps[command]:
                missing.append(f"{command} {option}")
    assert missing == []


def test_the_docs_document_every_command():
    """Coverage: each CLI command appears in the README's command list."""
    listed = {words[0] for words in documented_invocations(ROOT / "README.md")}
    assert sorted(set(COMMANDS) - listed) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command):
    assert f"Example: parakeet-coreml {command} " in help_text(command)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_generated_tables_hold_figures_and_their_command(page):
    """Coverage: a table tools/docs_tables.py writes is never left empty, and names the command it came from."""
    for name, body in TABLE.findall(page.read_text()):
        rows = [line for line in body.splitlines() if line.startswith("|")]
        assert len(rows) >= 3, f"table {name!r} holds no figures: run tools/docs_tables.py"
        assert "Command: `uv run " in body and "tools/docs_tables.py" in body, name


def generated_rows(page: str, name: str) -> dict[str, list[str]]:
    """The rows of one generated table in docs/, by their first cell, and the table's host line as "host"."""
    body = dict(TABLE.findall((ROOT / "docs" / page).read_text()))[name]
    cells = [line.strip("|").split(" | ") for line in body.splitlines() if line.startswith("| ")]
    host = re.search(r"^(.+?) \(family/model (\S+),", body, re.M)
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in cells} | {"host": list(host.groups())}


def test_the_readmes_figures_in_prose_are_those_of_the_tables_it_cites():
    """The README quotes a few figures in sentences; each must be the figure of the generated table it links to, so
    a regenerated table cannot leave the front page quoting an older run."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    boosting = generated_rows("custom-vocabulary.md", "custom vocabulary held-out set of sentences")
    plain, boosted = boosting["4 phrases, `--boost-alpha 0`"], boosting["4 phrases, `--boost-alpha 2`"]
    recalled = round(int(boosted[0].split(" %")[0]) / 100 * 4)
    assert f"recalled {recalled} of 4 and took the WER from {plain[2]} to {boosted[2]}" in readme
    assert boosted[4] == "16/16" and "with NeMo's decisions on every file" in readme

    streaming = generated_rows("streaming.md", "streaming")
    one_second = streaming["1 / 10 / 2 s"]
    wer, offline_wer = re.fullmatch(r"(.+ %) \((.+ %)\)", one_second[0]).groups()
    to_final, first_shown = (float(cell.split(" / ")[0]) for cell in one_second[2:4])
    assert f"had a WER of {wer} (offline NeMo on the whole file: {offline_wer})" in readme
    assert f"final {to_final:.1f} s after it was spoken on average and first shown after {first_shown:.1f} s" in readme
    assert f"at {one_second[4]} of compute per second of audio" in readme
    cpu, family_model = streaming["host"]
    assert f"{cpu} {family_model}; every chunk size" in readme

    corpus = generated_rows("corpus.md", "evaluate_corpus")
    jobs, ray = corpus["`evaluate --jobs 2`"], corpus["`evaluate --ray auto` (2 CPUs)"]
    assert f"{corpus['`evaluate --jobs 1`'][1]} held-out sentences ran at {jobs[6]} the rate" in readme
    assert f"and {ray[6]} on a local two-CPU Ray cluster" in readme
    assert f"{corpus['host'][1]}; start-up" in readme


def test_every_docs_page_is_one_click_from_the_readme():
    """A newcomer starts at the README: a page it does not link is a page nobody finds."""
    linked = {target.split("#")[0] for target in LINK.findall((ROOT / "README.md").read_text())}
    assert [page_id(page) for page in PAGES[1:] if page_id(page) not in linked] == []


def test_the_readme_starts_with_the_two_commands_ci_runs():
    """The README's first code block is the set-up: an offline tiny export and the suite, which .ci/run runs."""
    first_block = CODE_BLOCK.search((ROOT / "README.md").read_text()).group(1).splitlines()
    assert first_block == ["uv run parakeet-coreml convert --model tiny --output-dir build/tiny", "uv run pytest"]
    assert re.search(r"(?m)^uv run pytest \"\$@\"", (ROOT / ".ci" / "run").read_text())


@pytest.fixture(scope="module")
def docs_tables():
    """tools/docs_tables.py as a module (tools/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_tables_replace_a_table_with_the_runs_figures(docs_tables, tmp_path):
    """tools/docs_tables.py: a run's benchmarks replace the table they match, whole, with host, versions, date and
    command; a table the run has no benchmark for is left as it is."""
    page = tmp_path / "page.md"
    page.write_text("a\n<!-- table: encoder -->\nold figures\n<!-- end table -->\n"
                    "<!-- table: joint -->\nkept\n<!-- end table -->\n")
    host = {"cpu": "Some CPU", "cpu_family_model": "25/17", "cpu_capability": "AVX512", "cores": 2,
            "versions": {"torch": "2.7.1"}}
    run = {"datetime": "2026-12-05T08:00:00", "machine_info": {}, "benchmarks": [
        {"name": "test_encoder[fp32]", "stats": {"mean": 0.0184, "median": 0.0181, "rounds": 35},
         "extra_info": {"model": "tiny", "backend": "mil", "precision": "fp32", "rtfx": 832.6, "host": host}},
        {"name": "test_encoder_checksums[fp16]", "stats": {"mean": 1.52, "median": 1.5, "rounds": 3},
         "extra_info": {"model": "full-random", "backend": "none", "precision": "fp16", "host": host,
                        "export_bytes": 2_396_000_000}}]}
    assert docs_tables.rewrite(page, run) == ["encoder"]
    text = page.read_text()
    assert "old figures" not in text and "kept" in text
    assert "| `test_encoder[fp32]` | tiny | mil | fp32 | 18 ms | 18 ms | 35 | 832.6 |" in text
    assert ("| `test_encoder_checksums[fp16]` (2396.0 MB read) | full-random | none | fp16 | 1520 ms | 1500 ms | 3 "
            "| – |") in text
    assert "Some CPU (family/model 25/17, AVX512), 2 cores; torch 2.7.1; 2026-12-05" in text
    assert '-k "encoder"' in text


def test_docs_tables_write_an_evaluate_table_one_row_per_export(docs_tables, tmp_path):
    """tools/docs_tables.py: evaluate reports on the table's manifest become rows in variant order, with bytes,
    NeMo's decisions, agreement, both WERs and both right-context counts; reports on another manifest are left out."""
    page = tmp_path / "page.md"
    page.write_text("<!-- table: evaluate held-out set of sentences -->\n<!-- end table -->\n")
    measured = {"date": "2026-12-05T09:00:00+00:00", "host": {"cpu": "Some CPU", "cpu_family_model": "25/17",
                                                            "cpu_capability": "AVX512", "cores": 2,
                                                            "versions": {"nemo": "3.0.0"}}}

    def report(variant, manifest="held-out set of sentences", identical=1.0):
        return {"manifest": manifest, "compression": variant, "measured": measured,
                "summary": {"files": 16, "package_bytes": 1234567, "decisions_identical": identical,
                            "token_agreement": 0.988, "wer": 0.0414, "nemo_wer": 0.0483},
                "right_context": {"packages": {"clips": 16, "clips_changed": 1, "tokens_changed": 1},
                                  "nemo": {"clips": 16, "clips_changed": 1, "tokens_changed": 1}}}

    reports = [report("int8", identical=15 / 16), report("none"), report("int8", manifest="other")]
    assert docs_tables.rewrite(page, {"benchmarks": []}, reports) == ["evaluate held-out set of sentences"]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ")][1:]
    assert rows == [
        "| none | 1,234,567 B | 16/16 | 98.8 % | 4.1 % | 4.8 % | 1 token, 1/16 clips | 1 token, 1/16 clips |",
        "| int8 | 1,234,567 B | 15/16 | 98.8 % | 4.1 % | 4.8 % | 1 token, 1/16 clips | 1 token, 1/16 clips |"]
    assert "Some CPU (family/model 25/17, AVX512), 2 cores; nemo 3.0.0; 2026-12-05" in page.read_text()


def test_docs_tables_write_the_long_form_and_window_bytes_tables(docs_tables, tmp_path):
    """tools/docs_tables.py: long-form benchmarks become one row per model and way of running (words, words
    differing from NeMo, errors of both); benchmarks recording package bytes one row per model and package, the
    largest first, each package once."""
    page = tmp_path / "page.md"
    page.write_text("<!-- table: long_form -->\n<!-- end table -->\n<!-- table: window_bytes -->\n<!-- end table -->\n")
    host = {"cpu": "Some CPU", "cpu_family_model": "6/207", "cpu_capability": "AVX512", "cores": 2, "versions": {}}
    stats = {"mean": 1.0, "median": 1.0, "rounds": 1}

    def long_form(model, layout, differing):
        return {"name": f"test_long_form_against_nemo_on_the_whole_file[mil-{layout}-{model}]", "stats": stats,
                "extra_info": {"model": model, "layout": layout, "files": 12, "words": 1236, "backend": "mil",
                               "differing_from_nemo": differing, "errors_packages": 5, "errors_nemo": 4,
                               "host": host}}

    encoder = {"multifunction": 2_415_500_000, "largest_window_alone": 2_370_900_000, "separate": 9_416_100_000,
               "versus_one_window": 1.019}
    small = {"multifunction": 3_000_000, "largest_window_alone": 2_000_000, "separate": 6_500_000,
             "versus_one_window": 1.5}
    sized = [{"name": name, "stats": stats, "extra_info": {"model": "full-random", "host": host,
                                                          "bytes": {"encoder": encoder, "preprocessor": small}}}
             for name in ("test_multifunction_package_bytes[full-random]", "test_short_clip_by_window_full_width")]
    run = {"datetime": "2026-12-06T04:00:00", "machine_info": {},
           "benchmarks": [long_form("digits", "65 s window", 0), long_form("digits", "15 s chunks", 4), *sized]}
    assert docs_tables.rewrite(page, run) == ["long_form", "window_bytes"]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| `")]
    assert rows == ["| `digits` | 15 s chunks | 12 | 1,236 | 4 | 5 / 4 |",
                    "| `digits` | 65 s window | 12 | 1,236 | 0 | 5 / 4 |",
                    "| `full-random` | encoder | 2415.5 MB | 2370.9 MB | 9416.1 MB | 1.019 |",
                    "| `full-random` | preprocessor | 3.0 MB | 2.0 MB | 6.5 MB | 1.500 |"]
    assert page.read_text().count("Some CPU (family/model 6/207, AVX512), 2 cores") == 2


def test_docs_tables_write_the_full_width_variant_tables(docs_tables, tmp_path):
    """tools/docs_tables.py: the full-width encoder variant benchmarks become the compression page's rows (bytes,
    distance from NeMo, row, export peak, one call) and the README's (MB, what each is for, mixed, and the windows'
    cost from the full-width multifunction encoder), in variant order whatever the run's order."""
    page = tmp_path / "page.md"
    page.write_text("<!-- table: full_width_variants -->\n<!-- end table -->\n<!-- table: variants -->\n"
                    "<!-- end table -->\n")
    host = {"cpu": "Some CPU", "cpu_family_model": "6/207", "cpu_capability": "AVX512", "cores": 2, "versions": {}}

    def variant(precision, name, size, max_abs, psnr):
        return {"name": f"test_full_width_encoder_variant[{precision}-{name}-mil]",
                "stats": {"mean": 2.5, "median": 2.4, "rounds": 3},
                "extra_info": {"model": "full-random", "backend": "mil", "precision": precision, "variant": name,
                               "encoder_bytes": size, "max_abs": max_abs, "psnr": psnr,
                               "tolerance": "atol=0.05 rtol=0.05, psnr≥30dB", "export_peak_mb": 4710.4,
                               "host": host}}

    windows = {"name": "test_multifunction_package_bytes[full-random]", "stats": {"mean": 0.1, "median": 0.1,
                                                                                  "rounds": 1},
               "extra_info": {"model": "full-random", "host": host, "bytes": {"encoder": {"versus_one_window": 1.019}}}}
    run = {"datetime": "2026-12-06T07:00:00", "machine_info": {},
           "benchmarks": [variant("fp16", "int8", 603_536_794, 0.0491, 49.63), windows,
                          variant("fp32", "none", 2_370_900_000, 1.2e-5, 101.2)]}
    assert docs_tables.rewrite(page, run) == ["full_width_variants", "variants"]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:3] == [
        "| none (fp32) | `--precision fp32` | 2,370,900,000 B | 1.2e-05 / 101.2 dB | atol=0.05 rtol=0.05, psnr≥30dB "
        "| 4.60 GB | 2400 ms |",
        "| int8 (fp16) | `--precision fp16 --compress int8` | 603,536,794 B | 0.0491 / 49.6 dB | "
        "atol=0.05 rtol=0.05, psnr≥30dB | 4.60 GB | 2400 ms |"]
    assert [row.split(" | ")[:3] for row in rows[4:]] == [
        ["| fp32", "`--precision fp32`", "2,371 MB"], ["| int8", "`--precision fp16 --compress int8`", "604 MB"],
        ["| mixed", "`--compress mixed --mixed-plan plan.json`", "per plan"],
        ["| several windows", "`--windows 2.5,5,10,15`", "+1.9 %"]]
    assert page.read_text().count("Some CPU (family/model 6/207, AVX512), 2 cores") == 2


def test_docs_tables_write_the_streaming_corpus_and_custom_vocabulary_tables(docs_tables, tmp_path):
    """tools/docs_tables.py: streaming benchmarks become one row per chunk (quality, latency, compute per audio second,
    the step's median where measured); corpus benchmarks one row per runner, in the runners' order, with the speed-up
    over `--jobs 1` on the same model only; boosted and LM reports one row per setting."""
    page = tmp_path / "page.md"
    page.write_text("<!-- table: streaming -->\n<!-- end table -->\n"
                    "<!-- table: evaluate_corpus -->\n<!-- end table -->\n"
                    "<!-- table: custom vocabulary names -->\n<!-- end table -->\n")
    host = {"cpu": "Some CPU", "cpu_family_model": "6/207", "cpu_capability": "AVX512", "cores": 2, "versions": {}}

    def chunk(seconds, mean, differing):
        return {"name": f"test_streaming_by_chunk[{seconds}]", "stats": {"mean": mean, "median": mean, "rounds": 1},
                "extra_info": {"host": host, "chunk_seconds": seconds, "left_seconds": 10.0, "right_seconds": 2.0,
                               "wer": 0.05, "offline_wer": 0.04, "words_differing_from_offline": differing,
                               "audio_seconds": 30.0, "latency": {"final_mean": 2.1, "final_max": 2.5,
                                                                  "shown_mean": 1.1, "shown_max": 1.4}}}

    def corpus(runner, model, wall, rate, peak):
        return {"name": f"test_evaluate_corpus[{runner}]", "stats": {"mean": wall, "median": wall, "rounds": 1},
                "extra_info": {"host": host, "runner": runner, "model": model, "files": 50, "audio_seconds": 200.0,
                               "steady_rate": rate, "worker_peak_mb": peak}}

    run = {"datetime": "2026-12-06T20:00:00", "machine_info": {}, "benchmarks": [
        chunk(2.0, 2.0, 1), chunk(1.0, 3.0, 3),
        {"name": "test_streaming_step[1.0]", "stats": {"mean": 0.03, "median": 0.029, "rounds": 5},
         "extra_info": {"chunk_seconds": 1.0}},
        corpus("jobs 2", "digits", 25.0, 18.0, None), corpus("jobs 1", "digits", 40.0, 10.0, 2048.0),
        corpus("ray", "full-random", 30.0, 0, 5120.0)]}
    measured = {"date": "2026-12-06T20:00:00+00:00", "host": host}

    def boosted(phrases, boost_alpha, lm, recall, nemo_recall, identical):
        return {"manifest": "names", "compression": "none", "measured": measured,
                "custom_vocabulary": {"phrases": phrases, "boost_alpha": boost_alpha, "lm": lm, "lm_alpha": 0.5},
                "summary": {"files": 10, "decisions_identical": identical, "token_agreement": 1.0, "wer": 0.1,
                            "nemo_wer": 0.125, "phrase_recall": recall, "nemo_phrase_recall": nemo_recall,
                            "phrase_occurrences": 20}}

    reports = [boosted([], 0.0, "names.arpa", 0.7, 0.7, 1.0), boosted(["Ada", "Grace"], 2.0, None, 0.8, None, 0.9)]
    assert docs_tables.rewrite(page, run, reports) == ["streaming", "evaluate_corpus", "custom vocabulary names"]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:3] == ["| 1 / 10 / 2 s | 5.0 % (4.0 %) | 3 | 2.10 / 2.50 s | 1.10 / 1.40 s | 100 ms | 29 ms |",
                         "| 2 / 10 / 2 s | 5.0 % (4.0 %) | 1 | 2.10 / 2.50 s | 1.10 / 1.40 s | 67 ms | – |"]
    assert rows[4:7] == ["| `evaluate --jobs 1` | digits | 50 | 200 s | 40.0 s | 10.0 | 400 | 1.00× | 2.00 GB |",
                         "| `evaluate --jobs 2` | digits | 50 | 200 s | 25.0 s | 18.0 | 222 | 1.80× | – |",
                         "| `evaluate --ray auto` (2 CPUs) | full-random | 50 | 200 s | 30.0 s | – | – | – | "
                         "5.00 GB |"]
    assert rows[8:] == ["| 2 phrases, `--boost-alpha 2` | 80 % of 20 | – | 10.0 % | 12.5 % | 9/10 |",
                        "| LM, `--lm-alpha 0.5` | 70 % of 20 | 70 % of 20 | 10.0 % | 12.5 % | 10/10 |"]
    assert page.read_text().count("Some CPU (family/model 6/207, AVX512), 2 cores") == 3
