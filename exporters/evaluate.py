"""`evaluate`: what users see, on a manifest: WER/CER, agreement with NeMo's decisions, speed, bytes.

The system under test is either an export directory (the packages, decoded by the Transcriber) or a
NeMo model itself (`transcribe()` on each file alone). For packages, the reference decisions are NeMo
`transcribe()` on each file alone, by the model recorded in metadata.json (checked by checksum).

Agreement with NeMo, per file and in total:
- decisions_identical: token ids, frames and durations all equal NeMo's;
- token agreement: 1 - (token edit distance / NeMo's token count), the edits counted by jiwer over
  token ids as words;
- duration agreement: of the tokens that alignment pairs as equal, the share whose duration is NeMo's.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from exporters.audio import FIXTURE_AUDIO_DIR, held_out_entries, load_audio
from exporters.decoding.batch import read_manifest
from exporters.decoding.chunking import samples_per_frame
from exporters.decoding.language_lock import WORD_BOUNDARY
from exporters.errors import UserError
from exporters.interrupts import counting, one_done
from exporters.wer import char_error_rate, normalize_text, word_error_rate


@dataclass(frozen=True)
class Decisions:
    text: str
    tokens: list[int]
    frames: list[int]
    durations: list[int]


@dataclass
class FileResult:
    audio_filepath: str
    reference: str
    hypothesis: str
    seconds: float
    decode_seconds: float
    wer: float
    cer: float
    decisions_identical: bool | None = None
    token_edits: int | None = None
    nemo_tokens: int | None = None
    durations_equal: int | None = None
    tokens_paired: int | None = None
    nemo_hypothesis: str | None = None


# Encoder frames just before a cut see the new audio through convolutions and subsampling: tokens there
# may move; only tokens at least this many frames before the cut are checked.
GUARD_FRAMES = 2


@dataclass(frozen=True)
class RightContext:
    """How often tokens before a point change when only the audio after it changes: per clip, the audio
    from the start of the word nearest its middle (NeMo's decisions say where words start) is replaced
    by the next clip's audio (same length). A token is counted as changed when a token
    emitted GUARD_FRAMES or more before the cut has no equal partner (jiwer alignment) among the altered
    clip's tokens before the cut."""

    clips: int
    clips_changed: int
    tokens_changed: int


def spliced(clip: np.ndarray, other: np.ndarray, cut: int) -> np.ndarray:
    """clip up to `cut`, then `other` (repeated if short) to clip's length."""
    tail = np.resize(other, len(clip) - cut)
    return np.concatenate([clip[:cut], tail]).astype(np.float32)


def word_start_cut(tokens: list[int], frames: list[int], starts_word, middle_frame: int) -> int:
    """The frame of the word-initial token (not the first word) nearest `middle_frame`, else that frame."""
    candidates = [frame for index, (token, frame) in enumerate(zip(tokens, frames)) if index and starts_word(token)]
    return min(candidates, key=lambda frame: abs(frame - middle_frame)) if candidates else middle_frame


def right_context_flips(decide, clips: list[np.ndarray], cut_frames: list[int], frame_samples: int) -> RightContext:
    """`decide(list of clips)` -> per clip (tokens, frames, durations); clips cut at `cut_frames`."""
    changed = [spliced(clip, clips[(i + 1) % len(clips)], frame * frame_samples)
               for i, (clip, frame) in enumerate(zip(clips, cut_frames))]
    counts = []
    for (tokens, frames, _), (new_tokens, new_frames, _), cut in zip(decide(clips), decide(changed), cut_frames):
        early = [token for token, frame in zip(tokens, frames) if frame < cut - GUARD_FRAMES]
        after = [token for token, frame in zip(new_tokens, new_frames) if frame < cut]
        counts.append(len(early) - matched_tokens(early, after))
    return RightContext(len(clips), sum(c > 0 for c in counts), sum(counts))


def token_words(tokens: list[int]) -> str:
    return " ".join(f"t{token}" for token in tokens)


def matched_tokens(reference: list[int], hypothesis: list[int]) -> int:
    """Tokens of `reference` that jiwer's alignment pairs with an equal token of `hypothesis`."""
    if not reference or not hypothesis:
        return 0
    return jiwer.process_words(token_words(reference), token_words(hypothesis)).hits


def nemo_cut_frames(references: list[Decisions], clips: list[np.ndarray], tokenizer, frame_samples: int) -> list[int]:
    """Per clip, where its right-context check cuts: the start of the word nearest the middle, by NeMo."""
    starts_word = lambda token: tokenizer.id_to_piece(int(token)).startswith(WORD_BOUNDARY)  # noqa: E731
    return [word_start_cut(ref.tokens, ref.frames, starts_word, len(clip) // 2 // frame_samples)
            for ref, clip in zip(references, clips)]


def phrase_hits(phrases: tuple[str, ...], references: list[str], hypotheses: list[str]) -> tuple[int, int]:
    """(occurrences of the phrases in the references, how many of them the hypotheses hold too): per file and
    phrase, the smaller count of whole-word matches, over normalized texts."""
    patterns = [re.compile(rf"(?<!\S){re.escape(normalize_text(phrase))}(?!\S)") for phrase in phrases]
    occurring = recalled = 0
    for reference, hypothesis in zip(references, hypotheses):
        for pattern in patterns:
            wanted = len(pattern.findall(normalize_text(reference)))
            occurring += wanted
            recalled += min(wanted, len(pattern.findall(normalize_text(hypothesis))))
    return occurring, recalled


@dataclass
class Report:
    system: str
    manifest: str
    files: list[FileResult]
    package_bytes: dict[str, int] = field(default_factory=dict)
    compression: str | None = None
    right_context: dict[str, RightContext] = field(default_factory=dict)  # system -> flips
    errors: list[dict] = field(default_factory=list)  # files not evaluated: audio_filepath, error
    fusion: object = None  # the custom vocabulary decoded with (exporters.decoding.fusion.Fusion), if any

    @property
    def summary(self) -> dict:
        refs, hyps = [f.reference for f in self.files], [f.hypothesis for f in self.files]
        audio = sum(f.seconds for f in self.files)
        decode = sum(f.decode_seconds for f in self.files)
        summary = {"files": len(self.files), "unreadable_files": len(self.errors), "audio_seconds": round(audio, 3),
                   "wer": word_error_rate(refs, hyps), "cer": char_error_rate(refs, hyps),
                   "rtfx": audio / decode if decode else None,
                   "package_bytes": sum(self.package_bytes.values()) or None}
        compared = [f for f in self.files if f.decisions_identical is not None]
        if compared:
            nemo_tokens = sum(f.nemo_tokens for f in compared)
            paired = sum(f.tokens_paired for f in compared)
            summary |= {
                "decisions_identical": sum(f.decisions_identical for f in compared) / len(compared),
                "token_agreement": 1 - sum(f.token_edits for f in compared) / max(nemo_tokens, 1),
                "duration_agreement": sum(f.durations_equal for f in compared) / paired if paired else 1.0,
                "nemo_wer": word_error_rate([f.reference for f in compared], [f.nemo_hypothesis for f in compared]),
            }
        if self.fusion is not None and self.fusion.phrases:
            occurring, recalled = phrase_hits(self.fusion.phrases, refs, hyps)
            summary |= {"phrase_occurrences": occurring, "phrase_recall": recalled / occurring if occurring else None}
            if compared:
                _, nemo_recalled = phrase_hits(self.fusion.phrases, refs, [f.nemo_hypothesis for f in compared])
                summary["nemo_phrase_recall"] = nemo_recalled / occurring if occurring else None
        return summary

    def to_dict(self) -> dict:
        from datetime import datetime, timezone

        from exporters.host import host_description

        return {"system": self.system, "manifest": self.manifest, "compression": self.compression,
                "measured": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "host": host_description()},
                "custom_vocabulary": None if self.fusion is None else self.fusion.describe(),
                "package_bytes": self.package_bytes, "summary": self.summary,
                "right_context": {name: asdict(flips) for name, flips in self.right_context.items()},
                "files": [asdict(f) for f in self.files], "errors": self.errors}


def held_out_manifest(model_name: str) -> list[tuple[Path, str]]:
    """The held-out clips of a trained model (fixtures/audio/<model>/) as manifest entries."""
    if not (FIXTURE_AUDIO_DIR / model_name / "transcripts.json").is_file():
        raise UserError(f"no held-out set for model {model_name!r} (trained models have one: digits, sentences); "
                        "pass --manifest")
    return held_out_entries(model_name)


def manifest_entries(manifest: Path | None, model_name: str) -> tuple[str, list[tuple[Path, str]]]:
    if manifest is not None:
        return str(manifest), read_manifest(Path(manifest), need_text=True)
    return f"held-out set of {model_name}", held_out_manifest(model_name)


def nemo_decisions(model, paths: list[Path]) -> list[tuple[Decisions, float]]:
    """NeMo transcribe() on each file alone (batch of 1), with the seconds each took."""
    results = []
    with nemo_errors_only():
        counting(len(paths), "decoded by NeMo")
        for path in paths:
            results.append(nemo_file_decisions(model, path))
            one_done()
    return results


def nemo_file_decisions(model, path: Path) -> tuple[Decisions, float]:
    """NeMo transcribe() on one file alone, and the seconds it took."""
    from exporters.reference import hypothesis_decisions, nemo_transcribe

    started = time.perf_counter()
    (hypothesis,) = nemo_transcribe(model, [str(path)], batch_size=1, timestamps=True, return_hypotheses=True)
    return Decisions(hypothesis.text, *hypothesis_decisions(hypothesis)), time.perf_counter() - started


@contextlib.contextmanager
def nemo_errors_only():
    """Drop NeMo's log records below ERROR: transcribe() raises its own verbosity to WARNING while it runs,
    and its dataloader then warns once per file."""
    import logging

    logger = logging.getLogger("nemo_logger")
    keep = lambda record: record.levelno >= logging.ERROR  # noqa: E731
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def agreement(ours: Decisions, nemo: Decisions) -> dict:
    """Token edits against NeMo's token sequence, and duration equality on the tokens aligned as equal."""
    identical = (ours.tokens, ours.frames, ours.durations) == (nemo.tokens, nemo.frames, nemo.durations)
    if not nemo.tokens or not ours.tokens:
        edits = max(len(nemo.tokens), len(ours.tokens))
        return {"decisions_identical": identical, "token_edits": edits, "nemo_tokens": len(nemo.tokens),
                "durations_equal": 0, "tokens_paired": 0}
    output = jiwer.process_words(token_words(nemo.tokens), token_words(ours.tokens))
    pairs = [(i, j) for chunk in output.alignments[0] if chunk.type == "equal"
             for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx))]
    return {"decisions_identical": identical,
            "token_edits": output.substitutions + output.deletions + output.insertions,
            "nemo_tokens": len(nemo.tokens),
            "durations_equal": sum(nemo.durations[i] == ours.durations[j] for i, j in pairs),
            "tokens_paired": len(pairs)}


