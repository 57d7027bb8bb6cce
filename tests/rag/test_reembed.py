"""`reembed`: a knowledge base gets new vectors (PCA of its own, another model) and keeps its documents; the old
vectors serve until the swap; a SIGKILL at any point leaves a working store.

Real MiniLM, real FAISS and SQLite, real files; the kills are real SIGKILLs of a real `rag.reembed` process. To
kill at an exact instant (just before the swap, between the two renames), the child process replaces one function
of rag.reembed with one that calls the real one and then kills itself: the kill is real, only its timing is chosen.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import Ingestor
from rag.catalog import Catalog
from rag.errors import Busy
from rag.pca import PROJECTION_FILE, Projection, ProjectionError, projection_for
from rag.records import ModelId
from rag.reembed import BUILD_INFIX, ReembedError, recover_interrupted, reembed
from rag.settings import PROJECT_ROOT
from rag.store import KnowledgeBase, ModelMismatch
from tests.builders import make_pdf, sample_image
from tests.conftest import make_settings

TOPICS = {
    "glaciers": "Glaciers carve deep valleys as the ice slowly flows downhill under its own weight.",
    "volcanoes": "Lava erupts from the volcano crater and cools into dark basalt rock on the slopes.",
    "bread": "Knead the dough for ten minutes, then let the bread rise in a warm place for an hour.",
    "chess": "The knight moves in an L shape and is the only chess piece that can jump over others.",
    "tides": "The moon's gravity pulls the oceans and causes two high tides every lunar day.",
    "bees": "Honey bees dance in a figure eight to tell the hive where the flowers are.",
}
DIMS = 4
CHUNK_SETTINGS = {"chunk_tokens": 24, "chunk_overlap": 4}


def write_documents(folder: Path) -> None:
    """One text file per topic, three paragraphs each (several small chunks), and a PDF with a picture."""
    folder.mkdir()
    for topic, sentence in TOPICS.items():
        paragraphs = [f"{sentence} Note {n} about {topic} adds one more detail to the record." for n in range(3)]
        (folder / f"{topic}.txt").write_text("\n\n".join(paragraphs))
    make_pdf(folder / "atlas.pdf", [["An atlas page about the world's mountains and rivers."]],
             images={1: sample_image("coffee")})


@pytest.fixture(scope="module")
def original(tmp_path_factory, text_embedder, image_embedder) -> Path:
    """A knowledge base built once by the real ingest, copied by each test."""
    root = tmp_path_factory.mktemp("reembed")
    write_documents(root / "docs")
    settings = make_settings(root / "kb", **CHUNK_SETTINGS)
    kb = KnowledgeBase(settings.store, text_embedder.model_id, image_embedder.model_id, use_gpu=False)
    try:
        report = Ingestor(kb, settings, text_embedder, image_embedder).ingest([root / "docs"])
        assert not report.failed
    finally:
        kb.close()
    return settings.store


@pytest.fixture
def store(original, tmp_path) -> Path:
    folder = tmp_path / "kb"
    shutil.copytree(original, folder)
    return folder


@pytest.fixture(scope="module")
def copied_model(tmp_path_factory, text_embedder) -> str:
    """MiniLM saved to a folder: to Loupe another model (another name), with known vectors."""
    folder = tmp_path_factory.mktemp("model") / "minilm-copy"
    text_embedder.model.save(str(folder))
    return str(folder)


def contents(folder: Path) -> tuple[str, list[tuple], int, int]:
    """(text model, the documents as (name, sha, pages, chunks, images), images with a vector, sentences rows)."""
    catalog = Catalog.open(folder / "catalog.sqlite3")
    try:
        documents = sorted((d.name, d.sha256, d.pages, d.chunks, d.images) for d in catalog.documents())
        images = catalog.conn.execute("SELECT COUNT(*) FROM images WHERE vector IS NOT NULL").fetchone()[0]
        sentences = catalog.conn.execute("SELECT COUNT(*) FROM chunks WHERE sentence_vectors IS NOT NULL").fetchone()[0]
        return catalog.get_meta("text_model"), documents, images, sentences
    finally:
        catalog.close()


def document_ids(folder: Path) -> dict[str, int]:
    catalog = Catalog.open(folder / "catalog.sqlite3")
    try:
        return {d.sha256: d.id for d in catalog.documents()}
    finally:
        catalog.close()


def chunks_by_id(folder: Path) -> dict[int, tuple[int, str]]:
    """chunk id -> (document id, text): what a citation link or a conversation's source resolves."""
    catalog = Catalog.open(folder / "catalog.sqlite3")
    try:
        return {row[0]: (row[1], row[2]) for row in catalog.conn.execute("SELECT id, document_id, text FROM chunks")}
    finally:
        catalog.close()


