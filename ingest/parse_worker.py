"""Parses untrusted files in a worker process, bounded in time and memory, so one bad file fails alone.

`read_file_bounded` is `read_file` run in a separate Python process: the parse holds that process's GIL,
not the server's, and the server keeps serving chat and other uploads meanwhile. Items, warnings and OCR
seconds come back over a socket as the worker produces them, and a progress report as OCR starts on each page
(ParsedFile.on_progress hears it); the worker blocks when the consumer does not read, so a large file never
piles up in memory.

- Time: `parse_timeout_s` bounds the time spent waiting for the parser (from the call to the last item,
  less the time the consumer spends on its own work between items, such as embedding a batch). Past it
  the worker is killed and replaced.
- Memory: before each file the worker caps its address space (RLIMIT_AS) at its current size plus
  `parse_memory_bytes`, so the limit means "memory this file may take". A file that needs more fails
  with MemoryError there, and the worker is replaced.

Workers are started with `python -m ingest.parse_worker` rather than `multiprocessing`: a forked child
would inherit the server's torch threads, and a spawned one re-imports the server's main module.
Idle workers are kept for the next file (starting one costs about half a second).
"""

from __future__ import annotations

import atexit
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, ParsedFile, ReadLimits
from ingest.readers import read_file

logger = logging.getLogger(__name__)

MAX_IDLE_WORKERS = 2  # kept started between files; more run at once when more batches do
_EXIT_OUT_OF_MEMORY = 3  # the worker's exit status after a MemoryError
_REPO_ROOT = Path(__file__).resolve().parents[1]


def read_file_bounded(path: Path, ocr: bool, limits: ReadLimits) -> ParsedFile:
    """`read_file(path, ocr engine or None, limits)`, parsed in a worker process within `limits`.

    Raises IngestError as `read_file` does when the file cannot be opened; while the items are consumed,
    IngestError for a file past a cap, the time limit or the memory limit.
    """
    path = Path(path)
    session = _Session(_POOL.acquire(), path, limits)
    opened = session.request(ocr)
    parsed = ParsedFile(path=path, kind=opened[1], page_count=opened[2], items=iter(()), warnings=list(opened[3]))
    parsed.items = _RemoteItems(session, parsed)
    return parsed


def warm_up() -> None:
    """Starts a parse worker now (in the background), so that the first upload does not wait for one."""
    _POOL.prestart()


class _Worker:
    """One worker process and the parent's end of the socket to it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT),
                                                                             os.environ.get("PYTHONPATH")])),
                   # each thread that allocates gets its own 64 MB malloc arena: they would eat the memory budget
                   "MALLOC_ARENA_MAX": "2"}
            self.process = subprocess.Popen([sys.executable, "-m", "ingest.parse_worker", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        self.connection = Connection(ours.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kills the process (it may be mid-file) and reaps it."""
        self.process.kill()
        self.process.wait()
        self.connection.close()


class _Pool:
    """Idle workers, shared by every thread; each file takes a worker of its own."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def acquire(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.stop()
        return _Worker()  # outside the lock: starting takes a while

    def release(self, worker: _Worker) -> None:
        """Takes back a worker that finished its file cleanly."""
        with self._lock:
            if worker.alive() and len(self._idle) < MAX_IDLE_WORKERS:
                self._idle.append(worker)
                return
        worker.stop()

    def prestart(self) -> None:
        """Starts a worker in the background, so that the next file need not wait for one."""
        threading.Thread(target=lambda: self.release(_Worker()), name="parse-worker-start", daemon=True).start()

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


class _Session:
    """One file's exchange with its worker: the parent's side of the protocol and of the time limit."""

    def __init__(self, worker: _Worker, path: Path, limits: ReadLimits) -> None:
        self.worker = worker
        self.path = path
        self.limits = limits
        self.waited = 0.0  # seconds spent waiting for the parser, against limits.parse_timeout_s
        self.finished = False

    def request(self, ocr: bool) -> tuple:
        """Sends the file; returns the worker's ("opened", kind, page_count, warnings)."""
        try:
            # an absolute path, not a resolved one: read_file must see (and refuse) a symbolic link
            self.worker.connection.send((os.path.abspath(self.path), ocr, self.limits))
        except OSError as exc:
            raise self._fail(f"the parser stopped ({exc.strerror or exc})") from exc
        return self.receive()

    def receive(self) -> tuple:
        """The worker's next message; raises IngestError (and ends the session) for any failure."""
        remaining = self.limits.parse_timeout_s - self.waited
        start = time.perf_counter()
        try:
            ready = remaining > 0 and self.worker.connection.poll(remaining)
            message = self.worker.connection.recv() if ready else None
        except (EOFError, OSError):
            raise self._fail(self._death()) from None
        finally:
            self.waited += time.perf_counter() - start
        if message is None:
            raise self._fail(f"took longer than {self.limits.parse_timeout_s:g} s to parse (LOUPE_PARSE_TIMEOUT_S)")
        if message[0] in ("opened", "item", "progress"):
            return message
        if message[0] == "done":
            self.end(reuse=True)
            return message
        if message[0] == "refused":
            self.end(reuse=True)
            raise IngestError(self.path, message[1])
        logger.error("parsing %s failed in the worker:\n%s", self.path.name, message[2])  # "failed": a bug
        self.end(reuse=True)
        raise IngestError(self.path, f"the parser failed ({message[1]})")

    def end(self, reuse: bool) -> None:
        """Returns the worker to the pool, or kills it when it may be mid-file or damaged."""
        if self.finished:
            return
        self.finished = True
        if reuse:
            _POOL.release(self.worker)
        else:
            self.worker.stop()
            _POOL.prestart()  # its replacement

    def _fail(self, reason: str) -> IngestError:
        self.end(reuse=False)
        return IngestError(self.path, reason)

    def _death(self) -> str:
        code = self.worker.process.wait()
        if code in (_EXIT_OUT_OF_MEMORY, -signal.SIGKILL):  # SIGKILL: what the kernel's OOM killer sends
            return self._memory_message()
        if code < 0:
            return f"the parser crashed (signal {-code})"
        return f"the parser stopped (exit status {code})"

    def _memory_message(self) -> str:
        return f"needs more than {self.limits.parse_memory_bytes / 2**20:g} MB to parse (LOUPE_PARSE_MEMORY_MB)"


