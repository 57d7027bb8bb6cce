"""The knowledge base on disk: persistence, deletion, model checks, recovery after a crash, and sharing a store
with another process (no lock to read, short writes, a clear Busy, image files never swept while in flight)."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag.components import Models
from rag.errors import Busy
from rag.records import ModelId, NewChunk, NewDocument
from rag.store import DuplicateDocument, KnowledgeBase, StoreError
from rag.vector_index import scratch_path
from tests.conftest import make_settings

TEXT = ModelId("test-text", 4)
IMAGE = ModelId("test-image", 3)


def unit(*values):
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


def new_document(name, sha=None, kind="text"):
    return NewDocument(f"/docs/{name}", name, kind, sha or name, 10, 1)


def add_doc(kb, name, vectors, sha=None):
    with kb.write() as writer:
        doc = writer.add_document(new_document(name, sha))
        chunks = [NewChunk(page=i + 1, text=f"{name} chunk {i}") for i in range(len(vectors))]
        writer.add_chunks(doc, 0, chunks, np.stack(vectors))
    return doc


def test_search_returns_nearest_chunks_with_citations(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    add_doc(kb, "a.txt", [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    add_doc(kb, "b.txt", [unit(0, 0, 1, 0)])
    hits = kb.search_chunks(unit(0, 0.1, 1, 0)[None], 2)
    assert [(h.file, h.page) for h, _ in hits] == [("b.txt", 1), ("a.txt", 2)]
    assert hits[0][1] > hits[1][1]


def test_reopen_keeps_everything_and_delete_removes_vectors(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    first = add_doc(kb, "a.txt", [unit(1, 0, 0, 0)])
    add_doc(kb, "b.txt", [unit(0, 1, 0, 0)])
    kb.close()
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    assert [d.name for d in kb.documents()] == ["a.txt", "b.txt"]
    assert kb.search_chunks(unit(1, 0, 0, 0)[None], 1)[0][0].file == "a.txt"
    kb.delete(first)
    assert kb.text_index.size == 1
    kb.close()
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    assert [h.file for h, _ in kb.search_chunks(unit(1, 0, 0, 0)[None], 5)] == ["b.txt"]


def test_failed_write_leaves_store_unchanged(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    add_doc(kb, "a.txt", [unit(1, 0, 0, 0)])
    with pytest.raises(RuntimeError), kb.write() as writer:
        doc = writer.add_document(new_document("c.txt"))
        writer.add_chunks(doc, 0, [NewChunk(1, "c")], unit(0, 0, 0, 1)[None])
        raise RuntimeError("reader failed half-way")
    assert [d.name for d in kb.documents()] == ["a.txt"]
    assert kb.text_index.size == 1


def test_different_model_is_a_clear_error(tmp_path):
    KnowledgeBase(tmp_path, TEXT, use_gpu=False).close()
    with pytest.raises(StoreError, match="built with the text model 'test-text'"):
        KnowledgeBase(tmp_path, ModelId("other-model", 4), use_gpu=False)


def test_index_lost_after_commit_is_rebuilt_from_catalog(tmp_path):
    """A crash between the catalog commit and the index save leaves an index of an older generation."""
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    add_doc(kb, "a.txt", [unit(1, 0, 0, 0)])
    kb.flush()
    stale = (tmp_path / "text-1.faiss").read_bytes()
    add_doc(kb, "b.txt", [unit(0, 1, 0, 0)])
    kb.close()
    (tmp_path / "text-2.faiss").unlink()
    (tmp_path / "text-1.faiss").write_bytes(stale)  # the state a kill at that moment would leave
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    assert kb.text_index.size == 2
    assert kb.search_chunks(unit(0, 1, 0, 0)[None], 1)[0][0].file == "b.txt"
    assert sorted(p.name for p in tmp_path.glob("*.faiss")) == ["text-2.faiss"]


def test_second_process_writes_are_seen(tmp_path):
    reader = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    writer = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    add_doc(writer, "late.txt", [unit(0, 0, 0, 1)])
    assert reader.search_chunks(unit(0, 0, 0, 1)[None], 1)[0][0].file == "late.txt"


def test_images_without_vectors_wait_and_are_embedded_later(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)  # no image model: CLIP weights missing
    with kb.staging() as staged:
        staged.add_image(1, "p.png", b"\x89PNG fake bytes", None)
        doc, _ = kb.commit(new_document("p.png", kind="image"), staged)
    [image_id] = [i.id for i in kb.images_waiting()]
    assert kb.search_images(unit(1, 0, 0)[None], 1) == []
    kb.close()
    kb = KnowledgeBase(tmp_path, TEXT, IMAGE, use_gpu=False)
    with kb.write() as writer:
        writer.set_image_vector(image_id, unit(1, 0, 0))
    assert kb.images_waiting() == []
    image, score = kb.search_images(unit(1, 0, 0)[None], 1)[0]
    assert image.id == image_id and score == pytest.approx(1.0)
    assert kb.image_path(image).read_bytes() == b"\x89PNG fake bytes"
    kb.delete(doc)
    assert kb.search_images(unit(1, 0, 0)[None], 1) == []
    assert list((tmp_path / "images").iterdir()) == []  # the stored copy goes with its document


@pytest.fixture
def held_write_lock(tmp_path):
    """Another process in the middle of a write transaction (a raw SQLite connection holding the lock)."""
    holders = []

    def hold(folder):
        conn = sqlite3.connect(str(folder / "catalog.sqlite3"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        holders.append(conn)
        return conn

    yield hold
    for conn in holders:
        conn.rollback()
        conn.close()


def test_opening_and_reading_take_no_write_lock(tmp_path, held_write_lock):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    add_doc(kb, "a.txt", [unit(1, 0, 0, 0)])
    kb.close()
    held_write_lock(tmp_path)
    reader = KnowledgeBase(tmp_path, TEXT, use_gpu=False)  # the old code waited 30 s here, then failed
    assert [d.name for d in reader.documents()] == ["a.txt"]
    assert reader.search_chunks(unit(1, 0, 0, 0)[None], 1)[0][0].file == "a.txt"
    assert [d.name for d in KnowledgeBase.open_existing(tmp_path, TEXT.name, use_gpu=False).documents()] == ["a.txt"]


def test_a_write_that_waits_too_long_is_a_clear_busy_error(tmp_path, held_write_lock):
    kb = KnowledgeBase(tmp_path / "kb", TEXT, use_gpu=False, busy_timeout_s=0.2)
    doc = add_doc(kb, "a.txt", [unit(1, 0, 0, 0)])
    held_write_lock(tmp_path / "kb")
    with pytest.raises(Busy) as caught:
        kb.delete(doc)
    message = str(caught.value)
    assert message == "the knowledge base 'kb' is busy: another process is writing to it; try again in a moment"
    assert [d.name for d in kb.documents()] == ["a.txt"]


def test_files_of_a_dead_process_are_removed_and_a_live_ones_kept(tmp_path, held_write_lock):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged:
        staged.add_image(1, "p.png", b"\x89PNG kept bytes", None)
        kb.commit(new_document("p.png", kind="image"), staged)
    kb.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    for owner in (dead_pid, os.getpid()):
        (tmp_path / "staging" / f"{owner}-00ff").mkdir(parents=True)
        (tmp_path / "staging" / f"{owner}-00ff" / "chunks-000000.json").write_text("[]")
    (tmp_path / f"text-9.faiss.tmp-{dead_pid}-1").write_bytes(b"half an index")
    orphan = tmp_path / "images" / "0123.png"  # moved in by an ingest killed before its commit
    orphan.write_bytes(b"orphan")

    held_write_lock(tmp_path)  # another process is committing: its new files may not be referenced yet
    KnowledgeBase(tmp_path, TEXT, use_gpu=False).close()
    assert orphan.exists()  # not swept without the write lock
    assert not (tmp_path / "staging" / f"{dead_pid}-00ff").exists()
    assert (tmp_path / "staging" / f"{os.getpid()}-00ff").exists()
    assert not (tmp_path / f"text-9.faiss.tmp-{dead_pid}-1").exists()


def test_orphan_images_are_swept_under_the_write_lock(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged:
        staged.add_image(1, "p.png", b"\x89PNG kept bytes", None)
        kb.commit(new_document("p.png", kind="image"), staged)
    kb.close()
    orphan = tmp_path / "images" / "0123.png"
    orphan.write_bytes(b"orphan")
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    assert not orphan.exists()
    assert [kb.image_path(i).read_bytes() for i in kb.images_waiting()] == [b"\x89PNG kept bytes"]


def test_images_placed_by_an_uncommitted_write_survive_another_open(tmp_path):
    """Between moving staged image files into images/ and COMMIT, another process opens the store: the files are
    not referenced yet, and must not be swept."""
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged:
        staged.add_image(1, "p.png", b"\x89PNG new bytes", None)
        with kb.write() as writer:
            writer.add_staged(writer.add_document(new_document("p.png", kind="image")), staged)
            placed = list((tmp_path / "images").iterdir())
            KnowledgeBase(tmp_path, TEXT, use_gpu=False).close()
            assert [p.exists() for p in placed] == [True]
    assert [kb.image_path(i).read_bytes() for i in kb.images_waiting()] == [b"\x89PNG new bytes"]


def test_a_rolled_back_write_takes_its_image_files_back(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged, pytest.raises(RuntimeError):
        staged.add_image(1, "p.png", b"\x89PNG new bytes", None)
        with kb.write() as writer:
            writer.add_staged(writer.add_document(new_document("p.png", kind="image")), staged)
            raise RuntimeError("killed before the commit")
    assert list((tmp_path / "images").iterdir()) == []
    assert kb.documents() == []


def test_same_bytes_committed_by_another_process_first_are_a_duplicate(tmp_path):
    kb, other = KnowledgeBase(tmp_path, TEXT, use_gpu=False), KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged:
        staged.add_chunks([NewChunk(1, "text")], unit(1, 0, 0, 0)[None])
        add_doc(other, "copy.txt", [unit(1, 0, 0, 0)], sha="same")
        with pytest.raises(DuplicateDocument, match="already in the knowledge base as 'copy.txt'"):
            kb.commit(new_document("a.txt", sha="same"), staged)
    assert [d.name for d in kb.documents()] == ["copy.txt"]


def test_a_big_document_is_staged_on_disk_and_committed_whole(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    with kb.staging() as staged:
        for batch in range(5):
            staged.add_chunks([NewChunk(batch + 1, f"batch {batch} chunk {i}") for i in range(10)],
                              np.tile(unit(1, batch, 0, 0), (10, 1)))
        assert len(list(staged.folder.glob("chunks-*.npy"))) == 5  # on disk, not held in memory
        doc, replaced = kb.commit(new_document("big.txt"), staged)
    assert replaced == [] and list((tmp_path / "staging").iterdir()) == []
    chunks = kb.chunks_of_document(doc)
    assert [c.ordinal for c in chunks] == list(range(50)) and chunks[49].text == "batch 4 chunk 9"
    assert kb.text_index.size == 50
    with kb.staging() as staged:  # the same path again: the old version goes in the same transaction
        staged.add_chunks([NewChunk(1, "new")], unit(0, 1, 0, 0)[None])
        new, replaced = kb.commit(NewDocument("/docs/big.txt", "big.txt", "text", "v2", 3, 1), staged)
    assert [d.id for d in replaced] == [doc] and [d.id for d in kb.documents()] == [new]
    assert kb.text_index.size == 1


def test_index_files_are_written_under_a_name_of_their_own(tmp_path):
    names = [scratch_path(tmp_path / "text-1.faiss").name]
    thread = threading.Thread(target=lambda: names.append(scratch_path(tmp_path / "text-1.faiss").name))
    thread.start()
    thread.join()
    assert names[0] != names[1] and all(f".tmp-{os.getpid()}-" in name for name in names)


def test_device_cpu_keeps_faiss_on_the_cpu(monkeypatch, tmp_path, text_embedder):
    # No GPU exists on this machine: pretend FAISS sees one, to check which indexes would go to it.
    monkeypatch.setattr("rag.vector_index.faiss_gpu_count", lambda: 1)
    for device, on_gpu in (("cpu", False), ("auto", True)):
        models = Models(make_settings(tmp_path / device, device=device), text_embedder, None, "")
        kb = models.open_store()
        assert kb.text_index.on_gpu is on_gpu, device
        kb.close()


# --- scale: the change log, index bases saved now and then, ids never reused, approximate search -------------
def random_doc(kb, name, rng, chunks=10):
    return add_doc(kb, name, [unit(*v) for v in rng.standard_normal((chunks, TEXT.dim))])


def index_files(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("text-*")}


def logged(folder):
    with sqlite3.connect(folder / "catalog.sqlite3") as conn:
        return conn.execute("SELECT generation, kind, item, added FROM changes ORDER BY rowid").fetchall()


def catalog_chunk_ids(kb):
    return sorted(c.id for d in kb.documents() for c in kb.chunks_of_document(d.id))


def test_a_write_after_a_big_base_saves_only_the_change(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    rng = np.random.default_rng(0)
    for n in range(100):
        random_doc(kb, f"base-{n}.txt", rng)
    kb.flush()  # a base of 1,000 vectors
    base = index_files(tmp_path)
    assert list(base) == [f"text-{kb.generation}.faiss"] and logged(tmp_path) == []

    new = random_doc(kb, "new.txt", rng)
    kb.flush()
    new_ids = [c.id for c in kb.chunks_of_document(new)]
    assert index_files(tmp_path) == base  # no index file written: the catalog's log holds the change
    assert logged(tmp_path) == [(kb.generation, "chunk", i, 1) for i in new_ids]
    kb.delete(new)
    assert index_files(tmp_path) == base
    assert [row[2:] for row in logged(tmp_path)[-10:]] == [(i, 0) for i in new_ids]

    reopened = KnowledgeBase(tmp_path, TEXT, use_gpu=False)  # the base plus the log replayed
    assert sorted(reopened.text_index.ids().tolist()) == catalog_chunk_ids(reopened)
    kept = random_doc(reopened, "kept.txt", rng)
    vector = reopened.chunk_vectors([reopened.chunks_of_document(kept)[3].id])
    assert KnowledgeBase(tmp_path, TEXT, use_gpu=False).search_chunks(next(iter(vector.values()))[None], 1)[0][
        0].file == "kept.txt"

    for n in range(3):  # past MERGE_FRACTION of the index: a new base, the old one and the log dropped
        random_doc(reopened, f"more-{n}.txt", rng)
    reopened.flush()
    assert list(index_files(tmp_path)) == [f"text-{reopened.generation}.faiss"] and logged(tmp_path) == []


def test_ids_of_a_deleted_document_are_never_given_again(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    rng = np.random.default_rng(1)
    random_doc(kb, "a.txt", rng)
    newest = random_doc(kb, "b.txt", rng)
    old_ids = [c.id for c in kb.chunks_of_document(newest)]
    kb.delete(newest)  # SQLite alone would give the next chunks these ids again
    again = random_doc(kb, "c.txt", rng)
    assert min(c.id for c in kb.chunks_of_document(again)) > max(old_ids)


def test_a_store_on_hnsw_never_returns_a_deleted_chunk(tmp_path):
    rng = np.random.default_rng(2)
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")
    documents = [random_doc(kb, f"d{n}.txt", rng) for n in range(20)]
    kb.flush()
    gone = documents[::3]
    vectors = kb.chunk_vectors([c.id for d in gone for c in kb.chunks_of_document(d)])
    for document in gone:
        kb.delete(document)
    other = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")  # another process: base + log
    assert kb.text_index.kind == other.text_index.kind == "hnsw"
    for store in (kb, other):
        assert sorted(store.text_index.ids().tolist()) == catalog_chunk_ids(store)
        for vector in vectors.values():  # each deleted chunk's own vector: it would be its own best hit
            assert not set(store.text_index.search(vector[None], 50)[1][0].tolist()) & set(vectors)
            assert {h.file for h, _ in store.search_chunks(vector[None], 5)}.isdisjoint(
                {f"d{n}.txt" for n in range(0, 20, 3)})


def test_another_process_catches_up_from_the_log_without_reloading(tmp_path):
    reader = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    writer = KnowledgeBase(tmp_path, TEXT, use_gpu=False)
    rng = np.random.default_rng(3)
    for n in range(60):
        random_doc(writer, f"base-{n}.txt", rng)
    writer.flush()
    reader.search_chunks(unit(1, 0, 0, 0)[None], 1)
    index = reader.text_index
    add_doc(writer, "late.txt", [unit(0, 0, 0, 1)])
    assert reader.search_chunks(unit(0, 0, 0, 1)[None], 1)[0][0].file == "late.txt"
    assert reader.text_index is index  # caught up in place: the change replayed, not the whole index reloaded


KILLED_WRITER = """
import sys
import numpy as np
from rag.records import ModelId, NewChunk, NewDocument
from rag.store import KnowledgeBase
kb = KnowledgeBase(sys.argv[1], ModelId("test-text", 4), use_gpu=False, ann="hnsw")
rng = np.random.default_rng(0)
for n in range(100000):
    with kb.write() as writer:
        doc = writer.add_document(NewDocument(f"/d/{n}", f"{n}.txt", "text", str(n), 1, 1))
        writer.add_chunks(doc, 0, [NewChunk(1, f"{n} {i}") for i in range(20)], rng.standard_normal((20, 4)))
    if n % 3 == 2:
        kb.delete(doc - 1)
    kb.flush()
