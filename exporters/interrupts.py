"""Ctrl-C and SIGTERM end a command in one line that says how far it got.

SIGTERM is turned into KeyboardInterrupt, so both unwind the same way: `with` blocks remove staging folders
and temporary directories (NeMo's transcribe manifests included) on the way out, and files are only ever
written whole. Loops over files count through `counted`, so the line can say "after N of M files".
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

Item = TypeVar("Item")


@dataclass
class FileCount:
    stage: str = ""
    done: int = 0
    total: int = 0


progress = FileCount()


def counted(items: Iterable[Item], total: int, stage: str) -> Iterator[Item]:
    """Yield the items, counting each one finished once the next is asked for."""
    progress.stage, progress.done, progress.total = stage, 0, total
    for item in items:
        yield item
        progress.done += 1


def interrupted_line() -> str:
    if not progress.total:
        return "interrupted"
    return f"interrupted after {progress.done} of {progress.total} files ({progress.stage})"


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def start_command() -> None:
    """SIGTERM behaves like Ctrl-C from now on (unwind, so temporary folders are removed on the way out), and
    nothing is counted yet."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    progress.stage, progress.done, progress.total = "", 0, 0
