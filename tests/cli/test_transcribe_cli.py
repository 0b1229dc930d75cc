"""`parakeet-coreml transcribe`: text and JSON on exported packages; any rate/channels/format; bad audio."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from typer.testing import CliRunner

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.cli import app
from exporters.decoding.transcriber import open_transcriber

runner = CliRunner()
CLIP = FIXTURE_AUDIO_DIR / "short_4s.wav"


def transcribe(packages, audio, *options):
    return runner.invoke(app, ["transcribe", str(audio), "--packages", str(packages), "--backend", "mil",
                               *map(str, options)])


@pytest.fixture(scope="module")
def reference_text(tiny_packages_fp32):
    return open_transcriber(tiny_packages_fp32, "mil").transcribe(load_audio(CLIP, 16000)).text


def test_text_and_json_outputs(tiny_packages_fp32, reference_text):
    """Coverage: plain text equals the transcriber's; --json carries tokens and words with timestamps."""
    plain = transcribe(tiny_packages_fp32, CLIP)
    assert plain.exit_code == 0, plain.output
    assert plain.output.strip() == reference_text
    as_json = json.loads(transcribe(tiny_packages_fp32, CLIP, "--json").output)
    assert as_json["text"] == reference_text
    assert {"token_id", "piece", "frame", "duration", "start", "end"} <= set(as_json["tokens"][0])
    assert as_json["words"] and all(w["start"] <= w["end"] for w in as_json["words"])


def test_fused_path_gives_the_same_text(tiny_packages_fp32, reference_text):
    """Coverage: --fused (mel_encoder + single-step joint_decision) transcribes identically."""
    result = transcribe(tiny_packages_fp32, CLIP, "--fused")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == reference_text


def test_stereo_int16_is_downmixed(tiny_packages_fp32, reference_text, tmp_path):
    """Coverage: a stereo int16 WAV with the clip on both channels transcribes like the mono clip."""
    mono, rate = sf.read(CLIP, dtype="int16")
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mono, mono], axis=1), rate, subtype="PCM_16")
    result = transcribe(tiny_packages_fp32, path)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == reference_text


def test_other_rate_float_flac_is_resampled(tiny_packages_fp32, tmp_path):
    """Coverage: a 44.1 kHz float FLAC is resampled to the model rate; timestamps stay inside the audio."""
    samples = load_audio(CLIP, 16000)
    path = tmp_path / "clip.flac"
    sf.write(path, soxr.resample(samples, 16000, 44100), 44100, subtype="PCM_24")
    result = transcribe(tiny_packages_fp32, path, "--json")
    assert result.exit_code == 0, result.output
    tokens = json.loads(result.output)["tokens"]
    assert tokens and tokens[-1]["start"] <= len(samples) / 16000


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "not found"), ("empty", "is empty"), ("garbage", "cannot read audio"), ("nan", "NaN"),
    ("zero-rate", "cannot read audio"),
])
def test_bad_audio_is_one_line_error(tiny_packages_fp32, tmp_path, kind, fragment, one_line_error):
    """Coverage: missing, empty, unreadable and NaN audio, a WAV header with a zero sample rate (issue 29 item
    6): one error line, non-zero exit."""
    path = tmp_path / f"{kind}.wav"
    if kind == "zero-rate":
        samples = np.zeros(100, np.int16).tobytes()
        header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(samples), b"WAVE", b"fmt ", 16, 1, 1, 0, 0, 2,
                             16, b"data", len(samples))
        path.write_bytes(header + samples)
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "garbage":
        path.write_bytes(b"RIFF not really a wave file")
    elif kind == "nan":
        sf.write(path, np.array([0.1, np.nan, 0.2] * 1000, np.float32), 16000, subtype="FLOAT")
    one_line_error(transcribe(tiny_packages_fp32, path), fragment)


def test_packages_dir_without_metadata(tmp_path, one_line_error):
    """Coverage: a directory that is not an export: one error line."""
    one_line_error(transcribe(tmp_path, CLIP), "metadata.json")


@pytest.mark.parametrize("option, value, fragment", [("--backend", "npu", "unknown backend 'npu'"),
                                                     ("--joint-mode", "beam", "unknown joint mode 'beam'")])
def test_unknown_backend_or_joint_mode(tiny_packages_fp32, option, value, fragment, one_line_error):
    """Coverage: an unknown --backend or --joint-mode is one line naming the choices."""
    result = runner.invoke(app, ["transcribe", str(CLIP), "--packages", str(tiny_packages_fp32), option, value])
    one_line_error(result, fragment, "choose one of")


