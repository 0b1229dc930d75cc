"""Many files at corpus scale: `transcribe` and `evaluate` over a manifest, in parallel and resumable.

A *work* (TranscribeWork, EvaluateWork) says what a worker opens once (the packages, NeMo for the reference) and
how one manifest entry becomes its JSON record. The records are the same whichever way they were made: in this
process (`--jobs 1`), by worker processes that take files from a queue (`--jobs N`), or by Ray actors on a
cluster (`--ray`). They come back in manifest order.

With an output file (`--output FILE.jsonl`) every finished file's record is appended at once, as one whole line
in one write(): a killed run leaves whole lines only, and running again does only the files without a record
(error records are tried again). The first line records the run's settings; another run's file is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exporters.errors import UserError

# A worker that dies while decoding a file (killed, out of memory) has that file tried once more by a new
# worker; if that one dies too, the file gets an error record.
ATTEMPTS = 2
# Resident memory of a worker beyond its packages and checkpoint: Python, torch and NeMo loaded (measured ~0.9 GB
# for the digits model's worker, docs/corpus.md).
WORKER_BASE_BYTES = 1_000_000_000
FULL_WIDTH_BYTES = 2_500_000_000  # Parakeet-TDT-0.6B's fp32 weights


@dataclass(frozen=True)
class Entry:
    index: int  # place in the manifest: records come back in this order
    path: Path
    text: str | None  # reference text (evaluate)

    @property
    def key(self) -> str:
        """What an output file's record is matched by on resume."""
        return json.dumps([str(self.path), self.text])


@dataclass(frozen=True)
class TranscribeWork:
    """`transcribe` over many files: the packages' transcript of each (text, tokens, words, duration, rtf)."""

    packages: Path
    joint_mode: str | None = None
    fused: bool = False
    backend: str | None = None
    chunking: object = None
    lock: object = None
    model: str | None = None
    mapping: tuple[str, ...] = ()
    fusion: object = None

    command = "transcribe"
    stage = "transcribed"

    def settings(self) -> dict:
        return {"command": self.command, "packages": str(Path(self.packages).resolve()), "joint_mode": self.joint_mode,
                "fused": self.fused, "chunking": None if self.chunking is None else asdict(self.chunking),
                "lock": None if self.lock is None else asdict(self.lock), "model": self.model,
                "mapping": list(self.mapping), "custom_vocabulary": describe(self.fusion)}

    def open(self):
        from exporters.cli import open_packages_transcriber
        from exporters.decoding.chunking import Chunking

        return open_packages_transcriber(self.packages, self.joint_mode, self.fused, self.backend,
                                         self.chunking or Chunking(), self.lock, self.model, self.mapping, self.fusion)

    def describe(self, transcriber) -> dict:
        return {}

    def record(self, transcriber, entry: Entry) -> dict:
        from exporters.decoding.batch import file_record

        return file_record(transcriber, entry.path)

    def bytes_needed(self) -> int:
        from exporters.evaluate import package_bytes

        return package_bytes(Path(self.packages)) + WORKER_BASE_BYTES

    @staticmethod
    def audio_seconds(record: dict) -> float:
        return record.get("duration", 0.0)


@dataclass(frozen=True)
class EvaluateWork:
    """`evaluate` over many files: each file decoded by the packages and by NeMo alone (or by NeMo only, without
    packages), as evaluate.FileResult records."""

    packages: Path | None
    model: str | None = None
    mapping: dict | None = None
    backend: str | None = None
    joint_mode: str | None = None
    fusion: object = None

    command = "evaluate"
    stage = "evaluated"

    def settings(self) -> dict:
        return {"command": self.command,
                "packages": None if self.packages is None else str(Path(self.packages).resolve()),
                "model": self.model, "mapping": {name: str(path) for name, path in (self.mapping or {}).items()},
                "joint_mode": self.joint_mode,
                "custom_vocabulary": describe(self.fusion)}

    def open(self):
        from exporters.cli import quiet_libraries
        from exporters.evaluate import Evaluation

        quiet_libraries()
        return Evaluation(self.packages, self.model, self.mapping, self.backend, self.joint_mode, self.fusion)

    def describe(self, evaluation) -> dict:
        return evaluation.describe()

    def record(self, evaluation, entry: Entry) -> dict:
        return evaluation.record(entry.path, entry.text)

    def bytes_needed(self) -> int:
        """The packages, and NeMo's weights (about the fp32 packages' bytes: measured 6.1 GB per worker on the
        full-width fp32 export, docs/corpus.md); NeMo alone: its .nemo file."""
        if self.packages is not None:
            from exporters.evaluate import package_bytes

            return 2 * package_bytes(Path(self.packages)) + WORKER_BASE_BYTES
        from exporters.checkpoints import TRAINED

        checkpoint = TRAINED.get(self.model, Path(self.model or ""))
        return (checkpoint.stat().st_size if checkpoint.is_file() else FULL_WIDTH_BYTES) + WORKER_BASE_BYTES

    @staticmethod
    def audio_seconds(record: dict) -> float:
        return record.get("seconds", 0.0)


