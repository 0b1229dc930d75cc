"""Export layouts: which packages an export directory holds and what their files are called.

The interface of every package (names, shapes, dtypes) is the contract's and does not change with the
layout; a layout only picks packages, names their files and adds the files a runtime expects beside them.

- `default`: all eight packages as `parakeet_<component>.mlpackage`.
- `fluidaudio`: what FluidAudio's Parakeet v3 loader opens (0.15.x; read from its sources, listed in
  fixtures/fluidaudio/interface.json): Preprocessor, Encoder, Decoder and JointDecisionv3 (our
  single-step joint_decision), plus `parakeet_vocab.json`. FluidAudio opens compiled `.mlmodelc`
  bundles of these names: `parakeet-coreml compile` makes them on macOS. FluidAudio feeds the
  preprocessor a flat [1, 240000] waveform, so this layout keeps that input (its preprocessor then
  cannot use the Neural Engine; FluidAudio runs it on the CPU anyway). Its loader opens one 15 s
  window (single-function packages), so this layout takes one window only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from exporters.errors import UserError


@dataclass(frozen=True)
class Layout:
    name: str
    # component → file stem of the packages it holds; empty: every component, as parakeet_<name>
    package_stems: dict[str, str] = field(default_factory=dict)
    vocabulary_file: str | None = None  # a {"id": "piece"} JSON map of the tokenizer, beside the packages
    folder_name: str | None = None  # the directory name the runtime looks for
    flat_waveform: bool = False  # audio_signal [1, S] as the runtime feeds it, not framed [1, S / hop, hop]
    multi_window: bool = True  # whether its runtime can open multifunction packages (several windows)

    def has(self, component: str) -> bool:
        return not self.package_stems or component in self.package_stems


DEFAULT_LAYOUT = "default"
FLUIDAUDIO_FOLDER = "parakeet-tdt-0.6b-v3"
LAYOUTS = {
    DEFAULT_LAYOUT: Layout(DEFAULT_LAYOUT),
    "fluidaudio": Layout(
        "fluidaudio", {"preprocessor": "Preprocessor", "encoder": "Encoder", "decoder": "Decoder",
                       "joint_decision_single_step": "JointDecisionv3"},
        vocabulary_file="parakeet_vocab.json", folder_name=FLUIDAUDIO_FOLDER, flat_waveform=True,
        multi_window=False),
}


def layout_named(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise UserError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None


def write_vocabulary(tokenizer, path: Path) -> None:
    """Every piece by id ({"0": "<unk>", "1": "▁t", …}); blank (= V) is no piece and is left out."""
    pieces = {str(i): tokenizer.id_to_piece(i) for i in range(tokenizer.get_piece_size())}
    path.write_text(json.dumps(pieces, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
