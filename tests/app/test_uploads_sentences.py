"""An upload's job ends when its files are committed; their sentence vectors are filled afterwards, in the background
(service.sentence_pass), one pass at a time per knowledge base, stopped safely when the app shuts down."""

from __future__ import annotations

import threading
import time

import pytest

from rag import sentence_vectors
from rag.components import Models
from rag.text_embedder import TextEmbedder
from service import LoupeService
from service.sentence_pass import THREAD_PREFIX
from tests.conftest import make_settings

QUESTION = "At what temperature is the seed vault kept?"
GATE_WAIT_S = 300  # a bound on waiting for the other thread, never a speed claim


class GatedEmbedder(TextEmbedder):
    """The real MiniLM; calls from the background sentence pass wait at a gate the test opens (instrumentation, so
    the test can look at the store while the pass is under way)."""

    def __init__(self, real: TextEmbedder) -> None:
        self.__dict__.update(real.__dict__)
        self.entered = threading.Semaphore(0)  # released each time the pass reaches the gate
        self.opened = threading.Event()  # (not `gate`: the embedder has a ComputeGate of that name)

    def embed(self, texts, batch_size=0, urgent=False, **options):
        if threading.current_thread().name.startswith(THREAD_PREFIX):
            self.entered.release()
            assert self.opened.wait(GATE_WAIT_S), "the test never opened the gate"
        return super().embed(texts, batch_size, urgent, **options)


@pytest.fixture
def gated(text_embedder) -> GatedEmbedder:
    return GatedEmbedder(text_embedder)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "indexes" / "default")


def wait_until(condition, timeout_s: float = GATE_WAIT_S) -> bool:
    """Whether `condition()` came true within the bound (it polls: another thread makes it true)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def new_service(settings, embedder) -> LoupeService:
    return LoupeService(settings, Models(settings, embedder, None, ""))


def stored_sentences(service: LoupeService) -> tuple[list[int], set[int]]:
    """Every chunk id of the default knowledge base, and those that have sentence vectors."""
    kb = service.kb()
    chunk_ids = [chunk_id for chunk_id, _, _ in kb.chunk_texts()]
    return chunk_ids, set(kb.sentence_vectors(chunk_ids))


def test_the_upload_job_ends_before_the_sentence_pass_which_questions_do_not_wait_for(settings, gated, docs_dir):
    service = new_service(settings, gated)
    try:
        rows = service.ingest(None, [("aurora.md", docs_dir / "aurora.md")])
        assert [row.status for row in rows] == ["added"]  # the job is over: its file is in
        assert gated.entered.acquire(timeout=GATE_WAIT_S)  # ... while the pass waits at the gate
        assert service.uploads.sentence_status(None).startswith("preparing sentence vectors: 0 of ")
        chunk_ids, filled = stored_sentences(service)
        assert chunk_ids and not filled

        answer = service.ask(None, QUESTION, mode="extractive")  # answered meanwhile, sentences embedded on the fly
        assert "eighteen" in answer.text

        # another upload meanwhile: its job ends too, and its documents join the one pass of this knowledge base
        assert [row.status for row in service.ingest(None, [("lighthouse.txt", docs_dir / "lighthouse.txt")])] == [
            "added"]
        assert len([t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]) == 1
        chunk_ids, filled = stored_sentences(service)
        assert not filled
        assert service.uploads.sentence_status(None).endswith(f"of {len(chunk_ids)} passages")

        gated.opened.set()
        assert service.uploads.wait_for_sentences(None, GATE_WAIT_S)
        assert stored_sentences(service)[1] == set(chunk_ids)
        assert service.uploads.sentence_status(None) == ""
        assert service.ask(None, QUESTION, mode="extractive").text == answer.text
    finally:
        gated.opened.set()
        service.close()


def test_a_pass_stopped_by_shutdown_leaves_a_store_that_answers_the_same(settings, gated, text_embedder, docs_dir,
                                                                         monkeypatch):
    monkeypatch.setattr(sentence_vectors, "FILL_BATCH", 1)  # one chunk a batch: the stop falls between batches
    service = new_service(settings, gated)
    rows = service.ingest(None, [(name, docs_dir / name) for name in ("aurora.md", "lighthouse.txt")])
    assert [row.status for row in rows] == ["added", "added"]
    assert gated.entered.acquire(timeout=GATE_WAIT_S)  # the pass is inside its first batch
    chunk_ids, _ = stored_sentences(service)
    assert len(chunk_ids) >= 3
    closing = threading.Thread(target=service.close)
    closing.start()  # asks the pass to stop, and waits for the batch under way
    assert wait_until(lambda: service.uploads.sentence_status(None).startswith("stopping sentence vectors"))
    gated.opened.set()
    closing.join(GATE_WAIT_S)
    assert not closing.is_alive()

    again = new_service(settings, text_embedder)
    try:
        _, filled = stored_sentences(again)
        assert len(filled) == 1  # the batch under way was written whole, and nothing after it
        assert "eighteen" in again.ask(None, QUESTION, mode="extractive").text
    finally:
        again.close()
