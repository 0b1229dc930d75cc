"""The compare report as one self-contained HTML page: structure, escaping, embedded plots, and the atomic write."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from exporters.parity.html import render_html, write_html  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MALICIOUS = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, attrs, parent, [], []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(self.texts) + "".join(child.text() for child in self.children)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, cls: str | None = None) -> list["Node"]:
        return [n for n in self.walk() if n.tag == tag and (cls is None or cls in n.classes)]

    def find(self, tag: str, cls: str | None = None, **attrs) -> "Node":
        matches = [n for n in self.find_all(tag, cls) if all(n.attrs.get(k) == v for k, v in attrs.items())]
        assert len(matches) == 1, f"expected one <{tag}> {cls or ''} {attrs}, found {len(matches)}"
        return matches[0]


class TreeParser(HTMLParser):
    """Collects the page into a small tree of Nodes (attribute values unescaped, as a browser sees them)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.texts.append(data)


def parse(page: str) -> Node:
    parser = TreeParser()
    parser.feed(page)
    parser.close()
    return parser.root


def tiny_png(path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(3, 1.5))
    axis.plot([0, 1, 2], [0, 1, 0.5])
    axis.set_title("max |diff| per frame")
    figure.savefig(path, dpi=60)
    plt.close(figure)
    return path


def sample_report() -> dict:
    return {
        "verdict": "fail",
        "packages_dir": "/tmp/exports/parakeet tdt <v2>",
        "model": "nvidia/parakeet-tdt-0.6b-v2",
        "backend": "mil",
        "clip": "fixtures/audio/clip & noise.wav",
        "generated_at": "2025-01-02T03:04:05+00:00",
        "versions": {"python": "3.11.9", "torch": "2.5.1", "coremltools": "8.1", "nemo": "2.1.0"},
        "export": {"origin": "parakeet-coreml", "window_seconds": 15.0, "windows": [15.0, 30.0],
                   "precision": "fp16", "io_dtype": "fp32", "compressed": {"encoder": "palettize-6bit"},
                   "top_k": 4, "waveform": "framed", "decoder_steps": None, "flexible_inputs": ["audio_signal"]},
        "packages": [
            {"component": "encoder", "path": "/tmp/exports/Encoder.mlpackage",
             "interface": ["output encoded: shape (1, 1024, 188) != contract (1, 1024, 187)",
                           "input length: dtype int64 != contract int32"],
             "judged": True, "skipped_reason": None},
            {"component": "joint", "path": "/tmp/exports/Joint.mlpackage", "interface": [],
             "judged": False, "skipped_reason": "no NeMo reference for a foreign joint"},
        ],
        "diffs": [
            {"component": "preprocessor", "output": "mel", "precision": "fp32", "case": "clip", "max_abs": 1.234567e-4,
             "max_rel": 0.00321, "psnr": 88.8888, "passed": True, "tolerance": "atol 1e-3", "worst_index": [0, 3, 17],
             "excluded": 0},
            {"component": "decoder", "output": "state_h", "precision": "fp16", "case": MALICIOUS,
             "max_abs": 12.5, "max_rel": 3.0, "psnr": None, "passed": False, "tolerance": "atol 5e-2",
             "worst_index": [1, 0, 5], "excluded": 2},
        ],
        "diagnoses": [{"component": "decoder", "cause": "swapped_state",
                       "message": "state_h matches NeMo's state_c: the two states are swapped."}],
        "latency": [{"component": "encoder", "side": "coreml", "mean_s": 0.04213, "stdev_s": 0.0012, "rtf": 0.0028}],
    }


@pytest.fixture
def plot(tmp_path) -> Path:
    return tiny_png(tmp_path / "decoder state.png")


@pytest.fixture
def page(plot, tmp_path) -> Node:
    plots = [("decoder state_h: |diff| per step", plot), ("missing plot", tmp_path / "absent.png")]
    return parse(render_html(sample_report(), plots))


def test_title_and_verdict(page):
    """The title names the verdict and the packages folder; the badge carries the verdict class."""
    title = page.find("title").text()
    assert title == "parakeet-coreml compare: FAIL — /tmp/exports/parakeet tdt <v2>"
    badge = page.find("p", id="verdict")
    assert badge.classes == {"fail"} and badge.text() == "FAIL"
    assert page.find("h1").text() == title