def delete_bread(folder: Path, text_embedder) -> None:
    """Delete bread.txt, which neither the first document nor the last: the ids that follow it keep a gap."""
    kb = KnowledgeBase(folder, text_embedder.model_id, use_gpu=False)
    try:
        kb.delete(kb.resolve("bread.txt").id)
    finally:
        kb.close()


def best_document(folder: Path, question: str, text_embedder) -> str:
    """The file of the best chunk for a question, searched as the store's own model (projected, when PCA)."""
    name = contents(folder)[0]
    projection = Projection.load(folder)
    vector = text_embedder.embed([question], query=True)
    if projection is not None:
        vector = projection.project(vector)
    kb = KnowledgeBase(folder, ModelId(name, vector.shape[1]), use_gpu=False)
    try:
        return kb.search_chunks(vector, 1)[0][0].file
    finally:
        kb.close()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if BUILD_INFIX in p.name]


def test_pca_reembed_reuses_the_stored_vectors_and_keeps_every_document(store, text_embedder):
    (store / "uploads").mkdir()  # what the app keeps in a knowledge base's folder besides the store
    (store / "uploads" / "note.txt").write_text("an uploaded copy")
    (store / ".loupe-kb").write_text("")
    delete_bread(store, text_embedder)  # ids with a gap: a store renumbered anew would not keep them
    before = contents(store)
    old_ids, old_chunks = document_ids(store), chunks_by_id(store)
    settings = make_settings(store, embed_dims=DIMS, **CHUNK_SETTINGS)
    seen = []
    report = reembed(store, settings, lambda done, total, left: seen.append((done, total)))
    assert (store / "uploads" / "note.txt").read_text() == "an uploaded copy" and (store / ".loupe-kb").exists()
    assert document_ids(store) == old_ids and chunks_by_id(store) == old_chunks  # links to them still resolve

    model, documents, images, sentences = contents(store)
    assert documents == before[1] and images == before[2] == 1 and sentences == before[3] > 0
    projection = projection_for(store, DIMS, "all-MiniLM-L6-v2")
    assert model == projection.model_id().name == report.new_model
    assert model.startswith("all-MiniLM-L6-v2+pca4:")
    assert report.reused_vectors and 0 < report.explained_variance < 1
    assert seen[-1][0] == seen[-1][1] == report.chunks
    assert leftovers(store) == []
    # the reduced store answers with the reduced query, and refuses the full-size model
    assert best_document(store, "How does a knight move in chess?", text_embedder) == "chess.txt"
    with pytest.raises(ModelMismatch):
        KnowledgeBase(store, text_embedder.model_id, use_gpu=False)
    kb = KnowledgeBase(store, projection.model_id(), use_gpu=False)
    try:
        assert all(m.shape[1] == DIMS for m in kb.sentence_vectors([c for c, _, _ in kb.chunk_texts()]).values())
    finally:
        kb.close()