def file_result(path: Path, reference: str, decisions: Decisions, seconds: float, decode_seconds: float,
                nemo: Decisions | None) -> FileResult:
    result = FileResult(str(path), reference, decisions.text, seconds, decode_seconds,
                        word_error_rate([reference], [decisions.text]), char_error_rate([reference], [decisions.text]))
    if nemo is not None:
        for key, value in agreement(decisions, nemo).items():
            setattr(result, key, value)
        result.nemo_hypothesis = nemo.text
    return result


@dataclass
class NemoReference:
    """NeMo on a manifest, each file alone: its decisions and seconds, the right-context cut of each clip,
    and (if asked) NeMo's own right-context flips."""

    name: str
    entries: list[tuple[Path, str]]
    clips: list[np.ndarray]
    decisions: list[Decisions]
    seconds: list[float]
    cuts: list[int]
    right_context: RightContext | None = None
    errors: list[dict] = field(default_factory=list)  # entries whose audio could not be read


def nemo_reference(model, name: str, entries: list[tuple[Path, str]], right_context: bool = False) -> NemoReference:
    from exporters.inspect_model import inspect_model
    from exporters.reference import NemoGreedy

    spec = inspect_model(model)
    entries, clips, errors = readable_entries(name, entries, spec.sample_rate)
    decided = nemo_decisions(model, [path for path, _ in entries])
    decisions = [d for d, _ in decided]
    frame_samples = samples_per_frame(spec)
    cuts = nemo_cut_frames(decisions, clips, model.tokenizer.tokenizer, frame_samples)
    flips = right_context_flips(lambda batch: NemoGreedy(model, batch).decide(), clips, cuts, frame_samples) \
        if right_context else None
    return NemoReference(name, entries, clips, decisions, [seconds for _, seconds in decided], cuts, flips, errors)


