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
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            files += manifest_files(path)
        else:
            files.append(path)
    return files


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
        try:
            entry = json.loads(line)
            audio = Path(entry["audio_filepath"])
            text = entry["text"] if need_text else entry.get("text")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            wanted = "audio_filepath and text" if need_text else "audio_filepath"
            raise UserError(f"{manifest}:{number}: not a NeMo manifest line with {wanted} ({error!r})") from None
        entries.append((audio if audio.is_absolute() else manifest.parent / audio, text))
    if not entries:
        raise UserError(f"{manifest} lists no audio")
    return entries


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