def test_another_model_re_embeds_every_chunk_and_pca_then_fits_on_its_vectors(store, copied_model, text_embedder):
    delete_bread(store, text_embedder)
    old_ids, old_chunks = document_ids(store), chunks_by_id(store)
    settings = make_settings(store, text_model=copied_model, **CHUNK_SETTINGS)
    report = reembed(store, settings)
    assert contents(store)[0] == copied_model and not report.reused_vectors
    assert document_ids(store) == old_ids and chunks_by_id(store) == old_chunks
    assert contents(store)[3] == report.chunks  # every chunk got its sentences' vectors, from the new model
    assert best_document(store, "When are there high tides?", text_embedder) == "tides.txt"
    # the copy is MiniLM itself: its vectors must be the stored originals'
    kb = KnowledgeBase(store, ModelId(copied_model, 384), use_gpu=False)
    try:
        ids = [chunk_id for chunk_id, _, _ in kb.chunk_texts()]
        texts = [f"{h}\n{t}" if h else t for _, h, t in kb.chunk_texts()]
        stored = kb.chunk_vectors(ids)
        assert min(float(stored[i] @ v) for i, v in zip(ids, text_embedder.embed(texts))) > 0.999
    finally:
        kb.close()

    back = reembed(store, make_settings(store, embed_dims=DIMS, **CHUNK_SETTINGS))  # another model than the store's
    assert not back.reused_vectors and back.new_model.startswith("all-MiniLM-L6-v2+pca4:")
    assert document_ids(store) == old_ids and chunks_by_id(store) == old_chunks
    assert best_document(store, "How do bees tell where flowers are?", text_embedder) == "bees.txt"
    assert leftovers(store) == []


def test_documents_added_and_deleted_during_the_build_are_caught_up(store, tmp_path, text_embedder):
    extra = tmp_path / "extra.txt"
    extra.write_text("Penguins huddle together on the sea ice to survive the long polar winter storms.")
    settings = make_settings(store, embed_dims=DIMS, **CHUNK_SETTINGS)
    caught: list[int] = []

    def change_the_old_store(done: int, total: int, left: float) -> None:
        if done == 1:  # once, while the new store is being built: another writer adds one file, deletes one
            kb = KnowledgeBase(store, text_embedder.model_id, use_gpu=False)
            try:
                report = Ingestor(kb, make_settings(store, **CHUNK_SETTINGS), text_embedder).ingest([extra])
                caught.append(report.outcomes[0].document_id)
                kb.delete(kb.resolve("bread.txt").id)
            finally:
                kb.close()

    report = reembed(store, settings, change_the_old_store)
    names = [d[0] for d in contents(store)[1]]
    assert "extra.txt" in names and "bread.txt" not in names and report.caught_up == 2
    kb = KnowledgeBase(store, ModelId(contents(store)[0], DIMS), use_gpu=False)
    try:
        extra_id = kb.resolve("extra.txt").id
    finally:
        kb.close()
    assert extra_id == caught[0]  # the id the old store gave it while the new one was built
    chunks = chunks_by_id(store)
    assert [text for document, text in chunks.values() if document == extra_id] == [extra.read_text()]
    assert contents(store)[3] == len(chunks)  # its sentences too
    assert best_document(store, "How do penguins survive winter?", text_embedder) == "extra.txt"


def test_an_open_store_is_refused_unless_its_holder_releases_it(store, text_embedder):
    settings = make_settings(store, embed_dims=DIMS, **CHUNK_SETTINGS)
    kb = KnowledgeBase(store, text_embedder.model_id, use_gpu=False)
    try:
        with pytest.raises(Busy, match="open in another process"):
            reembed(store, settings)
        assert kb.search_chunks(text_embedder.embed(["lava"]), 1)  # untouched, still serving
        answered = []

        def release() -> None:  # the app: the old vectors served until now; close before the swap
            answered.append(kb.search_chunks(text_embedder.embed(["lava"]), 1)[0][0].file)
            kb.close()

        reembed(store, settings, release=release)
        assert answered == ["volcanoes.txt"] and contents(store)[0].startswith("all-MiniLM-L6-v2+pca4:")
    finally:
        kb.close()


