"""Train the `sentences` checkpoint: v3's topology at small widths, on synthesized English sentences.

    uv run python training/make_sentences_data.py        # once: data under <cache>/sentences-data
    uv run python training/train_sentences.py            # trains, reports the WER curve, saves the .nemo

Extends the digits recipe (`train_digits.py`: tokenizer, dropout-free v3 config, collate, NeMo
greedy evaluation, TDT loss) with what longer clips and a real vocabulary need:
- mel features are computed once per clip by NeMo's own preprocessor in eval mode (no dither), so
  the epochs run the encoder, prediction net, joint and loss only;
- batches are buckets of similar length (seeded order), capped by total mel frames;
- held-out accuracy is word error rate (jiwer, after `normalize_text`), on unseen sentences with
  unseen and seen voices, reported as a curve.
Seeded and single-threaded by default: the same data and arguments give the same weights.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters.checkpoints import Widths, cache_dir  # noqa: E402
from exporters.wer import word_error_rate  # noqa: E402
from train_digits import (REPO_ROOT, build_model, load_audio, read_manifest, save_checkpoint,  # noqa: E402
                          tdt_step, train_digit_tokenizer, transcribe, warmup_cosine)

SEED = 20261127
SENTENCES_WIDTHS = Widths(n_layers=4, d_model=128, n_heads=4, subsampling_channels=64,
                          pred_hidden=128, joint_hidden=128, vocab_size=256)
DEFAULT_OUT = REPO_ROOT / "fixtures" / "models" / "sentences_tdt.nemo"


def mel_features(model, rows: list[dict]) -> list[torch.Tensor]:
    """NeMo's preprocessor on each clip alone, in eval mode: [n_mels, frames] per clip."""
    model.preprocessor.eval()
    features = []
    with torch.inference_mode():
        for wave in load_audio(rows):
            mel, length = model.preprocessor(input_signal=wave[None], length=torch.tensor([len(wave)]))
            features.append(mel[0, :, : int(length)].clone())
    return features


def length_buckets(lengths: list[int], max_batch: int, max_frames: int, rng: random.Random) -> list[list[int]]:
    """Batches of clips with similar lengths (sorted, then chunked), in a seeded random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current = [], []
    for index in order:
        if current and (len(current) >= max_batch or (len(current) + 1) * lengths[index] > max_frames):
            batches.append(current)
            current = []
        current.append(index)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def pad_batch(features: list[torch.Tensor], tokens: list[list[int]]):
    lengths = torch.tensor([f.shape[1] for f in features])
    mel = torch.zeros(len(features), features[0].shape[0], int(lengths.max()))
    for i, feature in enumerate(features):
        mel[i, :, : feature.shape[1]] = feature
    token_lengths = torch.tensor([len(t) for t in tokens])
    targets = torch.zeros(len(tokens), int(token_lengths.max()), dtype=torch.long)
    for i, ids in enumerate(tokens):
        targets[i, : len(ids)] = torch.tensor(ids)
    return mel, lengths, targets, token_lengths


def held_out_wer(model, rows: list[dict]) -> tuple[dict, list[str]]:
    """WER (normalized) over all held-out clips and per voice kind, with NeMo greedy decoding."""
    was_training = model.training
    model.eval()
    texts = transcribe(model, [row["audio_filepath"] for row in rows])
    model.train(was_training)
    report = {"all": word_error_rate([r["text"] for r in rows], texts)}
    for kind, flag in (("unseen_voice", True), ("seen_voice", False)):
        pairs = [(r["text"], t) for r, t in zip(rows, texts) if r.get("unseen_voice") == flag]
        if pairs:
            report[kind] = word_error_rate([p[0] for p in pairs], [p[1] for p in pairs])
    return report, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=cache_dir() / "sentences-data")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-frames", type=int, default=24000, help="mel frames per batch at most")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--max-train", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (timing runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--curve", type=Path, default=None, help="write the WER curve as JSON here")
    parser.add_argument("--manifest", default="train_manifest.json", help="training manifest inside --data")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from this .nemo (its tokenizer too) instead of a fresh model")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    torch.manual_seed(SEED)
    from nemo.utils import logging as nemo_logging
    nemo_logging.setLevel("ERROR")

    train_rows = read_manifest(args.data / args.manifest)
    test_rows = read_manifest(args.data / "test_manifest.json")
    if args.max_train:
        train_rows = train_rows[: args.max_train]
    with tempfile.TemporaryDirectory() as work:
        train(args, train_rows, test_rows, Path(work))


def train(args, train_rows: list[dict], test_rows: list[dict], work: Path) -> None:
    if args.init:
        from exporters.checkpoints import restore_nemo

        model = restore_nemo(args.init).train()
    else:
        train_digit_tokenizer([row["text"] for row in train_rows], SENTENCES_WIDTHS.vocab_size, work / "tokenizer")
        model = build_model(SENTENCES_WIDTHS, work / "tokenizer")
    started = time.monotonic()
    features = mel_features(model, train_rows)
    tokens = [model.tokenizer.text_to_ids(row["text"]) for row in train_rows]
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(train_rows)} train / {len(test_rows)} held-out clips; {params} parameters; "
          f"vocab {model.tokenizer.vocab_size}; features in {time.monotonic() - started:.0f} s", flush=True)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    order_rng = random.Random(SEED)
    lengths = [f.shape[1] for f in features]
    steps_per_epoch = len(length_buckets(lengths, args.max_batch, args.max_frames, random.Random(0)))
    lr_at = warmup_cosine(args.lr, args.warmup, steps_per_epoch * args.epochs)

    model.train()
    curve, step, started = [], 0, time.monotonic()
    for epoch in range(1, args.epochs + 1):
        epoch_loss, clips = 0.0, 0
        for batch in length_buckets(lengths, args.max_batch, args.max_frames, order_rng):
            mel, mel_lengths, targets, target_lengths = pad_batch([features[i] for i in batch],
                                                                  [tokens[i] for i in batch])
            loss = tdt_step(model, optimizer, lr_at(step), mel, mel_lengths, targets, target_lengths)
            epoch_loss += loss * len(batch)
            clips += len(batch)
            step += 1
            if args.max_steps and step >= args.max_steps:
                print(f"{step} steps in {time.monotonic() - started:.1f} s ({steps_per_epoch} steps/epoch)")
                return
        elapsed = time.monotonic() - started
        line = f"epoch {epoch:3d}  step {step:5d}  loss {epoch_loss / clips:8.4f}  {elapsed:6.0f} s"
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            report, _ = held_out_wer(model, test_rows)
            curve.append({"epoch": epoch, "seconds": round(elapsed), "loss": epoch_loss / clips, **report})
            line += "  held-out WER " + "  ".join(f"{k} {v:.2%}" for k, v in report.items())
        print(line, flush=True)
    train_seconds = time.monotonic() - started

    model.eval()
    report, texts = held_out_wer(model, test_rows)
    print(f"trained {train_seconds:.0f} s; held-out WER " + "  ".join(f"{k} {v:.2%}" for k, v in report.items()))
    for row, text in list(zip(test_rows, texts))[:8]:
        print(f"  {Path(row['audio_filepath']).name} [{row['voice']}] ref={row['text']!r} hyp={text!r}")
    if args.curve:
        args.curve.write_text(json.dumps({"train_seconds": round(train_seconds), "curve": curve,
                                          "final": report}, indent=1) + "\n")
    save_checkpoint(model, args.out)


if __name__ == "__main__":
    main()
