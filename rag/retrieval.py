"""Search a knowledge base: text query → chunks, text query → images (CLIP), image → similar images.

Chunk search has three modes:
- dense: cosine similarity of Sentence-BERT vectors (FAISS); finds paraphrases.
- bm25: BM25 over the chunk words (rag.lexical_index); finds rare words, names, codes, numbers.
- hybrid (the default): both. Each method's top CANDIDATES scores are turned into z-scores (minus that
  list's mean, over its standard deviation) and added; a chunk missing from one list counts as that list's
  lowest score. Dense counts fully. BM25 counts as much as its evidence explains the question: its
  z-scores are weighted by the share of the question's words (BM25 tokens) found in the best-covering of
  its top COVERAGE_CANDIDATES chunks (counted by the lexical index from its own postings). A z-score alone
  cannot tell a strong match from a weak one: when one chunk shares two common words with the question and
  no other chunk shares any, that chunk's BM25 z-score is as high as an exact match of a rare code would be,
  and with equal weights it outvotes dense search on a paraphrased question. Coverage tells them apart: a
  question of one code that a chunk contains gets the full BM25 weight, a paraphrase whose best lexical match
  holds two of its seven tokens about 0.3. Nothing is tuned to a data set; docs/EVALUATION.md has the
  measurements on three collections (and the equal-weight fusion's, which lost to dense search where BM25 is
  the weaker method).

Hybrid search fuses ids and scores only, then reads the chunks it keeps, for all its queries in one read.

Every Passage keeps the chunk's cosine similarity to the question in `dense_score`, also for chunks
that only BM25 found (from the vectors ingest stored), because the "documents don't
say" test compares cosine similarities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.embedder import Embedder
from rag.image_embedder import ImageEmbedder
from rag.lexical_index import tokenize
from rag.records import ChunkRecord, ImageRecord
from rag.store import KnowledgeBase
from rag.store_api import LexicalSearch, lexical_index

CANDIDATES = 100  # chunks each method puts forward for fusion; their scores give the z-score scale
# Two passages whose words overlap this much are one passage twice (a table of contents on every page, a file
# uploaded under two names): the second would take one of the k slots to show the same text again.
NEAR_DUPLICATE = 0.9
COVERAGE_CANDIDATES = 10  # BM25's best chunks whose share of the question's words sets BM25's weight
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
    def __init__(self, kb: KnowledgeBase, text_embedder: Embedder, image_embedder: ImageEmbedder | None = None,
                 mode: str = "dense") -> None:
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, not {mode!r}")
        self.kb = kb
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        self.mode = mode

    @property
    def lexical(self) -> LexicalSearch:
        return lexical_index(self.kb)

    def embed_query(self, query: str) -> np.ndarray:
        """The query's vector, for callers that use it again after searching (answering ranks sentences)."""
        return self.text_embedder.embed([query], urgent=True, query=True)[0]

    def search(self, query: str, k: int, mode: str | None = None, vector: np.ndarray | None = None) -> list[Passage]:
        """The best k passages; `vector` is the query's own (embed_query), when the caller has it already."""
        return self.search_many([query], k, mode, vectors=None if vector is None else vector[None, :])[0]

    def search_many(self, queries: Sequence[str], k: int, mode: str | None = None, batch_size: int = 0,
                    with_dense_scores: bool = True, vectors: np.ndarray | None = None) -> list[list[Passage]]:
        """The best k passages for each query, best first, near-duplicates of a better one left out (distinct());
        queries are embedded in batches, unless `vectors` holds their vectors already.

        with_dense_scores=False leaves dense_score None on hybrid hits only BM25 found, instead of looking up
        their vectors: ranking evaluations over thousands of queries need the order, not the cosine.
        """
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, not {mode!r}")
        queries = list(queries)
        if not queries or k < 1:
            return [[] for _ in queries]
        depth = 2 * k  # room for the near-duplicates distinct() drops
        if mode == "bm25":
            return [distinct(row, k) for row in self._bm25(queries, depth)]
        if vectors is None:
            vectors = self.text_embedder.embed(queries, batch_size, urgent=True, query=True)
        if mode == "dense":
            hits = [self.kb.search_chunks(vector[None, :], depth) for vector in vectors]
            return [distinct([Passage(chunk, score, score) for chunk, score in row], k) for row in hits]
        results = [distinct(row, k) for row in self._hybrid(queries, vectors, depth)]
        if with_dense_scores:
            results = self._fill_dense_scores(vectors, results)
        return results

    def _bm25(self, queries: list[str], k: int) -> list[list[Passage]]:
        hits = self.lexical.search_many(queries, k)
        records = self.kb.chunks(sorted({chunk_id for row in hits for chunk_id, _ in row}))
        return [[Passage(records[chunk_id], score) for chunk_id, score in row if chunk_id in records] for row in hits]

    def _hybrid(self, queries: list[str], vectors: np.ndarray, k: int) -> list[list[Passage]]:
        """The fused top k of each query: ids and scores are fused first, and only the chunks kept are read."""
        depth = max(CANDIDATES, k)
        lexical_index = self.lexical
        lexical = lexical_index.search_many(queries, depth)
        weights = lexical_weights(lexical_index, tokenize(queries), lexical)
        pool_size = self.kb.text_index.size
        fused_rows, dense_rows = [], []
        for vector, bm25_hits, bm25_weight in zip(vectors, lexical, weights):
            dense = dict(self.kb.search_chunk_ids(vector[None, :], depth))
            fused_rows.append(fuse([dense, dict(bm25_hits)], pool_size, weights=(1.0, bm25_weight))[:k])
            dense_rows.append(dense)
        records = self.kb.chunks(sorted({i for row in fused_rows for i, _ in row}))
        return [[Passage(records[i], score, dense.get(i)) for i, score in row if i in records]
                for row, dense in zip(fused_rows, dense_rows)]

    def _fill_dense_scores(self, vectors: np.ndarray, results: list[list[Passage]]) -> list[list[Passage]]:
        """Cosine similarity for the hits only BM25 found, from the vectors ingest stored (no model call)."""
        missing = sorted({p.chunk.id for row in results for p in row if p.dense_score is None})
        if not missing:
            return results
        chunk_vectors = self.kb.chunk_vectors(missing)
        return [[p if p.dense_score is not None or p.chunk.id not in chunk_vectors else
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


def distinct(passages: Sequence[Passage], k: int) -> list[Passage]:
    """The first k passages that are not near-duplicates of a better one: word sets (lower case, split on
    whitespace) with a Jaccard similarity of NEAR_DUPLICATE or more.

    Linear, not a comparison with every passage kept: two sets that similar share a word among the first few
    of each in any fixed order (prefix filtering, as in set-similarity joins), so a passage is compared only with
    the kept ones that share one of its first few words."""
    kept: list[Passage] = []
    kept_words: list[set[str]] = []
    by_prefix_word: dict[str, list[int]] = defaultdict(list)
    for passage in passages:
        words = set(passage.chunk.text.lower().split())
        prefix = _prefix(words)
        candidates = {number for word in prefix for number in by_prefix_word.get(word, ())}
        if any(len(words & kept_words[n]) >= NEAR_DUPLICATE * len(words | kept_words[n]) for n in candidates):
            continue
        for word in prefix:
            by_prefix_word[word].append(len(kept))
        kept.append(passage)
        kept_words.append(words)
        if len(kept) == k:
            break
    return kept


def _prefix(words: set[str]) -> list[str]:
    """The words of a set that any set with a Jaccard similarity of NEAR_DUPLICATE or more shares at least one of
    in its own prefix: the first n - ceil(t * n) + 1 in sorted order (one more with floor, safe from rounding).
    An empty set has the prefix [""], a key no word has: it is a near-duplicate of another empty set only."""
    if not words:
        return [""]
    return sorted(words)[: len(words) - int(NEAR_DUPLICATE * len(words)) + 1]


def lexical_weights(lexical_index: LexicalSearch, query_terms: Sequence[Sequence[str]],
                    lexical: Sequence[Sequence[tuple[int, float]]]) -> list[float]:
    """BM25's weight in the fusion for each query: the largest share of the query's distinct BM25 tokens
    (`query_terms`, tokenize()'s) that one of its best COVERAGE_CANDIDATES chunks contains (0 when BM25 found
    nothing), as the lexical index counts them."""
    return [max(lexical_index.coverage(terms, [i for i, _ in row[:COVERAGE_CANDIDATES]]).values(), default=0.0)
            if terms and row else 0.0 for terms, row in zip(query_terms, lexical)]


def fuse(rankings: Sequence[dict[int, float]], pool_size: int, depth: int = CANDIDATES,
         weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Add the z-scores of several score lists, times their weights (default 1 each); each list's scale
    comes from its best `depth` scores.

    A list holds one method's best candidates (id -> score) out of `pool_size` chunks. An id missing from
    a list gets that list's lowest score. A list shorter than min(depth, pool_size) is taken to have left
    out only chunks that score 0 (BM25 lists every chunk that shares a word with the query), so zeros fill
    its scale and its missing ids score 0. Ties keep the id order, so the result is deterministic.
    Returns (id, fused score), best first.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"fuse: {len(weights)} weights for {len(rankings)} score lists")
    ids = sorted({i for ranking in rankings for i in ranking})
    if not ids:
        return []
    total = np.zeros(len(ids))
    expected = min(depth, pool_size)
    for ranking, weight in zip(rankings, weights if weights is not None else [1.0] * len(rankings)):
        values = np.sort(np.fromiter(ranking.values(), float, len(ranking)))[::-1][:depth]
        padded = len(values) < expected
        if padded:
            values = np.concatenate([values, np.zeros(expected - len(values))])
        if not weight or not len(values) or values.std() <= 1e-9:
            continue  # no list, no weight, or a list that cannot tell its chunks apart: it adds nothing
        absent = 0.0 if padded else min(ranking.values())
        scores = np.array([ranking.get(i, absent) for i in ids])
        total += weight * (scores - values.mean()) / values.std()
    order = np.argsort(-total, kind="stable")
    return [(ids[j], float(total[j])) for j in order]
