"""One contract for every knowledge-base backend: the folder (SQLite, FAISS, bm25s) and PostgreSQL (pgvector).

Each test runs once per backend, through the same doors callers use: the factory (Models.open_store), the Ingestor,
the Retriever, the library of knowledge bases, and the CLI in a real process that a SIGKILL stops half-way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor
from rag.components import Models
from rag.library import library_for
from rag.records import ModelId
from rag.retrieval import Retriever
from rag.settings import PROJECT_ROOT
from rag.store import ModelMismatch
from rag.store_factory import open_store
from tests.builders import make_pdf, sample_image
from tests.conftest import KILL_CHUNKING, KillCorpus, kill_env, make_settings

TOPICS = {
    "glaciers.txt": "Glaciers are rivers of ice that move slowly downhill under their own weight and carve valleys.",
    "volcanoes.txt": "Volcanoes erupt molten rock called lava; the magma chamber beneath them fills over centuries.",
    "reefs.txt": "Coral reefs are built by tiny animals called polyps, which host algae that feed them sunlight.",
    "deserts.txt": "Deserts receive less than 250 millimetres of rain a year; cacti store water in thick stems.",
    "codes.txt": "The replacement part number is XK-4471-B; order it from the depot in Rotterdam.",
}


@pytest.fixture(params=["folder", "postgres"])
def location(request, tmp_path) -> str | Path:
    """Where the knowledge base lives: a folder, or a URL naming this test's knowledge base in the database."""
    if request.param == "folder":
        return tmp_path / "kb"
    return request.getfixturevalue("pg_store_url")


@pytest.fixture
def settings(location, tmp_path):
    return make_settings(location, cache_dir=tmp_path / "cache")


@pytest.fixture
def models(settings, text_embedder, image_embedder) -> Models:
    return Models(settings, text_embedder, image_embedder, "")


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in TOPICS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def kb(models):
    store = models.open_store()
    yield store
    store.close()


def ingest(kb, settings, models, *paths):
    return Ingestor(kb, settings, models.text_embedder, models.image_embedder).ingest(list(paths))


def test_ingest_dedup_replace_delete_and_list(kb, settings, models, corpus):
    report = ingest(kb, settings, models, corpus)
    assert [o.status for o in report.outcomes] == ["added"] * len(TOPICS)
    listed = {d.name: d for d in kb.documents()}
    assert set(listed) == set(TOPICS) and all(d.chunks == 1 for d in listed.values())

    again = ingest(kb, settings, models, corpus / "glaciers.txt")
    assert again.outcomes[0].status == "duplicate"

    (corpus / "glaciers.txt").write_text("Glaciers retreat when summers warm; meltwater raises the sea.")
    replaced = ingest(kb, settings, models, corpus / "glaciers.txt")
    assert replaced.outcomes[0].status == "replaced"
    new = kb.resolve("glaciers.txt")
    assert new.id != listed["glaciers.txt"].id
    assert "meltwater" in kb.chunks_of_document(new.id)[0].text
    assert len(kb.documents()) == len(TOPICS)

    generation = kb.generation
    info = kb.delete(kb.resolve("volcanoes.txt").id)
    assert info.name == "volcanoes.txt" and kb.generation > generation
    assert "volcanoes.txt" not in {d.name for d in kb.documents()}
    assert kb.chunks_of_document(info.id) == []


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_modes_find_the_right_passage(kb, settings, models, corpus, mode):
    ingest(kb, settings, models, corpus)
    retriever = Retriever(kb, models.text_embedder, mode=mode)
    question = {"dense": "how do ice rivers shape valleys?", "bm25": "part number XK-4471-B",
                "hybrid": "where do I order part XK-4471-B?"}[mode]
    expected = {"dense": "glaciers.txt", "bm25": "codes.txt", "hybrid": "codes.txt"}[mode]
    passages = retriever.search(question, 3)
    assert passages and passages[0].chunk.file == expected
    if mode != "bm25":
        assert passages[0].dense_score is not None and 0 < passages[0].dense_score <= 1.0001


def test_a_deleted_document_is_never_found_again(kb, settings, models, corpus):
    ingest(kb, settings, models, corpus)
    retriever = Retriever(kb, models.text_embedder, mode="hybrid")
    assert retriever.search("part number XK-4471-B", 1)[0].chunk.file == "codes.txt"
    kb.delete(kb.resolve("codes.txt").id)
    for mode in ("dense", "bm25", "hybrid"):
        assert all(p.chunk.file != "codes.txt" for p in retriever.search("part number XK-4471-B", 5, mode))


