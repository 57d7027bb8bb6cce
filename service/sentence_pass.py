"""The sentence-vector pass that follows each upload, in the background (rag.sentence_vectors).

An upload's job ends as soon as its files are committed, and so searchable; the pass that embeds their sentences
(about as long again as the chunks) runs afterwards in a thread of its own, and questions asked meanwhile embed their
passages' sentences on the fly. One pass at a time per knowledge base: the documents of uploads that end meanwhile
join the running one. Before a knowledge base's store is closed (a re-embed's swap, its deletion, the app's shutdown)
its pass is stopped between two batches and waited for. Each batch is one short transaction, so a kill at any point
leaves chunks without sentence vectors, which answering embeds when asked: the store answers the same.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ingest.pipeline import Ingestor
from rag.wording import counted

logger = logging.getLogger(__name__)

THREAD_PREFIX = "loupe-sentences-"
STOP_WAIT_S = 120.0  # a stop waits for the batch being embedded (seconds on 2 cores); a hung one is left behind


@dataclass
class _Pass:
    """One knowledge base's running pass: the documents still to fill, and how far it got."""

    ingestor: Ingestor
    pending: set[int]
    total: int  # passages of the documents given to this pass
    done: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class SentencePasses:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _passes and each pass's pending, total and ingestor
        self._passes: dict[str, _Pass] = {}

    def start(self, kb: str, ingestor: Ingestor, document_ids: list[int], chunks: int) -> None:
        """Fill the sentence vectors of these documents (`chunks` passages in all) of `kb` in the background, after
        those of the pass already running there, if one is."""
        if not document_ids:
            return
        with self._lock:
            running = self._passes.get(kb)
            if running is not None and not running.stop.is_set():
                running.pending.update(document_ids)
                running.total += chunks
                running.ingestor = ingestor  # the newest upload's: the store that is open now
                return
            run = _Pass(ingestor, set(document_ids), chunks)
            run.thread = threading.Thread(target=self._work, args=(kb, run), name=f"{THREAD_PREFIX}{kb}", daemon=True)
            self._passes[kb] = run
        run.thread.start()

    def status(self, kb: str) -> str:
        """What the knowledge base's pass is doing, in words; empty when none runs."""
        with self._lock:
            run = self._passes.get(kb)
            if run is None:
                return ""
            doing = "stopping" if run.stop.is_set() else "preparing"
            return f"{doing} sentence vectors: {run.done} of {counted(run.total, 'passage')}"

    def wait(self, kb: str, timeout_s: float | None = None) -> bool:
        """Until the knowledge base's pass has ended; False when it still runs after `timeout_s`."""
        with self._lock:
            run = self._passes.get(kb)
        if run is None or run.thread is None:
            return True
        run.thread.join(timeout_s)
        return not run.thread.is_alive()

    def stop(self, kb: str) -> None:
        """End the knowledge base's pass before its next batch, and wait for it: its store is about to close. The
        documents it had not reached keep chunks without sentence vectors (answers embed those when asked)."""
        with self._lock:
            run = self._passes.get(kb)
            if run is None:
                return
            run.stop.set()
        self._join(kb, run)

    def close(self) -> None:
        """Stop every pass (the app shuts down)."""
        with self._lock:
            running = list(self._passes.items())
            for _, run in running:
                run.stop.set()
        for kb, run in running:
            self._join(kb, run)

    @staticmethod
    def _join(kb: str, run: _Pass) -> None:
        if run.thread is None or run.thread is threading.current_thread():
            return
        run.thread.join(STOP_WAIT_S)
        if run.thread.is_alive():
            logger.warning("%s: the sentence-vector pass did not stop within %.0f s", kb, STOP_WAIT_S)

    def _work(self, kb: str, run: _Pass) -> None:
        """Fill the pending documents, batch after batch, until none are left or the pass is stopped."""
        while True:
            with self._lock:
                document_ids, run.pending = run.pending, set()
                if not document_ids or run.stop.is_set():
                    if self._passes.get(kb) is run:
                        del self._passes[kb]
                    return
                ingestor, before = run.ingestor, run.done

            def heard(done: int, before: int = before) -> None:
                run.done = before + done

            try:
                ingestor.fill_sentences(sorted(document_ids), progress=heard, stop=run.stop)
            except Exception:  # its chunks stay without sentence vectors: answers embed them when asked
                logger.exception("%s: the sentence-vector pass over %d documents failed", kb, len(document_ids))
