"""Load a NeMo checkpoint: a Hugging Face id, a `.nemo` file, or one the project builds offline.

`tiny` and `full-random` are built from a config mirroring parakeet-tdt-0.6b-v3's topology
(see `v3_config`), with a SentencePiece BPE tokenizer trained on text shipped in `fixtures/text`.
Builds are seeded and cached as `.nemo` files keyed by a hash of everything that shapes them.
`digits` is a small model of the same topology trained on synthesized spoken digits (see `training/`),
committed as a `.nemo` file, so decoding conformance can run on real words and real TDT durations.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from exporters.errors import UserError

DEFAULT_HF_ID = "nvidia/parakeet-tdt-0.6b-v3"
REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_PATH = REPO_ROOT / "fixtures" / "text" / "corpus.txt"
BUILD_SEED = 20251125
HF_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Widths:
    """The sizes that differ between the tiny and full-width v3-shaped models."""

    n_layers: int
    d_model: int
    n_heads: int
    subsampling_channels: int
    pred_hidden: int
    joint_hidden: int
    vocab_size: int


PRESETS: dict[str, Widths] = {
    "tiny": Widths(n_layers=2, d_model=64, n_heads=4, subsampling_channels=32,
                   pred_hidden=32, joint_hidden=32, vocab_size=128),
    "full-random": Widths(n_layers=24, d_model=1024, n_heads=8, subsampling_channels=256,
                          pred_hidden=640, joint_hidden=640, vocab_size=8192),
}
TDT_DURATIONS = [0, 1, 2, 3, 4]
# Trained checkpoints committed to the repository (recipe and numbers: training/README.md).
TRAINED: dict[str, Path] = {"digits": REPO_ROOT / "fixtures" / "models" / "digits_tdt.nemo",
                            "sentences": REPO_ROOT / "fixtures" / "models" / "sentences_tdt.nemo"}


def cache_dir() -> Path:
    """Where built checkpoints live; override with PARAKEET_COREML_CACHE."""
    default = Path.home() / ".cache" / "parakeet-coreml"
    return Path(os.environ.get("PARAKEET_COREML_CACHE", default))


def v3_config(widths: Widths, tokenizer_dir: str) -> dict:
    """A NeMo EncDecRNNTBPEModel config with parakeet-tdt-0.6b-v3's topology and the given widths."""
    return {
        "sample_rate": 16000,
        "model_defaults": {"enc_hidden": widths.d_model, "pred_hidden": widths.pred_hidden,
                           "joint_hidden": widths.joint_hidden},
        "tokenizer": {"dir": tokenizer_dir, "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
            "window_stride": 0.01, "window": "hann", "features": 128, "n_fft": 512,
            "log": True, "frame_splicing": 1, "dither": 1.0e-05, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 128, "feat_out": -1, "n_layers": widths.n_layers, "d_model": widths.d_model,
            "use_bias": False, "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": widths.subsampling_channels, "causal_downsampling": False,
            "ff_expansion_factor": 4, "self_attention_model": "rel_pos", "n_heads": widths.n_heads,
            "att_context_size": [-1, -1], "att_context_style": "regular", "xscaling": False,
            "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm", "conv_context_size": None, "dropout": 0.1,
            "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None, "random_state_sampling": False, "blank_as_pad": True,
            "vocab_size": widths.vocab_size,
            "prednet": {"pred_hidden": widths.pred_hidden, "pred_rnn_layers": 2,
                        "t_max": None, "dropout": 0.2},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None, "preserve_memory": False, "fuse_loss_wer": False,
            "num_extra_outputs": len(TDT_DURATIONS), "num_classes": widths.vocab_size,
            "vocabulary": [],
            "jointnet": {"encoder_hidden": widths.d_model, "pred_hidden": widths.pred_hidden,
                         "joint_hidden": widths.joint_hidden, "activation": "relu", "dropout": 0.2},
        },
        "decoding": {
            "strategy": "greedy_batch", "model_type": "tdt", "durations": TDT_DURATIONS,
            "greedy": {"max_symbols": 10},
        },
        "loss": {
            "loss_name": "tdt",
            "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": TDT_DURATIONS,
                           "sigma": 0.02, "omega": 0.1},
        },
    }