"""


def generation_of(folder) -> int:
    try:
        with sqlite3.connect(f"file:{folder}/catalog.sqlite3?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    except (sqlite3.Error, TypeError):  # not created yet
        return 0


def test_a_store_killed_while_writing_bases_and_the_log_opens_consistent(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 120  # a bound on a hung child, not a speed: it writes a document in milliseconds
    while generation_of(tmp_path) < 40 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL  # it was still writing
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")
    documents = kb.documents()
    assert len(documents) > 3 and all(d.chunks == 20 for d in documents)
    assert sorted(kb.text_index.ids().tolist()) == catalog_chunk_ids(kb)
    assert not list(tmp_path.glob("*.tmp-*"))  # a half-written base or tombstones file of the dead process
    hits = kb.search_chunks(unit(1, 1, 0, 0)[None], 30)
    assert len(hits) == 30 and {h.file for h, _ in hits} <= {d.name for d in documents}


def test_a_bulk_load_writes_each_document_and_builds_the_index_once_at_the_end(tmp_path):
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")
    rng = np.random.default_rng(4)
    random_doc(kb, "before.txt", rng)
    index_before = kb.text_index
    with kb.bulk_load():
        documents = [random_doc(kb, f"bulk-{n}.txt", rng) for n in range(30)]
        # each write is committed (another process sees it) while this process's index waits for the end
        assert len(KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw").text_index.ids()) == 310
        assert kb.text_index is index_before and kb.text_index.size == 10
    assert kb.text_index is not index_before  # rebuilt once from the catalog, not caught up write by write
    assert sorted(kb.text_index.ids().tolist()) == catalog_chunk_ids(kb)
    assert sorted(index_files(tmp_path)) == [f"text-{kb.generation}.faiss", f"text-{kb.generation}.removed.npy"]
    vector = kb.chunk_vectors([kb.chunks_of_document(documents[-1])[0].id])
    assert kb.search_chunks(next(iter(vector.values()))[None], 1)[0][0].file == "bulk-29.txt"
    kb.delete(documents[0])  # writes after the load go on as usual
    assert sorted(kb.text_index.ids().tolist()) == catalog_chunk_ids(kb)


def test_a_big_index_is_saved_in_the_background_while_writes_go_on(tmp_path, monkeypatch):
    import rag.store

    monkeypatch.setattr(rag.store, "BACKGROUND_SAVE_VECTORS", 1)  # every index counts as big here
    kb = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")
    rng = np.random.default_rng(5)
    for n in range(40):
        random_doc(kb, f"base-{n}.txt", rng)
    saved_at = kb.generation
    kb.flush()  # starts the save of the 400 vectors as they are now
    later = [random_doc(kb, f"later-{n}.txt", rng) for n in range(5)]  # writes go on meanwhile
    with kb.write() as writer:
        writer.delete_document(later[0])
    kb.wait_for_saves()
    assert sorted(index_files(tmp_path)) == [f"text-{saved_at}.faiss", f"text-{saved_at}.removed.npy"]
    assert not list(tmp_path.glob("*.tmp-*"))
    assert set(range(saved_at + 1, kb.generation + 1)) <= {g for g, *_ in logged(tmp_path)}  # the log covers the rest
    other = KnowledgeBase(tmp_path, TEXT, use_gpu=False, ann="hnsw")  # another process: that base, then the log
    assert sorted(other.text_index.ids().tolist()) == sorted(kb.text_index.ids().tolist()) == catalog_chunk_ids(kb)
    kb.close()
    other.close()