def readable_entries(name: str, entries: list[tuple[Path, str]], sample_rate: int):
    """The entries whose audio reads, their clips, and an error record for each of the others."""
    kept, clips, errors = [], [], []
    for path, text in entries:
        try:
            clips.append(load_audio(path, sample_rate))
            kept.append((path, text))
        except UserError as error:
            errors.append({"audio_filepath": str(path), "error": str(error)})
    if not kept:
        raise UserError(f"no audio in {name} could be read ({errors[0]['error']})")
    return kept, clips, errors


def evaluate_packages(packages_dir: Path, manifest: Path | None = None, backend: str | None = None,
                      joint_mode: str | None = None, right_context: bool = False,
                      reference: NemoReference | None = None, model_source: str | None = None,
                      mapping: dict | None = None, fusion=None) -> Report:
    """The packages on a manifest (default: the held-out set of the export's trained model), each file
    also decoded by NeMo for agreement (`reference`: NeMo's results, if already computed). Any converter's
    export directory is evaluated with `model_source`, the checkpoint it came from; `fusion` (custom
    vocabulary) decodes with it, NeMo too."""
    from exporters.decoding.transcriber import view_transcriber
    from exporters.export_view import open_export
    from exporters.reference import nemo_fusion

    view = open_export(packages_dir, model_source, mapping)
    transcriber = view_transcriber(view, backend, joint_mode, command="evaluate", fusion=fusion)
    if reference is None or (right_context and reference.right_context is None):
        name, entries = manifest_entries(manifest, view.model_source)
        with nemo_fusion(view.model, fusion):
            reference = nemo_reference(view.model, name, entries, right_context)
    files = []
    counting(len(reference.entries), "decoded by the packages")
    for (path, text), samples, nemo in zip(reference.entries, reference.clips, reference.decisions):
        files.append(packages_result(transcriber, path, text, samples, nemo))
        one_done()
    used, compression = used_bytes(view, transcriber)
    report = Report(str(packages_dir), reference.name, files, used, compression, errors=reference.errors,
                    fusion=fusion)
    if right_context:
        decide = lambda batch: [transcriber.transcribe(clip).decisions() for clip in batch]  # noqa: E731
        report.right_context = {
            "packages": right_context_flips(decide, reference.clips, reference.cuts, transcriber.frame_samples),
            "nemo": reference.right_context}
    return report


