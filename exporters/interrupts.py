"""Ctrl-C and SIGTERM end a command in one line that says how far it got.

SIGTERM is turned into KeyboardInterrupt, so both unwind the same way: `with` blocks remove staging folders
and temporary directories (NeMo's transcribe manifests included) on the way out, and files are only ever
written whole. Loops over files count with `counting` and `one_done`, so the line can say "after N of M files".
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass


@dataclass
class FileCount:
    stage: str = ""
    done: int = 0
    total: int = 0
    deferring: bool = False  # inside `uninterrupted`: a signal waits for the block's end
    pending: bool = False
    interrupted: bool = False  # a signal came: whatever error unwinding ends in, the command was interrupted


progress = FileCount()


def counting(total: int, stage: str) -> None:
    """From now on the line counts files of `stage`, none of `total` done yet."""
    progress.stage, progress.done, progress.total = stage, 0, total


def one_done() -> None:
    """Called once a file's work is finished (and its record printed, if any)."""
    progress.done += 1


@contextlib.contextmanager
def uninterrupted():
    """Ctrl-C and SIGTERM wait until the block ends, then interrupt as usual: a printed record and its count
    go together. (Blocking the signals would not do: another thread of torch's may take them.)"""
    progress.deferring = True
    try:
        yield
    finally:
        progress.deferring = False
    if progress.pending:
        progress.pending = False
        raise KeyboardInterrupt


def was_interrupted() -> bool:
    return progress.interrupted


def interrupted_line() -> str:
    if not progress.total:
        return "interrupted"
    return f"interrupted after {progress.done} of {progress.total} files ({progress.stage})"


def raise_interrupt(signum, frame) -> None:
    progress.interrupted = True
    if progress.deferring:
        progress.pending = True
        return
    raise KeyboardInterrupt


def start_command() -> None:
    """SIGTERM behaves like Ctrl-C from now on (unwind, so temporary folders are removed on the way out), and
    nothing is counted yet."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    progress.stage, progress.done, progress.total = "", 0, 0
    progress.deferring = progress.pending = progress.interrupted = False
