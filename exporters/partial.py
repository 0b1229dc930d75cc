"""Exports into a directory that already holds an export: a partial one updates it, anything else is refused.

`convert --components joint,decoder` into an export of the same model and settings re-exports those packages
and keeps the others: the new packages are staged in a sibling folder, then the export is re-assembled beside
it (the kept packages hard-linked, not copied) and swapped in as a whole, as every export is. Into an export of
another model, precision, window set, layout, top-K or compression, convert refuses in one line that says what
differs, unless the user asks to replace it (`--replace`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from exporters.export_view import is_our_export
from exporters.metadata import FILENAME, read_metadata, write_metadata


def existing_export(output_dir: Path) -> dict | None:
    """The metadata of the export output_dir holds (unverified: only its settings are read), or None."""
    return read_metadata(output_dir, verify=False) if is_our_export(output_dir) else None


def settings_of(metadata: dict) -> dict:
    """What must agree for two exports to share one directory."""
    recorded = metadata["contract"]
    windows = [w["window_seconds"] for w in recorded.get("windows", ())] or [recorded["window_seconds"]]
    return {"model": f"{metadata['model']['source']} (weights {metadata['model']['weights_sha256'][:12]})",
            "precision": metadata["precision"], "windows": ", ".join(f"{s:g} s" for s in sorted(windows)),
            "layout": recorded["layout"], "top-k": recorded["top_k"],
            "compression": (metadata.get("compression") or {}).get("variant", {}).get("name", "none")}


def differences(existing: dict, planned: dict) -> list[str]:
    """One phrase per setting in which the planned export differs from the existing one."""
    before, after = settings_of(existing), settings_of(planned)
    same_weights = existing["model"]["weights_sha256"] == planned["model"]["weights_sha256"]
    return [f"{name} {before[name]} there, {after[name]} here" for name in before
            if (before[name] != after[name] if name != "model" else not same_weights)]


def refuse_other_export(output_dir: Path, existing: dict, planned: dict) -> None:
    from exporters.errors import UserError

    if found := differences(existing, planned):
        raise UserError(f"{output_dir} holds another export ({'; '.join(found)}): pass --replace to replace it, "
                        "or choose another directory")


def partial_staging(output_dir: Path) -> Path:
    """Where the updated packages are exported first: a fresh sibling of the output directory."""
    return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent)) / "export"


def merge_partial(output_dir: Path, partial: Path) -> dict:
    """Re-assemble output_dir with the packages in `partial` replacing theirs and every other package kept;
    swap it in as a whole. Returns the merged metadata."""
    from exporters.export import publish

    kept = read_metadata(output_dir)
    updated = read_metadata(partial)
    assembled = partial.with_name("assembled")
    shutil.copytree(partial, assembled, copy_function=os.link)
    for name, entry in kept["packages"].items():
        if name not in updated["packages"]:
            shutil.copytree(output_dir / entry["file"], assembled / entry["file"], copy_function=os.link)
    merged = {**updated, "packages": {**kept["packages"], **updated["packages"]}}
    merged["packages"] = {name: merged["packages"][name] for name in (*kept["packages"], *updated["packages"])}
    (assembled / FILENAME).unlink()
    write_metadata(assembled, merged)
    read_metadata(assembled)  # every package listed and matching its checksum, before it replaces anything
    publish(assembled, output_dir)
    return merged
