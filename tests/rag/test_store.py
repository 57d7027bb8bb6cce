"""The knowledge base on disk: persistence, deletion, model checks, and recovery after a crash."""

import numpy as np
import pytest

from rag.records import ModelId, NewChunk
from rag.store import KnowledgeBase, StoreError

TEXT = ModelId("test-text", 4)
IMAGE = ModelId("test-image", 3)


def unit(*values):
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


def add_doc(kb, name, vectors, sha=None):
    with kb.write() as writer:
        doc = writer.add_document(f"/docs/{name}", name, "text", sha or name, 10, 1)
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
        doc = writer.add_document("/docs/c.txt", "c.txt", "text", "c", 1, 1)
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
    with kb.write() as writer:
        doc = writer.add_document("/docs/p.png", "p.png", "image", "p", 1, 1)
        image_id = writer.add_image(doc, 1, "p.png", b"\x89PNG fake bytes", None)
    assert [i.id for i in kb.images_waiting()] == [image_id]
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