def test_images_with_and_without_image_vectors(kb, settings, models, text_embedder, tmp_path):
    pdf = make_pdf(tmp_path / "cat.pdf", [["A page about a cat."], ["The cat again, with a picture."]],
                   images={2: sample_image("chelsea")})
    report = Ingestor(kb, settings, text_embedder, None).ingest([pdf])
    assert report.outcomes[0].status == "added"
    waiting = kb.images_waiting()
    assert len(waiting) == 1 and waiting[0].page == 2

    assert Ingestor(kb, settings, text_embedder, models.image_embedder).embed_waiting_images() == 1
    assert kb.images_waiting() == []
    stored = kb.images_on_pages(kb.resolve("cat.pdf").id, [2])
    assert len(stored) == 1 and stored[0].embedded
    data = kb.image_path(stored[0]).read_bytes()
    hits = Retriever(kb, text_embedder, models.image_embedder).similar_images(data, 1)
    assert hits[0].image.id == stored[0].id and hits[0].score > 0.99

    kb.delete(kb.resolve("cat.pdf").id)
    assert kb.search_images(models.image_embedder.embed_images([data]), 1) == []
    assert not kb.image_path(stored[0]).exists()  # the image went with its only document


def test_an_image_in_two_documents_stays_until_both_are_gone(kb, settings, models, tmp_path):
    picture = {1: sample_image("coffee")}
    first = make_pdf(tmp_path / "one.pdf", [["Coffee notes, first edition."]], images=picture)
    second = make_pdf(tmp_path / "two.pdf", [["Coffee notes, second edition, revised."]], images=picture)
    ingest(kb, settings, models, first, second)
    image = kb.images_on_pages(kb.resolve("one.pdf").id)[0]
    data = kb.image_path(image).read_bytes()
    kb.delete(kb.resolve("one.pdf").id)
    kept = kb.images_on_pages(kb.resolve("two.pdf").id)[0]
    assert kept.image_path == image.image_path and kb.image_path(kept).read_bytes() == data
    kb.delete(kb.resolve("two.pdf").id)
    assert not kb.image_path(kept).exists()


def test_another_text_model_is_refused(kb, settings, models, corpus, location, tmp_path):
    ingest(kb, settings, models, corpus / "reefs.txt")
    with pytest.raises(ModelMismatch, match="all-MiniLM-L6-v2"):
        open_store(location, ModelId("another-model", 768), cache_dir=tmp_path / "cache")


def test_several_knowledge_bases_are_apart(kb, settings, models, corpus):
    library = library_for(settings)
    other = f"{library.default}-b"
    library.create(other)
    try:
        assert library.names() == [library.default, other]
        ingest(kb, settings, models, corpus / "deserts.txt")
        second = models.open_store(library.path(other))
        try:
            ingest(second, settings, models, corpus / "reefs.txt", corpus / "codes.txt")
            assert [d.name for d in kb.documents()] == ["deserts.txt"]
            assert sorted(d.name for d in second.documents()) == ["codes.txt", "reefs.txt"]
            hits = Retriever(second, models.text_embedder, mode="hybrid").search("rain in the desert", 3)
            assert all(p.chunk.file != "deserts.txt" for p in hits)
        finally:
            second.close()
    finally:
        library.delete(other)
    assert library.names() == [library.default]


def _document_count(location) -> int:
    """Documents committed so far, read without the store's own code (it must not repair anything yet)."""
    if isinstance(location, Path):
        import sqlite3

        try:
            with sqlite3.connect(f"file:{location}/catalog.sqlite3?mode=ro", uri=True, timeout=1) as conn:
                return conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        except sqlite3.Error:
            return 0
    import psycopg

    from rag.pg_connect import parse_location

    parsed = parse_location(location)
    try:
        with psycopg.connect(parsed.conninfo, autocommit=True) as conn:
            return conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}.documents")
                                .format(psycopg.sql.Identifier(parsed.schema))).fetchone()[0]
    except psycopg.Error:
        return 0


def test_a_killed_ingest_leaves_each_document_whole_or_absent(location, settings, models, kill_corpus: KillCorpus):
    corpus, expected = kill_corpus  # expected: each report's chunks in an uninterrupted ingest
    reports = len(expected)
    process = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(corpus), "--quiet"], cwd=PROJECT_ROOT,
                               env=kill_env(location, settings.cache_dir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _document_count(location) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ended_by_itself = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    _, errors = process.communicate()
    assert not ended_by_itself, errors.decode(errors="replace")[-2000:]
    stored = _document_count(location)
    assert 3 <= stored < reports, f"the kill should land mid-ingest, found {stored} documents"

    chunking = make_settings(location, cache_dir=settings.cache_dir, **KILL_CHUNKING)
    kb = open_store(location, models.text_embedder.model_id, cache_dir=settings.cache_dir)
    try:
        documents = kb.documents()
        assert len(documents) >= 3
        for document in documents:
            assert [c.ordinal for c in kb.chunks_of_document(document.id)] == list(range(expected[document.name]))
        assert kb.text_index.size == sum(d.chunks for d in documents)
        report = Ingestor(kb, chunking, models.text_embedder).ingest([corpus])
        statuses = [o.status for o in report.outcomes]
        assert statuses.count("duplicate") == len(documents) and statuses.count("added") == reports - len(documents)
        assert {d.name: d.chunks for d in kb.documents()} == expected
    finally:
        kb.close()
