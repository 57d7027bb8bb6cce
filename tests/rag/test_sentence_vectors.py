"""Sentence vectors stored at ingest: answering ranks a passage's sentences with no model call but the question's,
and a store made before them (or by another sentence splitter) still answers the same."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from ingest.pipeline import SENTENCES_LATER, Ingestor
from rag import sentence_vectors
from rag.calibration import cutoffs_for
from rag.components import Models
from rag.grounding import split_sentences
from rag.records import indexed_text
from rag.retrieval import Passage
from rag.sentence_vectors import pack, unpack
from rag.store import CATALOG_FILE
from rag.text_embedder import TextEmbedder
from tests.conftest import make_settings

NOTES = {
    "harbour.md": "# Harbour\n\nThe lighthouse keeper logged 412 ships in the winter of 1911. He kept the lamp lit "
                  "every night. Storms closed the harbour for nine days in January.\n",
    "museum.md": "# Museum\n\nThe museum opens at nine in the morning. Guided tours of the engine room cost eight "
                 "euros per person. Children under six enter free.\n",
}
QUESTION = "How many ships did the lighthouse keeper log?"


class CountingEmbedder(TextEmbedder):
    """The real MiniLM, counting the texts it embeds (instrumentation, not a stand-in)."""

    def __init__(self, real: TextEmbedder) -> None:
        self.__dict__.update(real.__dict__)
        self.texts: list[str] = []

    def embed(self, texts, batch_size=0, urgent=False, **options):
        self.texts += list(texts)
        return super().embed(texts, batch_size, urgent, **options)


@pytest.fixture
def counting(text_embedder, settings) -> CountingEmbedder:
    # With a cold cache, the first question calibrates the "documents don't say" cut-offs (about 160 texts
    # embedded, once a process): done before counting, so that the tests count only what answering embeds.
    cutoffs_for(text_embedder, settings.cache_dir)
    return CountingEmbedder(text_embedder)


@pytest.fixture
def kb(settings, counting, tmp_path):
    for name, text in NOTES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    store = Models(settings, counting, None, "").open_store()
    report = Ingestor(store, settings, counting).ingest([tmp_path / name for name in NOTES])
    assert not report.failed
    return store


def test_ingest_stores_each_sentence_vector_as_the_model_embeds_the_sentence(kb, text_embedder):
    chunks = kb.chunks([chunk_id for chunk_id, _, _ in kb.chunk_texts()])
    stored = kb.sentence_vectors(list(chunks))
    assert set(stored) == set(chunks)
    for chunk_id, chunk in chunks.items():
        sentences = split_sentences(chunk.text)
        assert len(stored[chunk_id]) == len(sentences) >= 2
        alone = text_embedder.embed(sentences)
        assert np.all(np.sum(stored[chunk_id] * alone, axis=1) > 0.999)  # float16 storage keeps the cosine


def test_an_answer_embeds_only_its_question(settings, counting, kb):
    counting.texts.clear()
    answer = Models(settings, counting, None, "").assistant(kb).ask(QUESTION, mode="extractive")
    assert "412 ships" in answer.text
    assert counting.texts == [QUESTION]  # once, for retrieval and the sentence ranking both


def test_a_store_without_sentence_vectors_opens_and_answers_the_same(settings, counting, kb):
    assistant = Models(settings, counting, None, "").assistant(kb)
    before = assistant.ask(QUESTION, mode="extractive")
    kb.close()
    with sqlite3.connect(kb.folder / CATALOG_FILE) as conn:  # the catalog as an older Loupe wrote it
        conn.execute("ALTER TABLE chunks DROP COLUMN sentence_vectors")
    older = Models(settings, counting, None, "").open_store()
    assert older.sentence_vectors([chunk_id for chunk_id, _, _ in older.chunk_texts()]) == {}
    counting.texts.clear()
    after = Models(settings, counting, None, "").assistant(older).ask(QUESTION, mode="extractive")
    assert after.text == before.text
    assert QUESTION in counting.texts and len(counting.texts) > 1  # its sentences were embedded on the fly


def test_vectors_made_from_other_sentences_are_not_used():
    """Vectors are kept with the lengths of the sentences they came from: a later splitter that cuts the same text
    differently, even into as many sentences, gets None (and embeds them) instead of another sentence's vector."""
    vectors = np.array([[0.6, 0.8], [1.0, 0.0]])
    blob = pack("St. Paul. Then.", vectors)  # two sentences, as the splitter cuts it
    assert np.allclose(unpack(blob, "St. Paul. Then.", 2), vectors, atol=1e-3)
    assert unpack(blob, "Paul. Then now.", 2) is None  # two sentences as well, of other lengths
    assert unpack(blob, "St. Paul then.", 2) is None
    with pytest.raises(ValueError):
        pack("One sentence.", vectors)