def packages_result(transcriber, path: Path, text: str, samples: np.ndarray, nemo: Decisions) -> FileResult:
    """One file decoded by the packages, timed, against NeMo's decisions on it."""
    started = time.perf_counter()
    transcript = transcriber.transcribe(samples)
    decode = time.perf_counter() - started
    return file_result(path, text, Decisions(transcript.text, *transcript.decisions()),
                       len(samples) / transcriber.contract.model.sample_rate, decode, nemo)


def used_bytes(view, transcriber) -> tuple[dict[str, int], str]:
    """The bytes of each package the transcriber uses, and the export's compression variants ("none")."""
    used = {name: package_bytes(view.packages[name].path) for name in transcriber.runtimes}
    return used, ",".join(sorted(set(view.compressed.values()))) or "none"


def package_bytes(path: Path) -> int:
    """A package's size on disk: every file in it."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def evaluate_nemo(model_source: str, manifest: Path | None = None, model=None, right_context: bool = False,
                  fusion=None) -> Report:
    """NeMo itself on a manifest (default: the model's held-out set): transcribe() per file alone (with the
    custom vocabulary `fusion`, if any)."""
    from exporters.checkpoints import load_model
    from exporters.reference import nemo_fusion

    name, entries = manifest_entries(manifest, model_source)
    model = model if model is not None else load_model(model_source)
    with nemo_fusion(model, fusion):
        reference = nemo_reference(model, name, entries, right_context)
    sample_rate = int(model.cfg.preprocessor.sample_rate)
    files = [file_result(path, text, decisions, len(clip) / sample_rate, seconds, None)
             for (path, text), clip, decisions, seconds
             in zip(reference.entries, reference.clips, reference.decisions, reference.seconds)]
    report = Report(f"NeMo {model_source}", name, files, errors=reference.errors, fusion=fusion)
    if right_context:
        report.right_context = {"nemo": reference.right_context}
    return report


class Evaluation:
    """One worker's side of `evaluate` over many files: the packages' transcriber (none when NeMo itself is
    evaluated) and the NeMo model with the custom vocabulary set, opened once; `record` decodes one file with
    both, alone, as its FileResult record (or an error record)."""

    def __init__(self, packages_dir: Path | None, model_source: str | None, mapping: dict | None,
                 backend: str | None, joint_mode: str | None, fusion):
        from exporters.checkpoints import load_model
        from exporters.reference import nemo_fusion

        self.transcriber, self.package_bytes, self.compression = None, {}, None
        if packages_dir is not None:
            from exporters.decoding.transcriber import view_transcriber
            from exporters.export_view import open_export

            view = open_export(packages_dir, model_source, mapping)
            self.transcriber = view_transcriber(view, backend, joint_mode, command="evaluate", fusion=fusion)
            self.model, self.system = view.model, str(packages_dir)
            self.package_bytes, self.compression = used_bytes(view, self.transcriber)
            self.model_source = view.model_source
        else:
            self.model, self.system, self.model_source = load_model(model_source), f"NeMo {model_source}", model_source
        self.sample_rate = int(self.model.cfg.preprocessor.sample_rate)
        self.settings = contextlib.ExitStack()
        self.settings.enter_context(nemo_fusion(self.model, fusion))
        self.settings.enter_context(nemo_errors_only())

    def describe(self) -> dict:
        return {"system": self.system, "model_source": self.model_source, "package_bytes": self.package_bytes,
                "compression": self.compression}

    def record(self, path: Path, text: str) -> dict:
        try:
            samples = load_audio(path, self.sample_rate)
        except UserError as error:
            return {"audio_filepath": str(path), "error": str(error)}
        nemo, nemo_seconds = nemo_file_decisions(self.model, path)
        if self.transcriber is None:
            return asdict(file_result(path, text, nemo, len(samples) / self.sample_rate, nemo_seconds, None))
        return asdict(packages_result(self.transcriber, path, text, samples, nemo))

    def close(self) -> None:
        self.settings.close()


def report_from_records(description: dict, manifest: str, records: list[dict], fusion=None) -> Report:
    """The report of an evaluation made file by file (exporters.corpus): totals over every record."""
    files = [FileResult(**{k: v for k, v in r.items() if k in FileResult.__dataclass_fields__})
             for r in records if "error" not in r]
    errors = [{"audio_filepath": r["audio_filepath"], "error": r["error"]} for r in records if "error" in r]
    return Report(description["system"], manifest, files, description["package_bytes"], description["compression"],
                  errors=errors, fusion=fusion)


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """(measure, value) rows for the CLI table."""
    summary = report.summary
    rows = [("files", str(summary["files"])), ("audio seconds", f"{summary['audio_seconds']:.1f}"),
            ("WER", f"{summary['wer']:.2%}"), ("CER", f"{summary['cer']:.2%}")]
    if summary["unreadable_files"]:
        rows.append(("files not read (see errors)", str(summary["unreadable_files"])))
    for key, label in (("decisions_identical", "files with NeMo's decisions"),
                       ("token_agreement", "token agreement with NeMo"),
                       ("duration_agreement", "duration agreement with NeMo")):
        if key in summary:
            rows.append((label, f"{summary[key]:.2%}"))
    if summary.get("phrase_occurrences"):
        rows.append(("phrase recall", f"{summary['phrase_recall']:.2%} of {summary['phrase_occurrences']}"))
    if summary["rtfx"]:
        rows.append(("RTFx", f"{summary['rtfx']:.1f}"))
    if summary["package_bytes"]:
        rows.append(("package bytes", f"{summary['package_bytes']:,}"))
    for system, flips in report.right_context.items():
        rows.append((f"right-context flips ({system})",
                     f"{flips.clips_changed} of {flips.clips} clips, {flips.tokens_changed} tokens"))
    return rows