def describe(fusion) -> dict | None:
    return None if fusion is None else fusion.describe()


def error_record(entry: Entry, message: str) -> dict:
    return {"audio_filepath": str(entry.path), "error": message}


# ---------------------------------------------------------------------------------------------------------------
# How many workers


def cores_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def memory_available() -> int | None:
    """Bytes the system can give without swapping (Linux's MemAvailable; psutil elsewhere)."""
    with contextlib.suppress(ImportError):
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def default_jobs(work, files: int) -> int:
    """One worker per core, no more than memory holds (each opens the packages and, for evaluate, the checkpoint),
    no more than there are files."""
    jobs = cores_available()
    available = memory_available()
    if available is not None:
        jobs = min(jobs, max(1, available // max(work.bytes_needed(), 1)))
    return max(1, min(jobs, files))


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be 1 or more, got {jobs}")


# ---------------------------------------------------------------------------------------------------------------
# Output file


class RecordFile:
    """A JSON-lines output: the run's settings, then one record per finished file, appended whole."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # as read back: tuples are lists
        self.done: dict[str, dict] = {}  # entry key -> its last record
        self.description: dict | None = None  # what the workers said of what they opened (evaluate's report)

    def open(self) -> "RecordFile":
        if self.path.is_dir():
            raise UserError(f"--output {self.path} is a folder; give a file name (records are JSON lines)")
        if not self.path.parent.is_dir():
            raise UserError(f"--output {self.path}: folder {self.path.parent} does not exist")
        if self.path.exists() and self.path.stat().st_size:
            self.read()
        else:
            self.append({"run": self.settings})
        return self

    def read(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise UserError(f"--output {self.path} cannot be read ({error.strerror or error})") from None
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) < len(data):  # a line cut short (a crash of the machine, not of this program): drop it
            os.truncate(self.path, len(whole))
        lines = whole.decode("utf-8", errors="replace").splitlines()
        try:
            records = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            raise UserError(f"--output {self.path} is not this tool's JSON-lines output; give a new file") from None
        if not records or not isinstance(records[0], dict) or records[0].get("run") != self.settings:
            raise UserError(f"--output {self.path} holds the records of a different run (other packages, command or "
                            "settings); give a new file to start one")
        for record in records[1:]:
            if "described" in record:
                self.description = record["described"]
            else:
                self.done[record_key(record)] = record

    def finished(self, entry: Entry) -> dict | None:
        """The entry's record from an earlier run, unless it was an error (errors are tried again)."""
        record = self.done.get(entry.key)
        return record if record is not None and "error" not in record else None

    def append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(descriptor, line)  # one write of the whole line: a kill leaves it whole or absent
        finally:
            os.close(descriptor)


def record_key(record: dict) -> str:
    return json.dumps([record.get("audio_filepath"), record.get("reference")])


# ---------------------------------------------------------------------------------------------------------------
# Running


@dataclass
class Progress:
    """Files, audio hours, RTFx and ETA on stderr while records arrive."""

    total: int
    audio_seconds: callable
    started: float = field(default_factory=time.perf_counter)
    audio: float = 0.0

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        from exporters.cli import console

        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                       TextColumn("{task.fields[hours]} h audio, RTFx {task.fields[rtfx]}"), TimeRemainingColumn(),
                       console=console, transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("", total=self.total, hours="0.00", rtfx="-")
        return self

    def advance(self, record: dict) -> None:
        self.audio += self.audio_seconds(record)
        wall = time.perf_counter() - self.started
        self.bar.update(self.task, advance=1, hours=f"{self.audio / 3600:.2f}",
                        rtfx=f"{self.audio / wall:.1f}" if wall else "-")

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


@dataclass(frozen=True)
class Described:
    """A worker opened the work: what it says of it (work.describe)."""

    description: dict


@dataclass(frozen=True)
class Finished:
    """A worker finished an entry: its record, and the worker's peak resident memory so far."""

    entry: Entry
    record: dict
    peak_bytes: int = 0


@dataclass
class Outcome:
    records: list[dict]  # one per entry, in manifest order
    description: dict  # what a worker said of what it opened (work.describe)
    worker_peak_bytes: int = 0  # the largest resident memory a worker reached (this process for --jobs 1)
    # Audio seconds per wall second once every worker was ready (start-up and shut-down excluded): the records
    # finished after the last worker said it was ready, over the time from then to the last record.
    steady_rate: float | None = None


def run(work, entries: list[Entry], jobs: int | None = None, output: Path | None = None, ray: str | None = None,
        on_record=None, progress: bool = True) -> Outcome:
    """Every entry's record, in manifest order: from `output` where an earlier run finished it, else made by
    `jobs` local workers (default: default_jobs) or by Ray (`ray`: "auto" or an address). `on_record(record)` is
    called in manifest order as soon as each record and those before it are known."""
    from exporters.interrupts import counting, one_done, uninterrupted

    check_jobs(jobs)
    records_file = RecordFile(output, work.settings()).open() if output is not None else None
    known = {e.index: records_file.finished(e) for e in entries} if records_file else {}
    known = {index: record for index, record in known.items() if record is not None}
    description = records_file.description if records_file else None
    peak, ready_at, last_record_at, steady_audio = 0, None, None, 0.0
    pending = [e for e in entries if e.index not in known]
    ordered, next_index = {}, 0

    def arrived(index: int, record: dict) -> None:
        nonlocal next_index
        ordered[index] = record
        while next_index < len(entries) and next_index in ordered:
            if on_record is not None:
                on_record(ordered[next_index])
            next_index += 1

    counting(len(entries), work.stage)
    for index, record in known.items():
        arrived(index, record)
        one_done()
    if pending:
        if ray is not None:
            connect_ray(ray)  # before anything is shown: an unreachable cluster is one line
        executor = ray_records(work, pending, ray) if ray is not None else \
            local_records(work, pending, jobs or default_jobs(work, len(pending)))
        from exporters.cli import console

        progress = progress and console.is_terminal  # a bar in a log would be noise
        bar = Progress(len(pending), work.audio_seconds) if progress else contextlib.nullcontext()
        with bar, contextlib.closing(executor):
            for event in executor:
                if isinstance(event, Described):
                    ready_at, steady_audio = time.perf_counter(), 0.0
                    if description is None and records_file is not None:
                        records_file.append({"described": event.description})
                    description = description or event.description
                    continue
                peak = max(peak, event.peak_bytes)
                steady_audio += work.audio_seconds(event.record)
                last_record_at = time.perf_counter()
                with uninterrupted():
                    if records_file is not None:
                        records_file.append(event.record)
                    arrived(event.entry.index, event.record)
                    one_done()
                if progress:
                    bar.advance(event.record)
    steady = steady_audio / (last_record_at - ready_at) if ready_at and steady_audio else None
    return Outcome([ordered[e.index] for e in entries], description or {}, peak, steady)


def local_records(work, entries: list[Entry], jobs: int):
    """Described, then Finished entries as they finish: in this process for one job, else from `jobs` worker
    processes."""
    if jobs == 1:
        state = work.open()
        with contextlib.closing(state) if hasattr(state, "close") else contextlib.nullcontext():
            yield Described(work.describe(state))
            for entry in entries:
                record = work.record(state, entry)
                yield Finished(entry, record, peak_resident_bytes())
        return
    pool = WorkerPool(work, jobs, threads=max(1, cores_available() // jobs))
    try:
        yield from pool.records(entries)
    finally:
        pool.close()


class WorkerPool:
    """Worker processes (spawned: no torch state is forked) that each open the work once, then decode one file
    at a time as the parent hands them out; the parent sees a worker die (its process sentinel) and knows its
    file. The workers' temporary files go to one folder the parent removes at the end: a worker killed, or
    ended with os._exit, cleans nothing up itself."""

    def __init__(self, work, jobs: int, threads: int):
        import multiprocessing
        import tempfile

        self.context = multiprocessing.get_context("spawn")
        self.work, self.jobs, self.threads = work, jobs, threads
        self.workers: list[Worker] = []
        self.scratch = tempfile.mkdtemp(prefix="parakeet-coreml-workers-")

    def start(self) -> "Worker":
        parent, child = self.context.Pipe()
        process = self.context.Process(target=worker_main, args=(self.work, child, self.threads, self.scratch),
                                       daemon=True)
        process.start()
        child.close()
        worker = Worker(process, parent)
        self.workers.append(worker)
        return worker

    def records(self, entries: list[Entry]):
        """Described once per worker started, Finished per entry."""
        from multiprocessing.connection import wait

        queue = list(reversed(entries))
        attempts: dict[int, int] = {}
        deaths_opening = 0
        for _ in range(min(self.jobs, len(entries))):
            self.start()
        while queue or any(w.entry is not None for w in self.workers):
            for worker in self.workers:
                if worker.ready and worker.entry is None and queue:
                    worker.give(queue.pop())
            waiting = {w.connection: w for w in self.workers} | {w.process.sentinel: w for w in self.workers}
            for signalled in wait(list(waiting)):
                worker = waiting[signalled]
                if worker not in self.workers:
                    continue
                message = worker.receive() if signalled is worker.connection else None
                if message is None:  # the process died
                    self.workers.remove(worker)
                    worker.connection.close()
                    worker.process.join(timeout=5)  # its exit code, said below
                    lost = worker.entry
                    if not worker.ready:
                        deaths_opening += 1
                        if deaths_opening == ATTEMPTS:
                            raise UserError(f"workers died {ATTEMPTS} times while opening the packages (last exit "
                                            f"code {worker.process.exitcode})")
                    if lost is not None:
                        attempts[lost.index] = attempts.get(lost.index, 0) + 1
                        if attempts[lost.index] < ATTEMPTS:
                            queue.append(lost)
                        else:
                            yield Finished(lost, error_record(lost, f"the worker decoding it died {ATTEMPTS} times "
                                                                    f"(last exit code {worker.process.exitcode})"))
                    if queue and len(self.workers) < self.jobs:
                        self.start()
                elif message[0] == "ready":
                    worker.ready = True
                    yield Described(message[1])
                elif message[0] == "failed":
                    raise UserError(message[1])
                elif message[0] == "record":
                    entry, worker.entry = worker.entry, None
                    yield Finished(entry, message[1], message[2])

    def close(self) -> None:
        """Idle workers end when their pipe closes; a worker still decoding (an interrupted run) is killed."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.connection.close()
            if worker.entry is not None:
                worker.process.terminate()  # it unwinds (NeMo's temporary folders removed), then ends
        for worker in self.workers:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.workers = []
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass(eq=False)
class Worker:
    process: object
    connection: object
    ready: bool = False
    entry: Entry | None = None

    def give(self, entry: Entry) -> None:
        self.entry = entry
        self.connection.send(entry)

    def receive(self):
        """The worker's next message, or None once it has gone."""
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            return None


def worker_main(work, connection, threads: int, scratch: str) -> None:
    """A worker process: its share of the cores, the work opened once, then one record per entry received until
    the parent closes the pipe. Ctrl-C goes to the parent, which ends busy workers with SIGTERM: that unwinds
    here (temporary folders removed) and ends the process quietly. An idle worker whose pipe closed ends at once:
    the interpreter's teardown of torch and NeMo takes seconds the parent would wait, and what it would clean up is
    in `scratch`, the pool's temporary folder."""
    from exporters.interrupts import raise_interrupt, was_interrupted

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_interrupt)
    os.environ["TMPDIR"] = tempfile.tempdir = scratch  # before torch, which makes a folder when imported
    try:
        share_cores(threads)
        single_process_progress_lock()
        try:
            state = work.open()
        except Exception as error:  # noqa: BLE001 - said by the parent in one line (a backend missing, bad packages)
            connection.send(("failed", first_line(error)))
            return
        connection.send(("ready", work.describe(state)))
        while True:
            try:
                entry = connection.recv()
            except EOFError:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            record = work.record(state, entry)
            connection.send(("record", record, peak_resident_bytes()))
    except (KeyboardInterrupt, BrokenPipeError, EOFError):  # stopped by the parent, or it has gone
        return
    except Exception:
        if was_interrupted():  # a library stopped mid-operation (omegaconf inside NeMo) raises its own error instead
            return
        raise


def single_process_progress_lock() -> None:
    """tqdm (NeMo's transcribe loop) guards its bars with a lock shared between processes: a named semaphore,
    which a worker that ends with os._exit leaves for the resource tracker to report as leaked. A worker's bars
    are its own, so a thread lock serves."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def peak_resident_bytes() -> int:
    """This process's largest resident memory so far (its own: not a parent's, as getrusage says after exec)."""
    from exporters.memory import process_peak_rss_mb

    return int(process_peak_rss_mb() * 2**20)


def share_cores(threads: int) -> None:
    """torch's and the BLAS libraries' threads limited to this worker's share (threads beyond it spin against the
    other workers')."""
    import sys

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)  # read when torch and the BLAS libraries load
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)


