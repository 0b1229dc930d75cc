"""Synthesize a small spoken-digits data set with espeak-ng (+ sox) and write NeMo manifests.

    uv run python training/make_digits_data.py [OUT_DIR] [--train N] [--test N] [--write-fixtures]

OUT_DIR defaults to <cache>/digits-data (cache: PARAKEET_COREML_CACHE or ~/.cache/parakeet-coreml).
Writes OUT_DIR/{train,test}/NNNNN.wav (16 kHz mono 16-bit) and OUT_DIR/{train,test}_manifest.json
(JSON lines: audio_filepath, duration, text). Seeded: the same arguments give the same files.

--write-fixtures also copies the held-out clips FIXTURE_CLIPS into fixtures/audio/digits/ with their
texts in transcripts.json (what tests/checkpoints/test_trained_models.py reads).

Held-out clips differ from training in two ways: no held-out digit sequence occurs in training, and
every held-out clip uses a (voice, variant) pair that no training clip uses (each voice and each
variant on its own is seen in training).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from exporters.checkpoints import REPO_ROOT, cache_dir  # noqa: E402

SEED = 20251126
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["", "+m1", "+m3", "+m7", "+f1", "+f2", "+f3", "+f4"]
SPEEDS = (130, 190)  # words per minute
PITCHES = (25, 75)  # espeak-ng -p, 0..99
MAX_WORDS = 5
MAX_SECONDS = 3.0
SAMPLE_RATE = 16000
FIXTURE_CLIPS = (0, 1, 3, 5, 26)  # held-out indices: five different voices, 1 to 5 words
FIXTURE_DIR = REPO_ROOT / "fixtures" / "audio" / "digits"


def voice_split(rng: random.Random) -> tuple[list[str], list[str]]:
    """Hold out one variant per voice (a Latin-square pick), so every voice and variant is still trained."""
    pairs = list(itertools.product(VOICES, VARIANTS))
    offset = rng.randrange(len(VARIANTS))
    held = {(v, VARIANTS[(i + offset) % len(VARIANTS)]) for i, v in enumerate(VOICES)}
    train = [v + var for v, var in pairs if (v, var) not in held]
    test = [v + var for v, var in pairs if (v, var) in held]
    return train, test


def random_sequence(rng: random.Random) -> tuple[str, ...]:
    return tuple(rng.choice(DIGITS) for _ in range(rng.randint(1, MAX_WORDS)))


def synthesize(text: str, voice: str, speed: int, pitch: int, out: Path) -> float:
    """espeak-ng → sox (16 kHz mono 16-bit); returns the clip's duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw.name,
                        text], check=True)
        subprocess.run(["sox", "-V1", "-D", "-G", raw.name, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                        str(out)], check=True)
    info = soundfile.info(str(out))
    return info.frames / info.samplerate


def make_split(name: str, count: int, voices: list[str], forbidden: set, rng: random.Random,
               out_dir: Path) -> set:
    """Synthesize `count` clips with sequences not in `forbidden`; returns the sequences used."""
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    used: set = set()
    rows = []
    while len(rows) < count:
        sequence = random_sequence(rng)
        if sequence in forbidden or (name == "test" and sequence in used):
            continue
        voice, speed, pitch = rng.choice(voices), rng.randint(*SPEEDS), rng.randint(*PITCHES)
        text = " ".join(sequence)
        wav = out_dir / name / f"{len(rows):05d}.wav"
        duration = synthesize(text, voice, speed, pitch, wav)
        if duration > MAX_SECONDS:
            wav.unlink()
            continue
        used.add(sequence)
        rows.append({"audio_filepath": str(wav.resolve()), "duration": round(duration, 4), "text": text,
                     "voice": voice, "speed": speed, "pitch": pitch})
    with open(out_dir / f"{name}_manifest.json", "w") as manifest:
        for row in rows:
            manifest.write(json.dumps(row) + "\n")
    return used


def write_fixtures(out_dir: Path) -> None:
    """Copy FIXTURE_CLIPS of the held-out split into the repository, with their texts and provenance."""
    rows = [json.loads(line) for line in (out_dir / "test_manifest.json").read_text().splitlines()]
    copy_fixture_clips(rows, FIXTURE_CLIPS, FIXTURE_DIR, ("text", "voice", "speed", "pitch", "duration"),
                       "training/make_digits_data.py")


def copy_fixture_clips(rows: list[dict], indices, folder: Path, keys: tuple[str, ...], recipe: str) -> None:
    """Held-out clips `indices` as folder/heldout_NNNNN.wav, with `keys` of each row in transcripts.json."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    for index in indices:
        name = f"heldout_{index:05d}.wav"
        shutil.copyfile(rows[index]["audio_filepath"], folder / name)
        clips[name] = {key: rows[index][key] for key in keys}
    note = f"Held-out clips of {recipe} (--write-fixtures); never seen in training."
    (folder / "transcripts.json").write_text(json.dumps({"note": note, "clips": clips}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=cache_dir() / "digits-data")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--write-fixtures", action="store_true",
                        help=f"copy held-out clips {FIXTURE_CLIPS} to {FIXTURE_DIR.relative_to(REPO_ROOT)}")
    args = parser.parse_args()
    rng = random.Random(SEED)
    train_voices, test_voices = voice_split(rng)
    # Held-out sequences are drawn first, so training can avoid all of them.
    test_sequences = make_split("test", args.test, test_voices, set(), rng, args.out_dir)
    make_split("train", args.train, train_voices, test_sequences, rng, args.out_dir)
    print(f"wrote {args.train} train + {args.test} test clips to {args.out_dir}")
    print(f"held-out voices: {' '.join(test_voices)}")
    if args.write_fixtures:
        write_fixtures(args.out_dir)
        print(f"copied held-out clips {FIXTURE_CLIPS} to {FIXTURE_DIR}")


if __name__ == "__main__":
    main()
