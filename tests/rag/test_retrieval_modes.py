"""Dense, BM25 and hybrid search on a real store: hybrid keeps what only one of the two methods finds."""

from __future__ import annotations

import math

import pytest

from ingest.pipeline import Ingestor
from rag.components import Models
from rag.retrieval import Retriever, fuse
from tests.conftest import make_settings

FILES = {
    "pump.txt": "The centrifugal pump moves cooling water through the plant.",
    "valve.txt": "A gate valve stops the flow of liquid when the operator closes it.",
    "minutes.txt": "Minutes of the spring meeting: the picnic moves to the riverside park, lunch starts at one, "
                   "and ZK4471 goes back to the supplier.",
    "parts.txt": "Spare part codes ZK4417, ZK7441 and KZ4471 are kept in cabinet B of the store room.",
    "cat.txt": "The feline dozed on the rug by the fireplace all afternoon.",
    "history.txt": "The plant opened in 1987 and its second hall was built ten years later.",
    "kitchen.txt": "The canteen serves soup, bread and coffee to the workers at noon.",
}


@pytest.fixture(scope="module")
def retriever(text_embedder, tmp_path_factory):
    """One store for the module: the searches below only read it."""
    folder = tmp_path_factory.mktemp("modes")
    for name, text in FILES.items():
        (folder / name).write_text(text)
    models = Models(make_settings(folder / "kb"), text_embedder, None, "no CLIP")
    kb = models.open_store()
    report = Ingestor(kb, models.settings, models.text_embedder).ingest([folder / n for n in FILES])
    assert not report.failed
    yield Retriever(kb, models.text_embedder, None, "hybrid")
    kb.close()


def files(passages) -> list[str]:
    return [p.chunk.file for p in passages]


def test_a_rare_code_word_only_bm25_matches(retriever):
    query = "Where is ZK4471 going?"
    assert files(retriever.search(query, 7, "bm25")) == ["minutes.txt"]  # BM25 lists only chunks sharing a word
    # word pieces of look-alike codes draw dense search to the wrong document
    assert files(retriever.search(query, 1, "dense")) == ["parts.txt"]
    hybrid = retriever.search(query, 3)
    assert files(hybrid)[0] == "minutes.txt"
    # the cosine is kept for a hit that came from BM25 alone: the same as dense search gives that chunk
    cosine = {p.chunk.file: p.score for p in retriever.search(query, 7, "dense")}
    assert hybrid[0].dense_score == pytest.approx(cosine["minutes.txt"], abs=1e-4)
    assert all(p.dense_score is not None for p in hybrid)


def test_a_paraphrase_only_dense_matches(retriever):
    query = "Where did the kitty nap?"
    assert "cat.txt" not in files(retriever.search(query, 7, "bm25"))  # no word in common
    assert files(retriever.search(query, 1, "dense")) == ["cat.txt"]
    hybrid = retriever.search(query, 3)
    assert files(hybrid)[0] == "cat.txt"
    assert hybrid[0].dense_score == pytest.approx(retriever.search(query, 1, "dense")[0].score, abs=1e-4)


def test_search_many_matches_search_and_modes_are_checked(retriever):
    queries = ["Where did the kitty nap?", "when was the plant opened", "ZK4471"]
    batch = retriever.search_many(queries, 2)
    assert [files(row) for row in batch] == [files(retriever.search(q, 2)) for q in queries]
    assert batch[1][0].chunk.file == "history.txt"
    unscored = retriever.search_many(queries, 2, with_dense_scores=False)
    assert [files(row) for row in unscored] == [files(row) for row in batch]
    assert retriever.search_many([], 3) == []
    with pytest.raises(ValueError, match="retrieval mode"):
        retriever.search("x", 3, "sparse")


def test_bm25_scores_are_bm25_and_dense_scores_are_cosines(retriever):
    bm25 = retriever.search("gate valve", 3, "bm25")
    assert files(bm25) == ["valve.txt"] and bm25[0].score > 1 and bm25[0].dense_score is None
    dense = retriever.search("gate valve", 3, "dense")
    assert all(-1 <= p.score <= 1 and p.dense_score == p.score for p in dense)


def test_fuse_adds_z_scores():
    # list A (dense-like, every chunk): 1 -> 0.9, 2 -> 0.5, 3 -> 0.1; mean 0.5, std sqrt(0.32/3) = 0.326599
    #   z: 1 -> 1.224745, 2 -> 0, 3 -> -1.224745
    # list B (BM25-like, only chunk 3 shares a word): 3 -> 6.0; padded with zeros to the 3 chunks: [6, 0, 0]
    #   mean 2, std sqrt((16 + 4 + 4) / 3) = 2.828427; z: 3 -> 1.414214, 1 and 2 -> -0.707107
    # sums: 1 -> 0.517638, 2 -> -0.707107, 3 -> 0.189469
    fused = fuse([{1: 0.9, 2: 0.5, 3: 0.1}, {3: 6.0}], pool_size=3)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert [s for _, s in fused] == pytest.approx([0.517638, 0.189469, -0.707107], abs=1e-6)


def test_fuse_edge_cases():
    assert fuse([{}, {}], pool_size=0) == []
    # an empty BM25 list (no shared word) leaves the dense order
    assert [i for i, _ in fuse([{4: 0.7, 5: 0.2}, {}], pool_size=2)] == [4, 5]
    # a full list (as long as it can be) fills its missing ids with its lowest score
    # A: 1 -> 2, 2 -> 0 (mean 1, std 1): z 1 -> 1, 2 -> -1, 3 (missing: 0) -> -1
    # B: 3 -> 4, 1 -> 0 (mean 2, std 2): z 3 -> 1, 1 -> -1, 2 (missing: 0) -> -1
    fused = dict(fuse([{1: 2.0, 2: 0.0}, {3: 4.0, 1: 0.0}], pool_size=2))
    assert fused == pytest.approx({1: 0.0, 2: -2.0, 3: 0.0})
    assert math.isfinite(sum(fused.values()))