# ---------------------------------------------------------------------------------------------------------------
# Ray


RAY_EXTRA = ("install the cluster extra: pip install 'parakeet-coreml[cluster]' "
             "(in this checkout: uv sync --extra cluster)")


def connect_ray(address: str):
    """Ray, connected: `auto` joins the running cluster (RAY_ADDRESS, or one started on this machine) or starts a
    local one; anything else is a cluster's address."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    if ray.is_initialized():
        return ray
    if address != "auto":
        check_reachable(address)
    try:
        with quiet_ray():
            ray.init(address=None if address == "auto" else address, logging_level="ERROR",
                     log_to_driver=False, include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({first_line(error)})") from None
    return ray


def check_reachable(address: str, timeout_seconds: float = 5.0) -> None:
    """A cluster address (host:port, or ray://host:port) that accepts a TCP connection; Ray itself would retry an
    unreachable one for minutes."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise UserError(f"--ray {address}: not a cluster address (host:port or ray://host:port), nor 'auto'")
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_seconds).close()
    except OSError as error:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({error.strerror or error})") from None


@contextlib.contextmanager
def quiet_ray():
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class RayWorker:
    """A Ray actor: the work opened once on its node (the packages' path must be readable there: a shared
    filesystem), then one record per call."""

    def __init__(self, work, threads: int):
        share_cores(threads)
        self.work, self.state, self.failure = work, None, None
        try:
            self.state = work.open()
        except Exception as error:  # noqa: BLE001 - said by the first call: an actor that fails to start is "dead"
            self.failure = UserError(first_line(error))

    def describe(self) -> dict:
        if self.failure is not None:
            raise self.failure
        return self.work.describe(self.state)

    def record(self, entry: Entry) -> tuple[dict, int]:
        if self.failure is not None:
            raise self.failure
        return self.work.record(self.state, entry), peak_resident_bytes()


def ray_records(work, entries: list[Entry], address: str, threads: int = 1):
    """Described, then Finished entries as Ray actors finish them: as many actors as the cluster has CPUs for
    (each takes `threads`),
    each fed one file at a time. An actor that dies is restarted and its file tried once more (Ray's
    max_task_retries), then recorded as an error."""
    ray = connect_ray(address)
    from ray.exceptions import RayActorError, RayTaskError

    cpus = int(ray.cluster_resources().get("CPU", 1))
    actor_class = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=ATTEMPTS - 1)(RayWorker)
    actors = [actor_class.remote(work, threads) for _ in range(max(1, min(cpus // threads, len(entries))))]
    queue, running = list(reversed(entries)), {}
    try:
        try:
            for description in ray.get([actor.describe.remote() for actor in actors]):
                yield Described(description)
        except RayTaskError as error:
            raise UserError(str(error.cause) if isinstance(error.cause, UserError) else first_line(error)) from None
        for actor in actors:
            if queue:
                entry = queue.pop()
                running[actor.record.remote(entry)] = (entry, actor)
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            entry, actor = running.pop(done)
            peak = 0
            try:
                record, peak = ray.get(done)
            except RayTaskError as error:
                if isinstance(error.cause, UserError):
                    raise UserError(str(error.cause)) from None
                record = error_record(entry, f"its Ray task failed ({first_line(error.cause or error)})")
            except RayActorError as error:
                record = error_record(entry, f"the Ray worker decoding it died {ATTEMPTS} times "
                                             f"({first_line(error)})")
            yield Finished(entry, record, peak)
            if queue:
                entry = queue.pop()
                running[actor.record.remote(entry)] = (entry, actor)
    finally:
        for actor in actors:
            ray.kill(actor)
