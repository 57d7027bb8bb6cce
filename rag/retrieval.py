"""Search a knowledge base: text query → chunks, text query → images (CLIP), image → similar images.

Chunk search has three modes:
- dense: cosine similarity of Sentence-BERT vectors (FAISS); finds paraphrases.
- bm25: BM25 over the chunk words (rag.lexical_index); finds rare words, names, codes, numbers.
- hybrid (the default): both. Each method's top CANDIDATES scores are turned into z-scores (minus that
  list's mean, over its standard deviation) and added with equal weights; a chunk missing from one list
  counts as that list's lowest score. This fusion has no weight tuned to a data set: z-scores put cosine
  similarities and BM25 scores on one scale per query. On Disfl-QA it beat both single methods and
  reciprocal rank fusion, which stayed below BM25 there (docs/EVALUATION.md).

Every Passage keeps the chunk's cosine similarity to the question in `dense_score`, also for chunks
that only BM25 found (their texts are embedded again: a few per question), because the "documents don't
say" test compares cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.image_embedder import ImageEmbedder
from rag.lexical_index import LexicalIndex
from rag.records import ChunkRecord, ImageRecord, indexed_text
from rag.store import KnowledgeBase
from rag.text_embedder import TextEmbedder

CANDIDATES = 100  # chunks each method puts forward for fusion; their scores give the z-score scale
MODES = ("dense", "bm25", "hybrid")


@dataclass(frozen=True)
class Passage:
    chunk: ChunkRecord
    score: float  # cosine similarity for dense search, BM25 score for bm25, the fused z-score for hybrid
    dense_score: float | None = None  # cosine similarity, when known: the "documents don't say" test uses it


@dataclass(frozen=True)
class ImageHit:
    image: ImageRecord
    score: float


class Retriever:
    def __init__(self, kb: KnowledgeBase, text_embedder: TextEmbedder, image_embedder: ImageEmbedder | None = None,
                 mode: str = "dense") -> None:
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, not {mode!r}")
        self.kb = kb
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        self.mode = mode

    @property
    def lexical(self) -> LexicalIndex:
        return LexicalIndex.for_store(self.kb)

    def search(self, query: str, k: int, mode: str | None = None) -> list[Passage]:
        return self.search_many([query], k, mode)[0]

    def search_many(self, queries: Sequence[str], k: int, mode: str | None = None, batch_size: int = 0,
                    with_dense_scores: bool = True) -> list[list[Passage]]:
        """The best k passages for each query, best first; queries are embedded in batches.

        with_dense_scores=False leaves dense_score None on hybrid hits only BM25 found, instead of embedding
        their texts: ranking evaluations over thousands of queries need the order, not the cosine.
        """
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, not {mode!r}")
        queries = list(queries)
        if not queries or k < 1:
            return [[] for _ in queries]
        if mode == "bm25":
            return self._bm25(queries, k)
        vectors = self.text_embedder.embed(queries, batch_size)
        if mode == "dense":
            return [[Passage(chunk, score, score) for chunk, score in self.kb.search_chunks(vector[None, :], k)]
                    for vector in vectors]
        results = self._hybrid(queries, vectors, k)
        if with_dense_scores:
            results = self._fill_dense_scores(vectors, results, batch_size)
        return results

    def _bm25(self, queries: list[str], k: int) -> list[list[Passage]]:
        hits = self.lexical.search_many(queries, k)
        records = self.kb.chunks(sorted({chunk_id for row in hits for chunk_id, _ in row}))
        return [[Passage(records[chunk_id], score) for chunk_id, score in row if chunk_id in records] for row in hits]

    def _hybrid(self, queries: list[str], vectors: np.ndarray, k: int) -> list[list[Passage]]:
        depth = max(CANDIDATES, k)
        lexical = self.lexical.search_many(queries, depth)
        wanted = sorted({chunk_id for row in lexical for chunk_id, _ in row})
        records = self.kb.chunks(wanted)
        results = []
        for vector, bm25_hits in zip(vectors, lexical):
            dense_hits = self.kb.search_chunks(vector[None, :], depth)
            chunks = {chunk.id: chunk for chunk, _ in dense_hits}
            chunks.update((i, records[i]) for i, _ in bm25_hits if i in records)
            dense = {chunk.id: score for chunk, score in dense_hits}
            fused = fuse([dense, {i: s for i, s in bm25_hits if i in chunks}], self.kb.text_index.size)
            results.append([Passage(chunks[i], score, dense.get(i)) for i, score in fused[:k]])
        return results

    def _fill_dense_scores(self, vectors: np.ndarray, results: list[list[Passage]],
                           batch_size: int) -> list[list[Passage]]:
        """Cosine similarity for the hits only BM25 found: embed their texts as ingest did (heading + text)."""
        missing = sorted({p.chunk.id: p.chunk for row in results for p in row if p.dense_score is None}.items())
        if not missing:
            return results
        texts = [indexed_text(c.heading, c.text) for _, c in missing]
        chunk_vectors = dict(zip((i for i, _ in missing), self.text_embedder.embed(texts, batch_size)))
        return [[p if p.dense_score is not None else
                 Passage(p.chunk, p.score, float(chunk_vectors[p.chunk.id] @ vector)) for p in row]
                for vector, row in zip(vectors, results)]

    def search_images(self, query: str, k: int) -> list[ImageHit]:
        """Images whose CLIP vector is nearest the query text's; empty without CLIP weights."""
        if self.image_embedder is None:
            return []
        return self._images(self.image_embedder.embed_texts([query]), k)

    def similar_images(self, image: bytes, k: int) -> list[ImageHit]:
        if self.image_embedder is None:
            return []
        return self._images(self.image_embedder.embed_images([image]), k)

    def _images(self, vector: np.ndarray, k: int) -> list[ImageHit]:
        return [ImageHit(image, score) for image, score in self.kb.search_images(vector, k)]


def fuse(rankings: Sequence[dict[int, float]], pool_size: int, depth: int = CANDIDATES) -> list[tuple[int, float]]:
    """Add the z-scores of several score lists; each list's scale comes from its best `depth` scores.

    A list holds one method's best candidates (id -> score) out of `pool_size` chunks. An id missing from
    a list gets that list's lowest score. A list shorter than min(depth, pool_size) is taken to have left
    out only chunks that score 0 (BM25 lists every chunk that shares a word with the query), so zeros fill
    its scale and its missing ids score 0. Ties keep the id order, so the result is deterministic.
    Returns (id, fused score), best first.
    """
    ids = sorted({i for ranking in rankings for i in ranking})
    if not ids:
        return []
    total = np.zeros(len(ids))
    expected = min(depth, pool_size)
    for ranking in rankings:
        values = np.sort(np.fromiter(ranking.values(), float, len(ranking)))[::-1][:depth]
        padded = len(values) < expected
        if padded:
            values = np.concatenate([values, np.zeros(expected - len(values))])
        if not len(values) or values.std() <= 1e-9:
            continue  # no list, or one that cannot tell its chunks apart: it adds nothing
        absent = 0.0 if padded else min(ranking.values())
        scores = np.array([ranking.get(i, absent) for i in ids])
        total += (scores - values.mean()) / values.std()
    order = np.argsort(-total, kind="stable")
    return [(ids[j], float(total[j])) for j in order]
