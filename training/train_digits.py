"""Train a small v3-topology TDT model on synthesized spoken digits, on CPU, in a few minutes.

    uv run python training/make_digits_data.py           # once: data under <cache>/digits-data
    uv run python training/train_digits.py               # trains, evaluates, saves the .nemo

The model is the project's `tiny` topology (`exporters.checkpoints.v3_config`: 128-mel front end,
dw_striding x8, rel_pos Conformer, 2-layer LSTM prediction net, TDT joint with durations 0-4,
greedy_batch decoding) with the widths in DIGITS_WIDTHS, dropout off and no SpecAugment (--spec-augment
turns on light in-loop masking; it did not help here). The TDT loss is
`training/tdt_loss.py` (NeMo's own TDT loss is CUDA-only). Held-out accuracy is measured with
NeMo's `model.transcribe` (greedy_batch) on the held-out manifest; training stops early once every
held-out clip is exact for two evaluations in a row, or when the epochs (or --time-budget) run out.
Seeded and single-threaded: the same data and arguments give the same weights.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters.checkpoints import (REPO_ROOT, TDT_DURATIONS, Widths, cache_dir,  # noqa: E402
                                   null_datasets, v3_config)
from tdt_loss import tdt_loss  # noqa: E402

SEED = 20251126
DIGITS_WIDTHS = Widths(n_layers=2, d_model=96, n_heads=4, subsampling_channels=32,
                       pred_hidden=64, joint_hidden=64, vocab_size=32)
DEFAULT_OUT = REPO_ROOT / "fixtures" / "models" / "digits_tdt.nemo"


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_digit_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Path:
    """Seeded SentencePiece BPE on the training transcripts, written like checkpoints.train_tokenizer."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model_bytes, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, num_threads=1,
        minloglevel=2, shuffle_input_sentence=False,
    )
    (out_dir / "tokenizer.model").write_bytes(model_bytes.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model_bytes.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n")
    return out_dir / "tokenizer.model"


def digits_config(widths: Widths, tokenizer_dir: Path) -> dict:
    """v3_config with the given widths and every dropout off (topology unchanged)."""
    cfg = v3_config(widths, str(tokenizer_dir))
    for key in ("dropout", "dropout_pre_encoder", "dropout_emb", "dropout_att"):
        cfg["encoder"][key] = 0.0
    cfg["decoder"]["prednet"]["dropout"] = 0.0
    cfg["joint"]["jointnet"]["dropout"] = 0.0
    cfg.update(null_datasets())
    return cfg


def build_model(widths: Widths, tokenizer_dir: Path):
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    return EncDecRNNTBPEModel(cfg=OmegaConf.create(digits_config(widths, tokenizer_dir)))


def load_audio(rows: list[dict]) -> list[torch.Tensor]:
    return [torch.from_numpy(soundfile.read(row["audio_filepath"], dtype="float32")[0]) for row in rows]


def collate(waves: list[torch.Tensor], tokens: list[list[int]]):
    lengths = torch.tensor([len(w) for w in waves])
    signal = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        signal[i, : len(wave)] = wave
    token_lengths = torch.tensor([len(t) for t in tokens])
    targets = torch.zeros(len(tokens), int(token_lengths.max()), dtype=torch.long)
    for i, ids in enumerate(tokens):
        targets[i, : len(ids)] = torch.tensor(ids)
    return signal, lengths, targets, token_lengths


def mask_features(features: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light seeded SpecAugment on normalised mels [B, F, T], applied in the loop so the saved config
    carries no spec_augment section (zero is the per-feature mean after normalisation)."""
    features = features.clone()
    n_mels = features.shape[1]
    for b in range(features.shape[0]):
        for _ in range(2):
            width = int(torch.randint(0, 13, (1,), generator=gen))
            start = int(torch.randint(0, n_mels - width + 1, (1,), generator=gen))
            features[b, start:start + width, :] = 0.0
            width = int(torch.randint(0, 5, (1,), generator=gen))
            start = int(torch.randint(0, max(1, int(lengths[b]) - width), (1,), generator=gen))
            features[b, :, start:start + width] = 0.0
    return features


def transcribe(model, paths: list[str]) -> list[str]:
    """NeMo's own greedy decoding (the model's configured greedy_batch strategy)."""
    with torch.inference_mode():
        hypotheses = model.transcribe(paths, batch_size=16, verbose=False)
    if isinstance(hypotheses, tuple):
        hypotheses = hypotheses[0]
    return [h.text if hasattr(h, "text") else h for h in hypotheses]


def evaluate(model, rows: list[dict]) -> tuple[int, list[str]]:
    was_training = model.training
    model.eval()
    texts = transcribe(model, [row["audio_filepath"] for row in rows])
    model.train(was_training)
    return sum(t == row["text"] for t, row in zip(texts, rows)), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=cache_dir() / "digits-data")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then cosine decay")
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between held-out evaluations")
    parser.add_argument("--max-train", type=int, default=0, help="use only the first N training clips")
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="stop after this many seconds of training (0: no limit; a limit is not reproducible)")
    parser.add_argument("--spec-augment", action=argparse.BooleanOptionalAction, default=False,
                        help="light in-loop masking (2 freq masks <=12 bins, 2 time masks <=4 frames)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    torch.manual_seed(SEED)
    from nemo.utils import logging as nemo_logging
    nemo_logging.setLevel("ERROR")

    train_rows = read_manifest(args.data / "train_manifest.json")
    test_rows = read_manifest(args.data / "test_manifest.json")
    if args.max_train:
        train_rows = train_rows[: args.max_train]
    with tempfile.TemporaryDirectory() as work:  # the tokenizer files must exist until save_to
        train(args, train_rows, test_rows, Path(work))


def train(args, train_rows: list[dict], test_rows: list[dict], work: Path) -> None:
    train_digit_tokenizer([row["text"] for row in train_rows], DIGITS_WIDTHS.vocab_size, work / "tokenizer")
    model = build_model(DIGITS_WIDTHS, work / "tokenizer")
    tokens = [model.tokenizer.text_to_ids(row["text"]) for row in train_rows]
    waves = load_audio(train_rows)
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(train_rows)} train / {len(test_rows)} held-out clips; {params} parameters; "
          f"vocab {model.tokenizer.vocab_size}; blank {model.decoder.blank_idx}", flush=True)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    lr_at = warmup_cosine(args.lr, args.warmup, math.ceil(len(train_rows) / args.batch_size) * args.epochs)

    order_rng = random.Random(SEED)
    mask_gen = torch.Generator().manual_seed(SEED)
    model.train()
    started, step, perfect_streak = time.monotonic(), 0, 0
    for epoch in range(1, args.epochs + 1):
        order = list(range(len(train_rows)))
        order_rng.shuffle(order)
        epoch_loss = 0.0
        for first in range(0, len(order), args.batch_size):
            batch = order[first: first + args.batch_size]
            signal, lengths, targets, target_lengths = collate([waves[i] for i in batch],
                                                               [tokens[i] for i in batch])
            features, feature_len = model.preprocessor(input_signal=signal, length=lengths)
            if args.spec_augment:
                features = mask_features(features, feature_len, mask_gen)
            loss = tdt_step(model, optimizer, lr_at(step), features, feature_len, targets, target_lengths)
            epoch_loss += loss * len(batch)
            step += 1
        elapsed = time.monotonic() - started
        line = f"epoch {epoch:3d}  step {step:5d}  loss {epoch_loss / len(order):8.4f}  {elapsed:6.0f} s"
        out_of_time = 0 < args.time_budget < elapsed
        if epoch % args.eval_every == 0 or epoch == args.epochs or out_of_time:
            correct, _ = evaluate(model, test_rows)
            line += f"  held-out exact {correct}/{len(test_rows)}"
            perfect_streak = perfect_streak + 1 if correct == len(test_rows) else 0
        print(line, flush=True)
        if perfect_streak >= 2 or out_of_time:
            break
    train_seconds = time.monotonic() - started

    model.eval()
    correct, texts = evaluate(model, test_rows)
    print(f"trained {train_seconds:.0f} s; held-out exact {correct}/{len(test_rows)}", flush=True)
    for row, text in list(zip(test_rows, texts))[:5]:
        print(f"  {Path(row['audio_filepath']).name} [{row['voice']} {row['speed']} wpm] "
              f"ref={row['text']!r} hyp={text!r}")
    for row, text in zip(test_rows, texts):
        if text != row["text"]:
            print(f"  MISS {Path(row['audio_filepath']).name} ref={row['text']!r} hyp={text!r}")
    save_checkpoint(model, args.out)


def warmup_cosine(peak: float, warmup: int, total_steps: int):
    """lr_at(step): linear warm-up to `peak` over `warmup` steps, then cosine decay to 5 % at total_steps."""
    def lr_at(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return lr_at


def tdt_step(model, optimizer, lr: float, features, feature_len, targets, target_lengths) -> float:
    """One Adam step on the TDT loss of normalized mel features; returns the batch's mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    encoded, encoded_len = model.forward(processed_signal=features, processed_signal_length=feature_len)
    decoded, _, _ = model.decoder(targets=targets, target_length=target_lengths)
    joint = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
    loss = tdt_loss(joint, targets, encoded_len, target_lengths, model.decoder.blank_idx, TDT_DURATIONS,
                    float(model.cfg.loss.tdt_kwargs.sigma)).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def save_checkpoint(model, out: Path) -> None:
    """Null dataset manifests (transcribe() wants the keys), then the .nemo archive."""
    from omegaconf import open_dict

    with open_dict(model.cfg):
        model.cfg.update(null_datasets())
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
