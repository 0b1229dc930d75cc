"""Keeping a full-width export's resident memory to about one copy of the model.

`checkpoints.lean_restore` memory-maps the checkpoint's weights instead of reading them into the heap, so
they are clean file-backed pages. Tracing and converting read every weight, and pages once read stay
resident. `weights_paged_out` hands them back to the kernel while an export runs (Linux MADV_PAGEOUT:
clean pages are dropped and re-read from the page cache when touched again; written pages are never
discarded), so the process holds what it is building, not also the whole source model.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import resource
import sys
import threading
from pathlib import Path

MADV_PAGEOUT = 21  # Linux >= 5.4; Python's mmap module does not name it
PAGE_OUT_INTERVAL_S = 0.1


def libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux reads VmHWM: getrusage's ru_maxrss survives exec, so a child started by a large process would
    report its parent's peak. macOS reports ru_maxrss in bytes.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise; other C libraries have no call)."""
    library = libc()
    trim = getattr(library, "malloc_trim", None) if library else None
    if trim is not None:
        trim(0)


def page_ranges(tensors) -> list[tuple[int, int]]:
    """(start, length) of the whole pages inside each distinct tensor storage."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    ranges = []
    for pointer, size in storages.items():
        start = -(-pointer // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (pointer + size) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            ranges.append((start, end - start))
    return ranges


@contextlib.contextmanager
def weights_paged_out(tensors, interval_s: float = PAGE_OUT_INTERVAL_S):
    """While the block runs, page the tensors' memory out every interval_s seconds (and once at each end).

    Only on Linux; elsewhere a no-op (macOS reclaims clean file pages under pressure by itself).
    """
    library = libc() if sys.platform.startswith("linux") else None
    if library is None:
        yield
        return
    madvise = library.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    ranges = page_ranges(tensors)

    def page_out() -> None:
        for start, length in ranges:
            madvise(start, length, MADV_PAGEOUT)  # advisory: an old kernel's EINVAL changes nothing

    stop = threading.Event()

    def keep_paging_out() -> None:
        while not stop.wait(interval_s):
            page_out()

    pager = threading.Thread(target=keep_paging_out, name="weights-pager", daemon=True)
    page_out()
    pager.start()
    try:
        yield
    finally:
        stop.set()
        pager.join()
        page_out()