def test_a_hit_only_bm25_found_is_scored_with_its_stored_vector(settings, counting, kb, text_embedder):
    retriever = Models(settings, counting, None, "").assistant(kb).retriever
    vector = retriever.embed_query("winter storms")
    chunks = kb.chunks([chunk_id for chunk_id, _, _ in kb.chunk_texts()])
    bm25_only = [[Passage(chunk, 1.0, None) for chunk in chunks.values()]]  # as hybrid leaves them, before the fill
    counting.texts.clear()
    filled = retriever._fill_dense_scores(vector[None, :], bm25_only)
    assert counting.texts == []  # no model call: the chunks' vectors are stored
    for passage in filled[0]:
        as_ingested = text_embedder.embed([indexed_text(passage.chunk.heading, passage.chunk.text)])[0]
        assert passage.dense_score == pytest.approx(float(as_ingested @ vector), abs=1e-4)


@pytest.fixture
def kb_before_the_fill(settings, counting, tmp_path):
    """The notes ingested with their sentence vectors left for later (SENTENCES_LATER), as the app leaves them to
    its background pass: searchable at once, without sentence vectors."""
    for name, text in NOTES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    store = Models(settings, counting, None, "").open_store()
    ingestor = Ingestor(store, settings, counting, sentences=SENTENCES_LATER)
    report = ingestor.ingest([tmp_path / name for name in NOTES])
    assert not report.failed and report.totals()["chunks"] == 2
    return ingestor, report


def test_a_question_is_answered_before_the_sentence_pass_and_after_it_without_embedding_sentences(
        settings, counting, kb_before_the_fill):
    ingestor, report = kb_before_the_fill
    kb = ingestor.kb
    chunk_ids = [chunk_id for chunk_id, _, _ in kb.chunk_texts()]
    assert kb.sentence_vectors(chunk_ids) == {}
    assistant = Models(settings, counting, None, "").assistant(kb)
    counting.texts.clear()
    before = assistant.ask(QUESTION, mode="extractive")
    assert "412 ships" in before.text
    assert len(counting.texts) > 1  # the passages' sentences were embedded for this question

    assert ingestor.fill_sentences(report.document_ids()) == 2
    assert set(kb.sentence_vectors(chunk_ids)) == set(chunk_ids)
    counting.texts.clear()
    after = assistant.ask(QUESTION, mode="extractive")
    assert after.text == before.text
    assert counting.texts == [QUESTION]
    assert ingestor.fill_sentences() == 0  # nothing left to fill


def test_a_sentence_pass_killed_between_batches_leaves_a_store_that_answers_and_a_later_pass_finishes_it(
        settings, counting, kb_before_the_fill, monkeypatch):
    ingestor, _ = kb_before_the_fill
    kb = ingestor.kb
    monkeypatch.setattr(sentence_vectors, "FILL_BATCH", 1)  # one chunk a transaction: a kill can fall between

    def killed(done: int) -> None:
        raise KeyboardInterrupt  # the process ends right after its first batch committed

    with pytest.raises(KeyboardInterrupt):
        sentence_vectors.fill_missing(kb, lambda: counting, progress=killed)
    chunk_ids = [chunk_id for chunk_id, _, _ in kb.chunk_texts()]
    assert len(kb.sentence_vectors(chunk_ids)) == 1
    answer = Models(settings, counting, None, "").assistant(kb).ask(QUESTION, mode="extractive")
    assert "412 ships" in answer.text
    assert sentence_vectors.fill_missing(kb, lambda: counting) == 1
    assert set(kb.sentence_vectors(chunk_ids)) == set(chunk_ids)