class _RemoteItems(Iterator[Item]):
    """ParsedFile.items of a file parsed in a worker; closing it early (or dropping it) kills that worker."""

    def __init__(self, session: _Session, parsed: ParsedFile) -> None:
        self._session = session
        self._parsed = weakref.ref(parsed)  # not a strong one: ParsedFile holds this iterator

    def __next__(self) -> Item:
        while not self._session.finished:
            message = self._session.receive()
            parsed = self._parsed()
            if message[0] == "progress":  # ("progress", stage, page, page count): no item yet
                if parsed is not None and parsed.on_progress is not None:
                    parsed.on_progress(*message[1:])
                continue
            if parsed is not None:
                parsed.warnings.extend(message[-2])
                parsed.ocr_seconds = message[-1]
            if message[0] == "done":
                break
            return message[1]
        raise StopIteration

    def close(self) -> None:
        """Abandons the rest of the file: the worker may be mid-page, so it is killed, not reused."""
        self._session.end(reuse=False)

    def __del__(self) -> None:
        self.close()


# --- the worker process -------------------------------------------------------------------------


def _serve(connection: Connection) -> None:
    """Parses one file per request until the parent closes the socket.

    After a MemoryError the process exits (its heap may be left in pieces) and the parent replaces it.
    """
    engine: OcrEngine | None = None
    while True:
        try:
            path, ocr, limits = connection.recv()
        except EOFError:
            return
        try:
            if ocr and engine is None:
                engine = OcrEngine()
                engine.load()  # before the memory cap: the models are the worker's, not the file's
            _limit_address_space(limits.parse_memory_bytes)
            _stream(connection, Path(path), engine if ocr else None, limits)
        except MemoryError:
            os._exit(_EXIT_OUT_OF_MEMORY)  # no clean-up: anything more may need memory too


def _stream(connection: Connection, path: Path, engine: OcrEngine | None, limits: ReadLimits) -> None:
    """Sends ("opened", ...), then ("item", item, new warnings, OCR seconds) per item, with ("progress", "ocr",
    page, page count) as OCR starts on a page, then ("done", ...)."""
    ocr_before = engine.seconds if engine else 0.0
    try:
        parsed = read_file(path, engine, limits)
        connection.send(("opened", parsed.kind, parsed.page_count, list(parsed.warnings)))
        pages = _PageReporter(connection, parsed.page_count)
        if engine:
            engine.on_recognise = pages.recognising
        sent = len(parsed.warnings)
        for item in parsed.items:
            pages.last_page = item.page
            connection.send(("item", item, parsed.warnings[sent:], engine.seconds - ocr_before if engine else 0.0))
            sent = len(parsed.warnings)
        connection.send(("done", parsed.warnings[sent:], engine.seconds - ocr_before if engine else 0.0))
    except IngestError as exc:
        connection.send(("refused", exc.reason))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a reader bug: the parent logs the traceback and fails the file
        connection.send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        if engine:
            engine.on_recognise = None


class _PageReporter:
    """Sends ("progress", "ocr", page, page count) once per page as OCR starts on it. A reader that does not name
    the page has it taken as the one after the last page items came from: pages are read in order, and the
    reader yields a page's items once its OCR is done."""

    def __init__(self, connection: Connection, page_count: int) -> None:
        self.connection = connection
        self.page_count = page_count
        self.last_page = 0  # the page of the last item sent
        self._reported = 0

    def recognising(self, page: int | None) -> None:
        page = page or min(self.last_page + 1, self.page_count)
        if page != self._reported:
            self._reported = page
            self.connection.send(("progress", "ocr", page, self.page_count))


def _limit_address_space(extra_bytes: int) -> None:
    """Caps this process's address space at its current size plus `extra_bytes`."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            current = int(statm.read().split()[0]) * resource.getpagesize()
    except OSError:  # not Linux: no /proc; RLIMIT_AS is not enforced on macOS anyway
        logger.warning("cannot measure the parse worker's memory: parsing runs without a memory limit")
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra_bytes if hard == resource.RLIM_INFINITY else min(current + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _main(argv: list[str]) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when this worker stops (it closes
    # the pipe or kills it), so the worker ignores the interrupt instead of printing a traceback mid-shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="parse worker: %(levelname)s %(name)s: %(message)s")
    _serve(Connection(int(argv[1])))


if __name__ == "__main__":
    _main(sys.argv)
