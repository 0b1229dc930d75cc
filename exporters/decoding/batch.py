"""Many files in one run: inputs from paths, folders and NeMo manifests; one JSON record per file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from exporters.audio import load_audio
from exporters.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac")
MANIFEST_SUFFIXES = (".json", ".jsonl")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Audio files in order: a folder gives its .wav/.flac files (recursively, sorted), a NeMo JSON-lines
    manifest its `audio_filepath` entries (relative to the manifest's folder), anything else itself."""
    files: list[Path] = []
    for path in paths:
        if is_folder(path):
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path} is a folder without audio (no {' or '.join(AUDIO_SUFFIXES)} files in it)")
            files += found
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            files += manifest_files(path)
        else:
            files.append(path)
    return files


def is_folder(path: Path) -> bool:
    """Path.is_dir, False for a name the filesystem cannot hold (Python raises ENAMETOOLONG; loading the file
    later says so in one line)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def manifest_files(manifest: Path) -> list[Path]:
    return [audio for audio, _ in read_manifest(manifest)]


def read_manifest(manifest: Path, need_text: bool = False) -> list[tuple[Path, str | None]]:
    """(audio path, reference text or None) per line of a NeMo JSON-lines manifest; relative audio paths
    count from the manifest's folder."""
    if not manifest.is_file():
        raise UserError(f"manifest not found: {manifest}")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{manifest} is not UTF-8 text (byte {error.start}): a NeMo manifest is UTF-8 JSON lines") \
            from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        audio, text = manifest_line(line, need_text, f"{manifest}:{number}")
        entries.append((audio if audio.is_absolute() else manifest.parent / audio, text))
    if not entries:
        raise UserError(f"{manifest} lists no audio")
    return entries


def manifest_line(line: str, need_text: bool, where: str) -> tuple[Path, str | None]:
    """One manifest line's audio path and text; one line naming the field that is missing or of the wrong
    type."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{where}: a manifest line is a JSON object, not {type(entry).__name__}")
    fields = ("audio_filepath", "text") if need_text else ("audio_filepath",)
    for field in fields:
        if field not in entry:
            raise UserError(f"{where}: no {field!r} field" + (" (the reference text)" if field == "text" else ""))
        if not isinstance(entry[field], str) or (field == "audio_filepath" and not entry[field]):
            found = "null" if entry[field] is None else type(entry[field]).__name__
            raise UserError(f"{where}: {field!r} must be a{' non-empty' if field == 'audio_filepath' else ''} "
                            f"string, not {found}")
    text = entry.get("text")
    return Path(entry["audio_filepath"]), text if isinstance(text, str) else None


def file_record(transcriber, path: Path) -> dict:
    """One file's JSON record: text, tokens, words, duration and real-time factor, or its error."""
    try:
        samples = load_audio(path, transcriber.contract.model.sample_rate)
        started = time.perf_counter()
        transcript = transcriber.transcribe(samples)
        seconds = time.perf_counter() - started
    except UserError as error:
        return {"audio_filepath": str(path), "error": str(error)}
    duration = len(samples) / transcriber.contract.model.sample_rate
    return {"audio_filepath": str(path), **transcript.to_dict(), "duration": duration, "rtf": seconds / duration}