def test_summary_lists_run_and_export(page):
    """The summary table shows the model, backend, clip, export fields and versions."""
    text = page.find("section", id="summary").text()
    for expected in ("nvidia/parakeet-tdt-0.6b-v2", "mil", "clip & noise.wav", "fp16", "encoder: palettize-6bit",
                     "framed", "audio_signal", "coremltools 8.1", "2025-01-02T03:04:05"):
        assert expected in text


def test_gate_rows(page):
    """One tr.diff per diff, in order, classed pass/fail, with 3-significant-digit numbers and a summary line."""
    gates = page.find("section", id="gates")
    rows = gates.find_all("tr", "diff")
    assert [(r.attrs["data-component"], r.attrs["data-output"]) for r in rows] == [("preprocessor", "mel"),
                                                                                 ("decoder", "state_h")]
    assert [r.classes - {"diff"} for r in rows] == [{"pass"}, {"fail"}]
    passing = [c.text() for c in rows[0].find_all("td")]
    failing = [c.text() for c in rows[1].find_all("td")]
    assert passing[4:7] == ["0.000123", "0.00321", "88.9"] and passing[-1] == "ok"
    assert failing[6] == "—" and failing[7] == "2" and failing[-1] == "FAIL"
    assert "1 of 2 comparisons pass" in gates.text()


def test_diagnosis_item(page):
    """Each diagnosis is an li.diagnosis with its cause id and the component in bold."""
    item = page.find("section", id="diagnosis").find("li", "diagnosis")
    assert item.attrs["data-cause"] == "swapped_state"
    assert item.find("b").text() == "decoder"
    assert "the two states are swapped" in item.text()


def test_package_rows(page):
    """Package rows list each interface difference and the skipped reason."""
    section = page.find("section", id="packages")
    encoder = section.find("tr", "package", **{"data-component": "encoder"})
    lines = [li.text() for li in encoder.find_all("li")]
    assert len(lines) == 2 and "dtype int64" in lines[1]
    joint = section.find("tr", "package", **{"data-component": "joint"})
    assert "matches the contract" in joint.text()
    assert "no NeMo reference for a foreign joint" in joint.text()


def test_plot_is_embedded_png(page):
    """The plot is an embedded base64 PNG with its caption; the missing plot file is skipped."""
    figures = page.find("section", id="plots").find_all("figure")
    assert len(figures) == 1
    src = figures[0].find("img").attrs["src"]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
    assert figures[0].find("figcaption").text() == "decoder state_h: |diff| per step"


def test_page_is_self_contained(page):
    """No src/href points outside the page: no http(s), file or path references, no external stylesheet."""
    for node in page.walk():
        for name in ("src", "href"):
            if name in node.attrs:
                assert node.attrs[name].startswith("data:image/png;base64,"), (node.tag, node.attrs[name][:60])
    assert not page.find_all("link") and not page.find_all("script")
    assert page.find_all("style")


def test_user_text_is_escaped(page):
    """A case name holding markup shows up as text, never as a <script> element."""
    assert not page.find_all("script")
    failing = page.find("tr", "fail")
    assert MALICIOUS in failing.text()


def test_passing_report_has_nothing_to_diagnose():
    """A passing report without diagnoses says there is nothing to diagnose and tolerates missing keys."""
    report = {"verdict": "pass", "packages_dir": "out", "diffs": [], "packages": []}
    page = parse(render_html(report, []))
    assert page.find("p", id="verdict").classes == {"pass"}
    assert "Nothing to diagnose" in page.find("section", id="diagnosis").text()
    assert not page.find_all("li", "diagnosis")


def test_failing_report_without_diagnosis():
    """A failing report without diagnoses says no likely cause was identified."""
    page = parse(render_html({"verdict": "fail", "packages_dir": "out"}, []))
    assert "No likely cause was identified" in page.find("section", id="diagnosis").text()


def test_write_html_is_atomic(plot, tmp_path, monkeypatch):
    """write_html leaves only the page behind; a write that fails keeps the old page and leaves no temp file."""
    folder = tmp_path / "report"
    folder.mkdir()
    written = write_html(folder / "compare.html", sample_report(), [("plot", plot)])
    assert written == folder / "compare.html"
    assert sorted(p.name for p in folder.iterdir()) == ["compare.html"]
    before = written.read_text(encoding="utf-8")
    assert parse(before).find("p", id="verdict").text() == "FAIL"

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr("exporters.parity.html.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_html(written, {**sample_report(), "verdict": "pass"}, [])
    assert sorted(p.name for p in folder.iterdir()) == ["compare.html"]
    assert written.read_text(encoding="utf-8") == before