def null_datasets() -> dict:
    """transcribe() wants train/validation/test keys in the config; null manifests are fine."""
    dataset = {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 1, "shuffle": False}
    return {name: dict(dataset) for name in ("train_ds", "validation_ds", "test_ds")}


def tokenizer_corpus(vocab_size: int) -> list[str]:
    """Shipped sentences, plus seeded pseudo-words when the vocabulary needs more merges than they allow."""
    sentences = CORPUS_PATH.read_text().split("\n")
    sentences = [s for s in sentences if s.strip()]
    if vocab_size <= 512:
        return sentences
    rng = random.Random(BUILD_SEED)
    onsets = ["", "b", "br", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m",
              "n", "p", "pl", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "y", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "ie"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
    def word() -> str:
        return "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.randint(1, 3)))
    generated = [" ".join(word() for _ in range(12)) for _ in range(vocab_size * 6)]
    return sentences + generated


def train_tokenizer(vocab_size: int, out_dir: Path) -> Path:
    """Train a seeded SentencePiece BPE model into out_dir/tokenizer.model (+ vocab.txt).

    Trained from memory so the model proto records no file paths: identical bytes on every build.
    """
    import io

    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus(vocab_size)), model_writer=model_bytes,
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1,
        unk_id=0, num_threads=1, minloglevel=2, shuffle_input_sentence=False,
    )
    model_file = out_dir / "tokenizer.model"
    model_file.write_bytes(model_bytes.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model_bytes.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n")
    return model_file


def build_key(preset: str) -> str:
    """Hash of everything that determines a built checkpoint's bytes."""
    import nemo
    import torch

    payload = {
        "preset": preset, "widths": asdict(PRESETS[preset]), "config": v3_config(PRESETS[preset], ""),
        "corpus": hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest(), "seed": BUILD_SEED,
        "builder": hashlib.sha256("".join(inspect.getsource(f) for f in BUILDERS).encode()).hexdigest(),
        "torch": torch.__version__, "nemo": nemo.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_checkpoint(preset: str) -> Path:
    """Build (once) and return the cached `.nemo` file for a preset."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    target = cache_dir() / f"{preset}-{build_key(preset)}.nemo"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{preset}-*.nemo"):  # built by other code: 2.4 GB each at full width
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        model = instantiate_preset(preset, Path(work) / "tokenizer")
        staged = Path(work) / target.name
        model.save_to(str(staged))
        os.replace(staged, target)
    return target


def instantiate_preset(preset: str, tokenizer_dir: Path):
    """A freshly initialised, seeded NeMo model for a preset (in eval mode)."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf, open_dict

    widths = PRESETS[preset]
    train_tokenizer(widths.vocab_size, tokenizer_dir)
    torch.manual_seed(BUILD_SEED)
    cfg = OmegaConf.create(v3_config(widths, str(tokenizer_dir)))
    model = EncDecRNNTBPEModel(cfg=cfg)
    with open_dict(model.cfg):
        model.cfg.update(null_datasets())
    return model.eval()


# The code that determines a built checkpoint's bytes (its source is part of the cache key).
BUILDERS = (v3_config, null_datasets, tokenizer_corpus, train_tokenizer, instantiate_preset)


def load_model(source: str, kind: str | None = None):
    """Load a NeMo ASR model from a preset or trained-model name, a `.nemo` path or a Hugging Face id
    (eval mode, CPU). `kind` is what `check_source` already said of it (else it is checked here)."""
    kind = kind or check_source(source)
    if kind == "preset":
        return restore_nemo(build_checkpoint(source))
    if kind == "trained":
        return restore_nemo(TRAINED[source])
    if kind == "file":
        return restore_nemo(Path(source))
    return load_from_hub(source)


def check_source(source: str) -> str:
    """What kind of source this is ("preset", "trained", "file" or "hub"), after the checks that need
    neither NeMo nor torch: a bad source fails in a moment, before the heavy imports."""
    if source in PRESETS:
        return "preset"
    if source in TRAINED:
        if not TRAINED[source].is_file():
            raise UserError(f"trained checkpoint {source!r} missing: {TRAINED[source]} (see training/README.md)")
        return "trained"
    path = Path(source)
    if path.suffix == ".nemo" or path.exists() or os.sep in source and not looks_like_hf_id(source):
        if path.is_dir():
            raise UserError(f"{source} is a directory; pass a .nemo file (or 'tiny', 'full-random', 'digits', "
                            "'sentences', or a Hugging Face id)")
        if not path.is_file():
            raise UserError(f"checkpoint not found: {source}")
        if path.suffix != ".nemo":
            raise UserError(f"not a .nemo checkpoint: {source}")
        return "file"
    if os.environ.get("HF_HUB_OFFLINE") != "1" and not hub_reachable():
        raise UserError(
            f"cannot reach the Hugging Face Hub to download {source!r}; "
            "pass a path to a .nemo file instead (or the built-in 'tiny' / 'full-random' / 'digits')"
        )
    return "hub"


def looks_like_hf_id(source: str) -> bool:
    """A Hugging Face id is `owner/name` with no further path parts."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/"))


def restore_nemo(path: Path):
    """`ASRModel.restore_from` on CPU, in eval mode, with weights memory-mapped (`lean_restore`)."""
    from nemo.collections.asr.models import ASRModel

    try:
        model = ASRModel.restore_from(str(path), map_location="cpu", save_restore_connector=lean_restore())
    except FileNotFoundError as error:  # named inside NeMo's temporary extraction folder
        member = Path(error.filename).name if error.filename else "an expected member"
        raise UserError(f"cannot restore {path}: the archive has no {member}") from error
    except Exception as error:  # NeMo raises many types for a bad archive
        raise UserError(f"cannot restore {path}: {error.__class__.__name__}: {error}") from error
    return model.eval()


def load_from_hub(model_id: str):
    """`ASRModel.from_pretrained` (reachability is checked first, by `check_source`)."""
    from nemo.collections.asr.models import ASRModel

    try:
        model = ASRModel.from_pretrained(model_id, map_location="cpu", save_restore_connector=lean_restore())
    except Exception as error:
        raise UserError(
            f"cannot load {model_id!r} from the Hugging Face Hub ({error.__class__.__name__}); "
            "pass a path to a .nemo file instead"
        ) from error
    return model.eval()


def lean_restore():
    """NeMo's SaveRestoreConnector, except that the checkpoint's tensors become the model's weights.

    NeMo builds the model with random weights, reads the whole state dict into memory and copies it in:
    two full copies at once (5.6 GiB resident for the 0.6B model), and glibc keeps the freed copy.
    Here the state dict is memory-mapped and assigned (`assign=True`), the random weights are freed and
    handed back to the OS, so a full-width model costs one copy. The weights' values are the same bytes.
    """
    import torch
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    from exporters.memory import release_freed_memory

    class LeanRestoreConnector(SaveRestoreConnector):
        @staticmethod
        def _load_state_dict_from_disk(model_weights, map_location=None):
            try:
                return torch.load(model_weights, map_location="cpu", weights_only=False, mmap=True)
            except RuntimeError:  # a legacy (pre-zipfile) checkpoint cannot be mapped: read it whole
                return torch.load(model_weights, map_location="cpu", weights_only=False)

        def load_instance_with_state_dict(self, instance, state_dict, strict):
            instance.load_state_dict(state_dict, strict=strict, assign=True)
            instance._set_model_restore_state(is_being_restored=False)
            release_freed_memory()

    return LeanRestoreConnector()


def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub endpoint opens within a few seconds."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HF_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False

