"""Synthesize the `sentences` data set: self-written sentences spoken by espeak-ng, NeMo manifests.

    uv run python training/make_sentences_data.py [OUT_DIR] [--train N] [--test N] [--write-fixtures]

Extends the digits recipe (`make_digits_data.py`: same voices, variants, synthesis and held-out
voice split) to sentences from `sentence_corpus.py`, clips of 2-12 s. OUT_DIR defaults to
<cache>/sentences-data. Seeded: the same arguments give the same files.

Held out (test split): sentences drawn before, and never used by, training. Half of the test clips
use (voice, variant) pairs no training clip uses (`unseen_voice: true`); the other half use
training voices, so both kinds of generalisation are measured. Test clips are single sentences.

Training clips: train_manifest.json holds one clip per training sentence (stage 1);
train_composed_manifest.json (`compose_training_clips`, stage 2) joins one to three consecutive
training sentences with pauses, leading and trailing pauses, under digital silence or low room noise.
A model trained on bare single sentences transcribed each held-out sentence alone but broke down on the
same sentence followed by 0.5 s of digital silence, or on windows holding several sentences: exactly
what long audio and user files contain.

--write-fixtures copies FIXTURE_CLIPS of the test split to fixtures/audio/sentences/ with their
texts (transcripts.json), for the decoding tests and the long-form builder.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters.checkpoints import REPO_ROOT, cache_dir  # noqa: E402
from make_digits_data import PITCHES, SAMPLE_RATE, copy_fixture_clips, synthesize, voice_split  # noqa: E402
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


GROUP_SIZES, GROUP_WEIGHTS = (1, 2, 3), (0.4, 0.35, 0.25)
NOISE_LEVELS = (0.0, 1e-4, 1e-3, 3e-3)  # digital silence, then -80, -60 and -50 dBFS white noise


def compose_training_clips(rows: list[dict], rng: random.Random, out_dir: Path) -> list[dict]:
    """Consecutive sentences in groups of 1-3, each clip <= MAX_SECONDS; written to out_dir/train_mix."""
    import numpy as np
    import soundfile

    (out_dir / "train_mix").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(SEED)
    composed, index = [], 0
    while index < len(rows):
        size = rng.choices(GROUP_SIZES, GROUP_WEIGHTS)[0]
        group = rows[index:index + size]
        pauses = [rng.uniform(0.0, 0.4)] + [rng.uniform(0.15, 0.8) for _ in group[1:]] + [rng.uniform(0.0, 0.6)]
        seconds = sum(row["duration"] for row in group) + sum(pauses)
        if len(group) > 1 and seconds > MAX_SECONDS:
            group, pauses = group[:1], [pauses[0], pauses[-1]]
        index += len(group)
        pieces = [np.zeros(int(pauses[0] * SAMPLE_RATE), np.float32)]
        for row, pause in zip(group, pauses[1:]):
            pieces += [soundfile.read(row["audio_filepath"], dtype="float32")[0],
                       np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        audio = np.concatenate(pieces)
        audio += rng.choice(NOISE_LEVELS) * noise.standard_normal(len(audio)).astype(np.float32)
        wav = out_dir / "train_mix" / f"{len(composed):05d}.wav"
        soundfile.write(wav, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        composed.append({"audio_filepath": str(wav.resolve()), "duration": round(len(audio) / SAMPLE_RATE, 4),
                         "text": " ".join(row["text"] for row in group), "sentences": len(group)})
    return composed


def write_fixtures(rows: list[dict]) -> None:
    copy_fixture_clips(rows, FIXTURE_CLIPS, FIXTURE_DIR, ("text", "voice", "speed", "pitch", "duration",
                                                          "unseen_voice"), "training/make_sentences_data.py")


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
    composed_rows = compose_training_clips(train_rows, rng, args.out_dir)
    with open(args.out_dir / "train_composed_manifest.json", "w") as manifest:
        for row in composed_rows:
            manifest.write(json.dumps(row) + "\n")
    for name, rows in (("train", train_rows), ("train_composed", composed_rows), ("test", test_rows)):
        print(f"{name}: {len(rows)} clips, {sum(row['duration'] for row in rows) / 3600:.2f} h")
    print(f"written to {args.out_dir}")
    print(f"held-out voices: {' '.join(test_voices)}")
    if args.write_fixtures:
        write_fixtures(test_rows)
        print(f"copied held-out clips {FIXTURE_CLIPS} to {FIXTURE_DIR}")


if __name__ == "__main__":
    main()