def test_refusals_name_the_problem(tmp_path, store):
    empty = make_settings(tmp_path / "empty")
    KnowledgeBase(empty.store, ModelId("all-MiniLM-L6-v2", 384), use_gpu=False).close()
    with pytest.raises(ReembedError, match="no documents"):
        reembed(empty.store, empty)
    with pytest.raises(ReembedError, match="PostgreSQL"):
        reembed("postgresql://user@host/db", empty)  # type: ignore[arg-type]
    with pytest.raises(ReembedError, match="embedded with all-MiniLM-L6-v2 already"):  # minutes for nothing
        reembed(store, make_settings(store, **CHUNK_SETTINGS))
    with pytest.raises(ProjectionError, match="more than 300 chunks"):
        reembed(store, make_settings(store, embed_dims=300))
    with pytest.raises(ProjectionError, match="no PCA projection yet") as error:
        projection_for(store, 64, "all-MiniLM-L6-v2")
    assert str(tmp_path) not in str(error.value)


# --- kills -------------------------------------------------------------------------------------------------------
CHILD = """
import json, os, signal, sys
import rag.reembed as reembed
from rag.settings import Settings

point, flags = sys.argv[1], json.loads(sys.argv[2])
settings = Settings.load(flags, environ={})

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

def after(function):
    def call(*args):
        function(*args)
        die()
    return call

progress = None
if point == "while embedding":
    progress = lambda done, total, left: die() if done * 2 >= total else None
elif point == "before the swap":
    reembed._swap_if_unchanged = die
elif point == "after the exchange":
    reembed.exchange = after(reembed.exchange)
elif point == "between the renames":  # a system without an atomic exchange
    reembed._exchange_atomically = lambda a, b: False
    renames = []
    real_rename = os.rename
    def rename(a, b):
        renames.append(a)
        if len(renames) == 2:
            die()
        real_rename(a, b)
    os.rename = rename
reembed.reembed(settings.store, settings, progress)
"""


@pytest.mark.parametrize("point, model", [
    ("while embedding", "copy"),  # a model runs: killed halfway through the chunks
    ("while embedding", "pca"),  # the stored vectors are projected
    ("before the swap", "pca"),
    ("after the exchange", "pca"),
    ("between the renames", "pca"),
])
def test_a_kill_at_any_point_leaves_a_working_store(store, point, model, copied_model, text_embedder):
    before = contents(store)
    target = {"text_model": copied_model} if model == "copy" else {"embed_dims": DIMS}
    flags = {"store": str(store), "cache_dir": str(make_settings(store).cache_dir), **CHUNK_SETTINGS, **target}
    done = subprocess.run([sys.executable, "-c", CHILD, point, json.dumps(flags)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr  # SIGKILL, at the chosen point

    recover_interrupted(store)  # what an open must call first (only the rename fallback leaves work for it)
    model_name, documents, _, _ = contents(store)
    swapped = point in ("after the exchange", "between the renames")
    assert model_name.startswith("all-MiniLM-L6-v2+pca4:") if swapped else model_name == before[0]
    assert documents == before[1]
    assert best_document(store, "How does a knight move in chess?", text_embedder) == "chess.txt"
    assert (store / PROJECTION_FILE).exists() == swapped

    # the next reembed removes what the killed one left, and finishes
    settings = make_settings(store, **CHUNK_SETTINGS, **target)
    reembed(store, settings, embedder=None if model == "copy" else text_embedder)
    assert leftovers(store) == [] and contents(store)[1] == before[1]
    assert best_document(store, "Why does lava turn into basalt?", text_embedder) == "volcanoes.txt"


def test_pca_projection_round_trip(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    projection = Projection.fit(vectors, 5, "m")
    projection.save(tmp_path)
    loaded = Projection.load(tmp_path)
    assert loaded.fingerprint == projection.fingerprint and loaded.model_id() == ModelId(
        f"m+pca5:{projection.fingerprint}", 5)
    reduced = loaded.project(vectors)
    assert reduced.shape == (50, 5) and np.allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
