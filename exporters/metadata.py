"""metadata.json: what was exported, from what, how, and by whom. Its schema lives here only."""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from exporters.checkpoints import REPO_ROOT
from exporters.contract import Contract
from exporters.errors import UserError
from exporters.memory import process_peak_rss_mb

# 2: every package entry carries a content sha256; the preprocessor returns its feature statistics.
# 3: joint_decision returns top-K ids and logits and takes an optional token_bias; the contract records
#    top_k and the layout.
# 4: the weight compression (variant, components, mixed plan) and each package's deployment target and
#    compression.
# 5: "files" holds the sha256 of every other file an export is read by (tokenizer, vocabulary), and the
#    contract is checked when metadata.json is read.
# 6: the decision packages (joint_decision, its single step, decode_step) take an optional fusion_scores.
SCHEMA_VERSION = 6
FILENAME = "metadata.json"
PACKAGE_SUFFIX = ".mlpackage"


def weights_sha256(model) -> str:
    """Checksum of every parameter and buffer, in name order: the same for any source of the model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def git_commit() -> str | None:
    """The project's checked-out commit, if this is a git checkout."""
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def default_author() -> str:
    """git's user.name, else the login name."""
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        name = ""
    return name or getpass.getuser()


def tool_versions() -> dict[str, str]:
    import coremltools
    import nemo
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "coremltools": coremltools.__version__, "nemo": nemo.__version__}


def build_metadata(*, contract: Contract, source: str, model_checksum: str, precision: str,
                   packages: dict[str, dict], tokenizer_file: str, author: str, compression: dict,
                   files: dict[str, str] | None = None) -> dict:
    """The whole metadata.json document for one export run."""
    spec = contract.model
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"source": source, "weights_sha256": model_checksum, "spec": spec.to_dict()},
        "sample_rate": spec.sample_rate,
        "window_seconds": contract.window_samples / spec.sample_rate,
        "vocab_size": spec.vocab_size,
        "blank_id": spec.blank_id,
        "durations": list(spec.durations),
        "max_symbols_per_step": spec.max_symbols_per_step,
        "tokenizer": tokenizer_file,
        "files": files or {},
        "precision": precision,
        "compression": compression,
        "contract": contract.to_dict(),
        "packages": packages,
        "provenance": {
            "versions": tool_versions(),
            "git_commit": git_commit(),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "author": author,
            "platform": platform.platform(),
            "process_peak_rss_mb": process_peak_rss_mb(),
        },
    }


def write_metadata(directory: Path, metadata: dict) -> Path:
    path = directory / FILENAME
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return path


def package_sha256(path: Path) -> str:
    """Content checksum of a package folder: each file's relative path and bytes, in path order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(directory: Path, verify: bool = True) -> dict:
    """Load an export directory's metadata.json (schema checked) and, with `verify`, check that the
    directory holds exactly the packages it lists, each matching its content checksum."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"export directory not found: {directory}")
    path = directory / FILENAME
    if not path.is_file():
        raise UserError(f"no {FILENAME} in {directory}: is it a parakeet-coreml export directory?")
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); re-export the directory") from None
    if not isinstance(metadata, dict) or metadata.get("schema_version") != SCHEMA_VERSION:
        version = metadata.get("schema_version") if isinstance(metadata, dict) else None
        raise UserError(f"{path} has schema version {version}, this tool reads version {SCHEMA_VERSION}; "
                        "re-export the directory")
    check_contract(path, metadata)
    if verify:
        verify_packages(directory, metadata)
        verify_files(directory, metadata)
    return metadata


def check_contract(path: Path, metadata: dict) -> None:
    """The recorded contract rebuilds: one line naming what is missing or malformed, never a KeyError later."""
    from exporters.contract import contract_from_metadata

    if not isinstance(metadata.get("contract"), dict):
        raise UserError(f"{path} records no contract; re-export the directory")
    try:
        contract_from_metadata(metadata)
    except KeyError as error:
        raise UserError(f"{path}: its contract lacks {error}; re-export the directory") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{path}: its contract is malformed ({error}); re-export the directory") from None


def verify_files(directory: Path, metadata: dict) -> None:
    """Every other file metadata.json lists is a plain name in the directory and matches its checksum; the
    tokenizer it names is one of them."""
    files, tokenizer = metadata.get("files"), metadata.get("tokenizer")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise UserError(f"{directory / FILENAME} lists no file checksums; re-export the directory")
    if not isinstance(tokenizer, str) or not tokenizer:
        raise UserError(f"{directory / FILENAME} names no tokenizer file; re-export the directory")
    for name in (tokenizer, *files):
        if Path(name).name != name or name in (".", ".."):
            raise UserError(f"{directory / FILENAME} names a file outside the export ({name}); refused")
    if tokenizer not in files:
        raise UserError(f"{directory / FILENAME} names a tokenizer ({tokenizer}) its checksums do not cover; "
                        "re-export the directory")
    for name, checksum in sorted(files.items()):
        if not (directory / name).is_file():
            raise UserError(f"{directory / name} listed in {FILENAME} is missing; re-export the directory")
        if file_sha256(directory / name) != checksum:
            raise UserError(f"{directory / name} does not match its checksum in {FILENAME}: damaged or replaced; "
                            "re-export the directory")


def verify_packages(directory: Path, metadata: dict) -> None:
    """The export is one unit: the same package set as metadata.json lists, and every checksum matches."""
    try:
        listed = {entry["file"]: entry["sha256"] for entry in metadata["packages"].values()}
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{directory / FILENAME} lists no package checksums; re-export the directory") from None
    present = {p.name for p in directory.glob(f"*{PACKAGE_SUFFIX}")}
    if missing := sorted(set(listed) - present):
        raise UserError(f"{directory}: {', '.join(missing)} listed in {FILENAME} but missing; re-export the directory")
    if extra := sorted(present - set(listed)):
        raise UserError(f"{directory}: {', '.join(extra)} not listed in {FILENAME} (a mixed export directory?); "
                        "re-export the directory")
    for name, checksum in sorted(listed.items()):
        if package_sha256(directory / name) != checksum:
            raise UserError(f"{directory / name} does not match its checksum in {FILENAME}: damaged or replaced; "
                            "re-export the directory")