def test_many_files_folder_and_manifest_give_json_lines(tiny_packages_fp32, reference_text, tmp_path):
    """Coverage: files, a folder and a NeMo manifest in one run: one JSON record per file (text, tokens, words,
    duration, rtf); a bad file gets its error in its own record, the others go on, and the exit code is 1."""
    folder = tmp_path / "folder"
    folder.mkdir()
    sf.write(folder / "a.wav", load_audio(CLIP, 16000), 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"audio_filepath": "folder/a.wav", "duration": 4.0, "text": "x"}) + "\n")
    result = transcribe(tiny_packages_fp32, CLIP, tmp_path / "broken.wav", folder, manifest)
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["audio_filepath"]).name for r in records] == ["short_4s.wav", "broken.wav", "a.wav", "a.wav"]
    good = [r for r in records if "error" not in r]
    assert [r["text"] for r in good] == [reference_text] * 3
    assert all(r["tokens"] and r["words"] and r["duration"] == pytest.approx(4.0, abs=0.5) and r["rtf"] > 0
               for r in good)
    assert "cannot read audio" in records[1]["error"]


def test_all_good_files_exit_zero(tiny_packages_fp32, tmp_path):
    """Coverage: a run in which every file transcribes exits 0 with one record each."""
    result = transcribe(tiny_packages_fp32, CLIP, CLIP)
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if line.startswith("{")]) == 2


@pytest.mark.parametrize("options, message", [
    (["--chunk-seconds", "12", "--left-context-seconds", "4"], "exceeds the package window"),
    (["--chunk-seconds", "0"], "at least one encoder frame"),
    (["--chunk-seconds", "nan"], "--chunk-seconds nan: give a finite number"),
    (["--chunk-seconds", "inf"], "--chunk-seconds inf: give a finite number"),
    (["--left-context-seconds", "nan"], "--left-context-seconds nan: give a finite number"),
    (["--right-context-seconds", "-1"], "--right-context-seconds -1: give a finite number of seconds, not negative"),
])
def test_chunking_that_does_not_fit_is_one_line(tiny_packages_fp32, options, message):
    """Coverage: chunk + contexts larger than the window, an empty chunk, lengths that are not finite or are
    negative (issue 29 item 6) fail with one line, exit 2."""
    result = transcribe(tiny_packages_fp32, CLIP, *options)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_bad_manifest_line_is_one_line(tiny_packages_fp32, tmp_path):
    """Coverage: a manifest line without audio_filepath fails the run with one line naming the line."""
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"text": "no path"}\n')
    result = transcribe(tiny_packages_fp32, manifest)
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output


@pytest.mark.parametrize("kind", ["empty-folder", "folder-of-text", "directory-named-wav"])
def test_a_folder_without_audio_is_one_line(tiny_packages_fp32, tmp_path, kind, one_line_error):
    """Coverage: a folder holding no audio, or a directory named like a WAV file, is one line and exit 2 instead
    of printing nothing and exiting 0 (issue 35 item 8)."""
    folder = tmp_path / ("x.wav" if kind == "directory-named-wav" else "audio")
    folder.mkdir()
    if kind == "folder-of-text":
        (folder / "notes.txt").write_text("no audio here")
    one_line_error(transcribe(tiny_packages_fp32, folder), "is a folder without audio")


@pytest.mark.parametrize("kind, fragment", [("fifo", "is not a regular file (a FIFO)"),
                                            ("device", "is not a regular file (a device or other file)")])
def test_audio_that_is_not_a_regular_file_is_said_so(tiny_packages_fp32, tmp_path, kind, fragment, one_line_error):
    """Coverage: a FIFO (never opened, so nothing blocks on it) or /dev/zero given as audio: "not a regular
    file", not "not found" (issue 35 item 10)."""
    path = tmp_path / "pipe.wav" if kind == "fifo" else Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(path)
    one_line_error(transcribe(tiny_packages_fp32, path), fragment)


def test_names_longer_than_the_filesystem_allows(tiny_packages_fp32, tmp_path, one_line_error):
    """Coverage: an audio name over 255 bytes is one line alone, and in a manifest it gets its error record while
    the other files are transcribed (issue 35 item 6)."""
    long_name = tmp_path / ("a" * 300 + ".wav")
    one_line_error(transcribe(tiny_packages_fp32, long_name), "audio file name too long")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(long_name)}) + "\n"
                        + json.dumps({"audio_filepath": str(CLIP)}) + "\n")
    result = transcribe(tiny_packages_fp32, manifest)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "too long" in records[0]["error"] and "text" in records[1]


@pytest.mark.parametrize("command", ["transcribe", "evaluate"])
def test_joint_mode_help_names_every_mode(command):
    """Coverage: --joint-mode's help names every mode the option accepts (it left out decode_step) (issue 35
    item 10)."""
    from exporters.decoding.transcriber import JOINT_MODES

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    help_text = " ".join(result.output.split())
    option = help_text[help_text.index("--joint-mode"):][:300]
    assert all(mode in option for mode in JOINT_MODES), option
