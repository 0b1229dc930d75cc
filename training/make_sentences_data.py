"""Synthesize the `sentences` data set: self-written sentences spoken by espeak-ng, NeMo manifests.

    uv run python training/make_sentences_data.py [OUT_DIR] [--train N] [--test N] [--write-fixtures]

Extends the digits recipe (`make_digits_data.py`: same voices, variants, synthesis and held-out
voice split) to sentences from `sentence_corpus.py`, clips of 2-12 s. OUT_DIR defaults to
<cache>/sentences-data. Seeded: the same arguments give the same files.

Held out (test split): sentences drawn before, and never used by, training. Half of the test clips
use (voice, variant) pairs no training clip uses (`unseen_voice: true`); the other half use
training voices, so both kinds of generalisation are measured.

--write-fixtures copies FIXTURE_CLIPS of the test split to fixtures/audio/sentences/ with their
texts (transcripts.json), for the decoding tests and the long-form builder.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters.checkpoints import REPO_ROOT, cache_dir  # noqa: E402
from make_digits_data import PITCHES, synthesize, voice_split  # noqa: E402
from sentence_corpus import distinct_sentences  # noqa: E402

SEED = 20261126
SPEEDS = (140, 190)  # words per minute
MIN_SECONDS, MAX_SECONDS = 2.0, 12.0
FIXTURE_CLIPS = tuple(range(16))
FIXTURE_DIR = REPO_ROOT / "fixtures" / "audio" / "sentences"


def draw_voice(rng: random.Random, voices: list[str]) -> tuple[str, int, int]:
    return rng.choice(voices), rng.randint(*SPEEDS), rng.randint(*PITCHES)


def synthesize_job(job: tuple) -> float:
    text, voice, speed, pitch, wav = job
    return synthesize(text, voice, speed, pitch, Path(wav))


def make_split(name: str, sentences: list[str], voice_sets: list[list[str]], rng: random.Random,
               out_dir: Path, workers: int) -> list[dict]:
    """One clip per sentence; voice set i % len(voice_sets). Out-of-range clips are redrawn in order."""
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, text in enumerate(sentences):
        voices = voice_sets[index % len(voice_sets)]
        jobs.append((text, *draw_voice(rng, voices), str(out_dir / name / f"{index:05d}.wav")))
    with ProcessPoolExecutor(workers) as pool:
        durations = list(pool.map(synthesize_job, jobs, chunksize=16))
    for index, duration in enumerate(durations):  # sequential redraws keep the result seeded
        tries = 0
        while not MIN_SECONDS <= duration <= MAX_SECONDS and tries < 20:
            voices = voice_sets[index % len(voice_sets)]
            jobs[index] = (jobs[index][0], *draw_voice(rng, voices), jobs[index][4])
            duration = synthesize_job(jobs[index])
            tries += 1
        durations[index] = duration
    rows = []
    for index, ((text, voice, speed, pitch, wav), duration) in enumerate(zip(jobs, durations)):
        if not MIN_SECONDS <= duration <= MAX_SECONDS:
            Path(wav).unlink()
            continue
        rows.append({"audio_filepath": str(Path(wav).resolve()), "duration": round(duration, 4),
                     "text": text, "voice": voice, "speed": speed, "pitch": pitch,
                     "unseen_voice": len(voice_sets) > 1 and index % len(voice_sets) == 0})
    with open(out_dir / f"{name}_manifest.json", "w") as manifest:
        for row in rows:
            manifest.write(json.dumps(row) + "\n")
    return rows


def write_fixtures(rows: list[dict]) -> None:
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    clips = {}
    for index in FIXTURE_CLIPS:
        row = rows[index]
        name = f"heldout_{index:05d}.wav"
        shutil.copyfile(row["audio_filepath"], FIXTURE_DIR / name)
        clips[name] = {key: row[key] for key in ("text", "voice", "speed", "pitch", "duration",
                                                 "unseen_voice")}
    note = "Held-out clips of training/make_sentences_data.py (--write-fixtures); never seen in training."
    (FIXTURE_DIR / "transcripts.json").write_text(json.dumps({"note": note, "clips": clips}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=cache_dir() / "sentences-data")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-fixtures", action="store_true")
    args = parser.parse_args()
    rng = random.Random(SEED)
    train_voices, test_voices = voice_split(rng)
    sentences = distinct_sentences(args.test + args.train, SEED)
    test_rows = make_split("test", sentences[:args.test], [test_voices, train_voices], rng, args.out_dir,
                           args.workers)
    train_rows = make_split("train", sentences[args.test:], [train_voices], rng, args.out_dir, args.workers)
    hours = sum(row["duration"] for row in train_rows) / 3600
    print(f"wrote {len(train_rows)} train ({hours:.2f} h) + {len(test_rows)} test clips to {args.out_dir}")
    print(f"held-out voices: {' '.join(test_voices)}")
    if args.write_fixtures:
        write_fixtures(test_rows)
        print(f"copied held-out clips {FIXTURE_CLIPS} to {FIXTURE_DIR}")


if __name__ == "__main__":
    main()
