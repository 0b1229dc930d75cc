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

SCHEMA_VERSION = 1
FILENAME = "metadata.json"


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
                   packages: dict[str, dict], tokenizer_file: str, author: str) -> dict:
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
        "precision": precision,
        "contract": contract.to_dict(),
        "packages": packages,
        "provenance": {
            "versions": tool_versions(),
            "git_commit": git_commit(),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "author": author,
            "platform": platform.platform(),
        },
    }


def write_metadata(directory: Path, metadata: dict) -> Path:
    path = directory / FILENAME
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return path


def read_metadata(directory: Path) -> dict:
    """Load a packages directory's metadata.json, checking its schema version."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise UserError(f"no {FILENAME} in {directory}: is it a parakeet-coreml export directory?")
    metadata = json.loads(path.read_text())
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {metadata.get('schema_version')}, "
                        f"this tool reads version {SCHEMA_VERSION}")
    return metadata