# --- every backend: the pass writes through the store's two methods, so PostgreSQL fills later too ---------------
@pytest.fixture(params=["folder", "postgres"])
def any_store(request, counting, tmp_path):
    """A knowledge base in a folder, or in PostgreSQL (pgvector): the notes ingested with their sentence vectors left
    for later, as the app leaves them."""
    location = tmp_path / "kb" if request.param == "folder" else request.getfixturevalue("pg_store_url")
    settings = make_settings(location, cache_dir=tmp_path / "cache")
    for name, text in NOTES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    store = Models(settings, counting, None, "").open_store()
    ingestor = Ingestor(store, settings, counting, sentences=SENTENCES_LATER)
    report = ingestor.ingest([tmp_path / name for name in NOTES])
    assert not report.failed
    yield settings, ingestor, report
    store.close()


def test_every_backend_leaves_sentences_for_later_and_fills_them_through_its_own_methods(any_store, counting):
    settings, ingestor, report = any_store
    kb = ingestor.kb
    chunk_ids = sorted(chunk_id for chunk_id, _, _ in kb.chunk_texts())
    assert kb.sentence_vectors(chunk_ids) == {}  # PostgreSQL, too, commits the chunks without them now
    missing = kb.chunks_without_sentence_vectors(None, 10)
    assert [chunk_id for chunk_id, _ in missing] == chunk_ids
    assert kb.chunks_without_sentence_vectors(None, 1, after_id=chunk_ids[0]) == missing[1:2]
    first_document = report.document_ids()[0]
    assert {c.document_id for c in kb.chunks([i for i, _ in kb.chunks_without_sentence_vectors([first_document], 10)]
                                             ).values()} == {first_document}

    assert ingestor.fill_sentences(report.document_ids()) == len(chunk_ids)
    stored = kb.sentence_vectors(chunk_ids)
    assert set(stored) == set(chunk_ids)
    assert all(len(stored[i]) == len(split_sentences(text)) for i, text in missing)
    assert kb.chunks_without_sentence_vectors(None, 10) == []
    # written only where none is stored yet: another pass's vectors are kept, a deleted chunk is skipped
    assert kb.set_sentence_vectors({chunk_ids[0]: pack(missing[0][1], stored[chunk_ids[0]] * 0), 10**9: b""}) == 0
    assert np.array_equal(kb.sentence_vectors(chunk_ids[:1])[chunk_ids[0]], stored[chunk_ids[0]])

    counting.texts.clear()
    answer = Models(settings, counting, None, "").assistant(kb).ask(QUESTION, mode="extractive")
    assert "412 ships" in answer.text
    assert counting.texts == [QUESTION]  # the sentences' vectors came from the store


def test_the_cli_ingest_into_postgresql_fills_sentence_vectors_after_its_commits(pg_store_url, counting, tmp_path):
    settings = make_settings(pg_store_url, cache_dir=tmp_path / "cache")
    (tmp_path / "harbour.md").write_text(NOTES["harbour.md"], encoding="utf-8")
    store = Models(settings, counting, None, "").open_store()
    try:
        report = Ingestor(store, settings, counting).ingest([tmp_path / "harbour.md"])  # the default: after
        chunk_ids = [chunk_id for chunk_id, _, _ in store.chunk_texts()]
        assert report.seconds["embed sentences"] > 0 and set(store.sentence_vectors(chunk_ids)) == set(chunk_ids)
    finally:
        store.close()
