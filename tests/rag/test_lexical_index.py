"""BM25 over a real store: saved per generation, rebuilt after ingest and delete, also by another process."""

from __future__ import annotations

import json
import logging

from ingest.pipeline import Ingestor
from rag.lexical_index import LexicalIndex, tokenize
from rag.store import KnowledgeBase

FILES = {
    "pumps.txt": "The centrifugal pump moves cooling water through the plant.",
    "valves.txt": "A gate valve stops the flow when the operator closes it.",
    "history.txt": "The plant opened in 1987 and was extended twice.",
}


def ingest(models, folder, files: dict[str, str], kb=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    kb = kb or models.open_store()
    report = Ingestor(kb, models.settings, models.text_embedder).ingest([folder / n for n in files])
    assert not report.failed, report.summary()
    return kb


def names(kb, hits) -> list[str]:
    records = kb.chunks([chunk_id for chunk_id, _ in hits])
    return [records[chunk_id].file for chunk_id, _ in hits]


def bm25_folders(kb) -> list[str]:
    return sorted(p.name for p in kb.folder.glob("bm25-*"))


def test_tokens_are_lowercased_stemmed_and_without_stopwords():
    # bm25s's English stop words are Lucene's short list (the, of, and, to, ...)
    assert tokenize(["The Studies of running pumps", "It studied"]) == [["studi", "run", "pump"], ["studi"]]


def test_search_finds_rare_words_and_persists_per_generation(models, tmp_path):
    kb = ingest(models, tmp_path / "docs", FILES)
    index = LexicalIndex(kb)
    hits = index.search("When did the plant open? 1987", 3)
    assert names(kb, hits)[0] == "history.txt"
    assert hits[0][1] > 0
    assert names(kb, index.search("closing valves", 3)) == ["valves.txt"]  # stems: closes ~ closing
    assert index.search("zebra", 3) == []  # no shared word: no hit, not a zero-score filler
    assert index.search("the and of", 3) == []  # stopwords only
    generation = kb.generation
    assert bm25_folders(kb) == [f"bm25-{generation}"]
    meta = json.loads((kb.folder / f"bm25-{generation}" / "loupe.json").read_text())
    assert meta["generation"] == generation and meta["chunks"] == 3
    # a second index on the same store (another process) loads the saved one instead of rebuilding
    assert LexicalIndex(kb)._load(generation) is not None
    assert names(kb, LexicalIndex(kb).search("1987", 3)) == ["history.txt"]


def test_ingest_and_delete_update_the_index(models, tmp_path):
    kb = ingest(models, tmp_path / "docs", FILES)
    index = LexicalIndex.for_store(kb)
    assert LexicalIndex.for_store(kb) is index  # one per store in a process
    assert index.search("turbine", 3) == []
    ingest(models, tmp_path / "more", {"turbine.txt": "The steam turbine drives the generator."}, kb)
    assert names(kb, index.search("turbine", 3)) == ["turbine.txt"]
    assert bm25_folders(kb) == [f"bm25-{kb.generation}"]  # the older generation's folder is gone
    kb.delete(kb.resolve("turbine.txt").id)
    assert index.search("turbine", 3) == []
    assert names(kb, index.search("centrifugal pump", 3)) == ["pumps.txt"]
    assert bm25_folders(kb) == [f"bm25-{kb.generation}"]


def test_a_write_by_another_store_object_is_seen(models, tmp_path):
    kb = ingest(models, tmp_path / "docs", FILES)
    index = LexicalIndex(kb)
    assert index.search("compressor", 3) == []
    other = KnowledgeBase(kb.folder, models.text_embedder.model_id)  # as another process would open it
    ingest(models, tmp_path / "more", {"air.txt": "The compressor feeds the air tools."}, other)
    assert names(kb, index.search("compressor", 3)) == ["air.txt"]
    other.close()


def test_a_damaged_or_foreign_index_is_rebuilt(models, tmp_path):
    kb = ingest(models, tmp_path / "docs", FILES)
    LexicalIndex(kb).refresh()
    saved = kb.folder / f"bm25-{kb.generation}"
    (saved / "loupe.json").write_text(json.dumps({"tokenizer": "something else", "generation": kb.generation}))
    assert LexicalIndex(kb)._load(kb.generation) is None
    assert names(kb, LexicalIndex(kb).search("gate valve", 3)) == ["valves.txt"]
    for file in saved.iterdir():
        if file.suffix == ".npy":
            file.write_bytes(b"garbage")
    assert names(kb, LexicalIndex(kb).search("gate valve", 3)) == ["valves.txt"]


def test_an_empty_store_has_no_hits(models):
    kb = models.open_store()
    assert LexicalIndex(kb).search("anything", 5) == []
    assert bm25_folders(kb) == [f"bm25-{kb.generation}"]


def test_a_damaged_folder_is_rebuilt_once_and_the_rebuilt_copy_saved(models, tmp_path, caplog):
    kb = ingest(models, tmp_path / "docs", FILES)
    LexicalIndex(kb).refresh()
    generation = kb.generation
    saved = kb.folder / f"bm25-{generation}"
    for file in saved.glob("*.npy"):
        file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="rag.lexical_index"):
        assert names(kb, LexicalIndex(kb).search("gate valve", 3)) == ["valves.txt"]  # a new process: rebuilds
    [warning] = [r for r in caplog.records if r.name == "rag.lexical_index"]
    assert "rebuilding from the catalog" in warning.getMessage() and warning.exc_info is not None
    assert LexicalIndex(kb)._load(generation) is not None  # the next new process loads the rebuilt copy
    assert bm25_folders(kb) == [f"bm25-{generation}"]  # replaced in place: nothing set aside is left
