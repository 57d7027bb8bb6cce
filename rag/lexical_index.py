"""BM25 over a knowledge base's chunks, a cache of the catalog like the FAISS indexes, kept in segments.

The index is a list of segments, each an inverted index of some chunks (term frequencies in a compressed
sparse column matrix) with a mask of the chunks deleted since. Scores are computed at query time from the
segments' counts, with the collection statistics (number of chunks, document frequencies, average length)
taken over every live chunk of every segment: so a segmented index scores exactly as one rebuilt from
scratch would (bm25s's formula, "lucene": idf = ln(1 + (N - df + 0.5) / (df + 0.5)), k1 1.5, b 0.75;
tests/rag/test_lexical_index.py compares the two).

Updated on ingest and delete at the cost of the change, not of the store: when the catalog's generation moves
on (in this process or another), the catalog's change log says which chunks came and went; the new chunks
become a small segment and the deleted ones are masked. Small segments are merged in tiers (four of a size
make one, as in a log-structured merge), and a segment mostly deleted is rewritten. The whole index is saved
as a base, the folder `bm25-<generation>/`, only when the changes since the last base reach MERGE_FRACTION
of it (written under a temporary name and renamed, so a reader never sees half of one); another process
loads the newest base and replays the log since. A store whose log does not reach back to a base, or one
without a base, is indexed from all its chunk texts (tokenising is the bulk of that: ~0.3 s for 1,500 chunks
on 2 cores).

Tokens: lowercased words of two or more letters or digits, bm25s's English stop-word list dropped, and
Snowball English stems (PyStemmer) so "studies" finds "study". Nothing here is tuned to one data set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from rag.records import indexed_text
from rag.store import MERGE_FRACTION, KnowledgeBase
from rag.vector_index import scratch_path

logger = logging.getLogger(__name__)

_local = threading.local()


def stemmer():
    """This thread's Snowball English stemmer (PyStemmer's are not thread-safe); None where PyStemmer is not
    installed, and then words match only in the same form."""
    if not hasattr(_local, "stemmer"):
        try:
            import Stemmer
        except ImportError:
            _local.stemmer = None
        else:
            _local.stemmer = Stemmer.Stemmer("english")
    return _local.stemmer


# Part of every saved index: an index made with another tokenizer or layout is rebuilt rather than misread.
TOKENIZER = "bm25s-words2+en-stopwords+" + ("snowball-en/1" if stemmer() is not None else "no-stems/1")
FORMAT = "segments/1"
_PREFIX = "bm25-"
_FOLDER = re.compile(r"bm25-(\d+)(?:\.(?:tmp|old)-.*)?")
_BASE_FOLDER = re.compile(r"bm25-(\d+)")
_META = "loupe.json"
LOAD_ATTEMPTS = 3  # bases read in turn while other processes keep replacing the newest (each time: a newer one)
K1, B = 1.5, 0.75  # bm25s's defaults, so scores are those of bm25s.BM25 over the same chunks
SEGMENT_CHUNKS = 250_000  # the largest segment a build or a merge makes: bounds the memory a build takes
MERGE_TIER = 4  # this many segments of one size tier (a power of four chunks) are merged into one
REWRITE_DEAD_FRACTION = 0.5  # a segment with more deleted chunks than this is rewritten without them


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The tokens BM25 sees, for chunk texts and queries alike: exactly bm25s.tokenize's (lowercased, its token
    pattern, its English stop words dropped, Snowball stems), with each word's token cached, since stemming a word
    never depends on its neighbours: about 1.2x faster than bm25s's per-token loop (docs/BENCHMARKS.md, "Scale";
    tests/rag/test_lexical_index.py compares the two)."""
    result: list[list[str]] = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):  # in batches: a word list per text is the bulk of memory
        words_of = [_WORD.findall(text.lower()) for text in texts[start:start + _TOKENIZE_BATCH]]
        tokens = _tokens_of(set(chain.from_iterable(words_of)))
        result += ([token for token in map(tokens.__getitem__, words) if token is not None] for words in words_of)
    return result


_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default token_pattern
_TOKENIZE_BATCH = 10_000
_TOKEN_CACHE_WORDS = 500_000  # a vocabulary bigger than this starts a new cache (bounds its memory)
_token_cache: dict[str, str | None] = {}  # word -> its token, None for a stop word


def _tokens_of(words: set[str]) -> dict[str, str | None]:
    """A cache that holds the token of each of `words` (a dict: lookups need no lock)."""
    global _token_cache
    from bm25s.stopwords import STOPWORDS_EN

    cache = _token_cache
    missing = [word for word in words if word not in cache]
    if not missing:
        return cache
    if len(cache) + len(missing) > _TOKEN_CACHE_WORDS:
        cache = {}
    stop = set(STOPWORDS_EN)
    stem = stemmer()
    stems = stem.stemWords(missing) if stem is not None else missing
    cache.update((word, None if word in stop else token) for word, token in zip(missing, stems))
    _token_cache = cache  # another thread may have swapped in its own meanwhile: both are correct
    return cache


@dataclass
class _Segment:
    """An inverted index of some chunks: for each term, the rows (chunks) that hold it and how often."""

    ids: np.ndarray  # row -> chunk id, ascending
    lengths: np.ndarray  # tokens per row
    vocab: dict[str, int]  # term -> column
    indptr: np.ndarray  # column c's postings are rows[indptr[c]:indptr[c + 1]]
    rows: np.ndarray
    tfs: np.ndarray
    dead: np.ndarray  # rows whose chunk was deleted since

    @classmethod
    def build(cls, ids: Sequence[int], texts: Sequence[str]) -> _Segment:
        token_ids, vocab = _token_ids(texts)
        lengths = np.fromiter((len(t) for t in token_ids), np.int64, len(token_ids))
        columns = np.fromiter(chain.from_iterable(token_ids), np.int64, int(lengths.sum()))
        rows = np.repeat(np.arange(len(token_ids), dtype=np.int64), lengths)
        return cls._from_triples(np.asarray(ids, np.int64), lengths, vocab, columns, rows, None)

    @classmethod
    def _from_triples(cls, ids: np.ndarray, lengths: np.ndarray, vocab: dict[str, int], columns: np.ndarray,
                      rows: np.ndarray, counts: np.ndarray | None) -> _Segment:
        """From (column, row[, count]) triples, in any order, repeats summed."""
        width = max(1, len(ids))
        keys = columns * width + rows  # sorted, these are in column order, rows ascending within a column
        if counts is None:
            keys, tfs = np.unique(keys, return_counts=True)
        else:  # merged segments: each key appears once, with its count
            order = np.argsort(keys, kind="stable")
            keys, tfs = keys[order], counts[order]
        columns, rows = np.divmod(keys, width)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(columns, minlength=len(vocab)))])
        return cls(ids, lengths.astype(np.int32), vocab, indptr.astype(np.int64), rows.astype(np.int32),
                   tfs.astype(np.float32), np.zeros(len(ids), bool))

    @classmethod
    def merge(cls, segments: Sequence[_Segment]) -> _Segment:
        """One segment of the live chunks of several."""
        vocab: dict[str, int] = {}
        ids, lengths, columns, rows, counts = [], [], [], [], []
        offset = 0
        for segment in segments:
            live = ~segment.dead
            renumber = np.cumsum(live) - 1 + offset  # old row -> new row (for live rows)
            terms = list(segment.vocab)
            to_global = np.fromiter((vocab.setdefault(t, len(vocab)) for t in terms), np.int64, len(terms))
            column_of_posting = np.repeat(np.arange(len(terms)), np.diff(segment.indptr))
            keep = live[segment.rows]
            columns.append(to_global[column_of_posting[keep]])
            rows.append(renumber[segment.rows[keep]])
            counts.append(segment.tfs[keep])
            ids.append(segment.ids[live])
            lengths.append(segment.lengths[live])
            offset += int(live.sum())
        return cls._from_triples(np.concatenate(ids), np.concatenate(lengths), vocab, np.concatenate(columns),
                                 np.concatenate(rows), np.concatenate(counts))

    @property
    def live(self) -> int:
        return int(len(self.ids) - self.dead.sum())

    @property
    def live_length(self) -> int:
        return int(self.lengths[~self.dead].sum())

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        column = self.vocab.get(term)
        if column is None:
            return None
        start, end = self.indptr[column], self.indptr[column + 1]
        return self.rows[start:end], self.tfs[start:end]

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(those of `ids` in this segment, their rows), deleted ones included; `ids` ascending."""
        rows = np.searchsorted(self.ids, ids)
        found = rows < len(self.ids)
        found[found] = self.ids[rows[found]] == ids[found]
        return ids[found], rows[found]

    def kill(self, ids: np.ndarray) -> None:
        """Mark these chunks deleted (those of them in this segment)."""
        self.dead[self.rows_of(ids)[1]] = True

    def terms_held(self, terms: Iterable[str], rows: np.ndarray) -> np.ndarray:
        """For each of `rows`, how many of `terms` (distinct) it holds: a binary search in each term's postings,
        which are in row order."""
        held = np.zeros(len(rows), np.int64)
        for term in terms:
            postings = self.postings(term)
            if postings is not None and len(postings[0]):  # a merge keeps the terms of deleted rows, unposted
                at = np.minimum(np.searchsorted(postings[0], rows), len(postings[0]) - 1)
                held += postings[0][at] == rows
        return held

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:  # a file object: np.savez would append .npz to the scratch name
            np.savez(handle, ids=self.ids, lengths=self.lengths, vocab=np.array(list(self.vocab), dtype=str),
                     indptr=self.indptr, rows=self.rows, tfs=self.tfs, dead=self.dead)

    @classmethod
    def load(cls, path: Path) -> _Segment:
        with np.load(path, allow_pickle=False) as data:
            vocab = {term: column for column, term in enumerate(data["vocab"].tolist())}
            return cls(data["ids"], data["lengths"], vocab, data["indptr"], data["rows"], data["tfs"], data["dead"])


@dataclass
class _Loaded:
    """The index at one generation: its segments, and the generation of the base they were saved or built at."""

    generation: int
    segments: list[_Segment] = field(default_factory=list)
    base_generation: int = -1
    changes_since_base: int = 0

    @property
    def live(self) -> int:
        return sum(s.live for s in self.segments)


class LexicalIndex:
    """BM25 search over one knowledge base; share one per store through `for_store`."""

    _shared: weakref.WeakKeyDictionary[KnowledgeBase, LexicalIndex] = weakref.WeakKeyDictionary()
    _shared_lock = threading.Lock()

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    @classmethod
    def for_store(cls, kb: KnowledgeBase) -> LexicalIndex:
        """The process's one index for `kb`: retrievers of the same store share its memory."""
        with cls._shared_lock:
            index = cls._shared.get(kb)
            if index is None:
                index = cls._shared[kb] = cls(kb)
            return index

    # --- search -------------------------------------------------------------------------------
    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """The best k (chunk id, BM25 score) per query, best first; chunks sharing no term are left out."""
        loaded = self.refresh()
        if loaded.live == 0 or k < 1 or not queries:
            return [[] for _ in queries]
        return [_top(loaded.segments, terms, k) for terms in tokenize(queries)]

    def coverage(self, terms: Sequence[str], chunk_ids: Iterable[int]) -> dict[int, float]:
        """The share of the distinct `terms` (tokenize()'s) that each of these chunks holds, from the index's own
        postings (no chunk text read or tokenised again); chunks not in the index are left out."""
        loaded = self.refresh()
        distinct = set(terms)
        wanted = np.unique(np.fromiter(chunk_ids, np.int64))
        shares: dict[int, float] = {}
        for segment in loaded.segments:
            ids, rows = segment.rows_of(wanted)
            live = ~segment.dead[rows]
            ids, rows = ids[live], rows[live]
            held = segment.terms_held(distinct, rows) if distinct else np.zeros(len(rows))
            shares.update(zip(ids.tolist(), (held / max(1, len(distinct))).tolist()))
        return shares

    @property
    def generation(self) -> int:
        return self.refresh().generation

    # --- maintenance --------------------------------------------------------------------------
    def refresh(self) -> _Loaded:
        """The index for the catalog's current generation: kept and caught up, loaded from disk, or rebuilt."""
        with self._lock:
            generation = self.kb.generation
            loaded = self._loaded
            if loaded is not None and loaded.generation == generation:
                return loaded
            if loaded is None or not self._catch_up(loaded):
                loaded = self._load_newest() or self._build()
            if loaded.changes_since_base > MERGE_FRACTION * max(1, loaded.live):
                self._save(loaded)
            self._loaded = loaded
            return loaded

    def _catch_up(self, loaded: _Loaded) -> bool:
        """Apply the writes since `loaded`'s generation: deleted chunks masked, new ones a new segment, small
        segments merged. False when the catalog's log no longer reaches back that far."""
        change = self.kb.chunk_changes(loaded.generation)
        if change is None:
            return False
        generation, changes, added = change
        removed = np.asarray(changes.removed, np.int64)
        for segment in loaded.segments:
            segment.kill(removed)
        if added:
            loaded.segments.append(_segment_of(added))
        loaded.segments = _compacted(loaded.segments)
        loaded.generation = generation
        loaded.changes_since_base += len(changes.removed) + len(added)
        return True

    def _path(self, generation: int) -> Path:
        return self.kb.folder / f"{_PREFIX}{generation}"

    def _load_newest(self) -> _Loaded | None:
        """The newest saved base not newer than the catalog, caught up to the catalog; None when there is none
        that loads, or the log does not reach back to it. Another process may save a newer base and remove the
        one being read meanwhile (_remove_stale): that one is then read instead."""
        for _ in range(LOAD_ATTEMPTS):
            newest = self._newest_base()
            if newest is None:
                return None
            try:
                loaded = self._load(newest)
            except Exception:  # missing or damaged: the catalog still has every chunk
                if self._newest_base() != newest:
                    logger.info("the BM25 base %s was replaced while it was read; reading the newer one",
                                self._path(newest).name)
                    continue
                logger.warning("cannot load the BM25 index %s; rebuilding from the catalog", self._path(newest).name,
                               exc_info=True)
                return None
            return loaded if loaded is not None and self._catch_up(loaded) else None
        return None

    def _newest_base(self) -> int | None:
        generation = self.kb.generation
        return max((int(m.group(1)) for p in self.kb.folder.glob(f"{_PREFIX}*")
                    if (m := _BASE_FOLDER.fullmatch(p.name)) and int(m.group(1)) <= generation), default=None)

    def _load(self, generation: int) -> _Loaded | None:
        """The base of this generation; None when another tokenizer or layout made it. Raises when it cannot be
        read."""
        path = self._path(generation)
        meta = json.loads((path / _META).read_text())
        if (meta.get("tokenizer"), meta.get("format"), meta.get("generation")) != (TOKENIZER, FORMAT, generation):
            logger.info("%s was made by another tokenizer, layout or for another generation; rebuilding from the "
                        "catalog", path.name)
            return None
        segments = [_Segment.load(path / f"segment-{n:04d}.npz") for n in range(meta["segments"])]
        return _Loaded(generation, segments, base_generation=generation)

    def _build(self) -> _Loaded:
        """Index every chunk of one generation, SEGMENT_CHUNKS at a time."""
        generation, rows = self.kb.chunk_texts_at()
        segments = [_segment_of(rows[start:start + SEGMENT_CHUNKS]) for start in range(0, len(rows), SEGMENT_CHUNKS)]
        loaded = _Loaded(generation, segments)
        loaded.changes_since_base = len(rows) + 1  # never saved: save it
        return loaded

    def _save(self, loaded: _Loaded) -> None:
        """Write the index as the base of its generation, under a temporary name renamed into place. An existing
        folder for the same generation (another process saved it first, or a damaged one) is renamed aside
        first, so that a reader finds either the old folder, none, or the new one, never a mix."""
        target = self._path(loaded.generation)
        partial = scratch_path(target)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            for number, segment in enumerate(loaded.segments):
                segment.save(partial / f"segment-{number:04d}.npz")
            (partial / _META).write_text(json.dumps({"tokenizer": TOKENIZER, "format": FORMAT,
                                                     "generation": loaded.generation, "chunks": loaded.live,
                                                     "segments": len(loaded.segments)}))
            for file in partial.iterdir():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            self._move_aside(target)
            os.replace(partial, target)
        except OSError:  # e.g. another process renamed its copy in first; this one is not needed
            logger.info("the BM25 base %s was not saved; another process saved it first", target.name, exc_info=True)
            shutil.rmtree(partial, ignore_errors=True)
            return
        loaded.base_generation, loaded.changes_since_base = loaded.generation, 0
        self._remove_stale(loaded.generation)
        self.kb.prune_changes()

    @staticmethod
    def _move_aside(target: Path) -> None:
        aside = target.with_name(f"{target.name}.old-{os.getpid()}-{threading.get_ident()}")
        try:
            os.replace(target, aside)
        except FileNotFoundError:  # none there, or another process moved it aside first
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _remove_stale(self, generation: int) -> None:
        """Folders of older generations, and partial ones a killed process left; never a newer one."""
        for path in self.kb.folder.glob(f"{_PREFIX}*"):
            match = _FOLDER.fullmatch(path.name)
            if match and int(match.group(1)) < generation and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _token_ids(texts: Sequence[str]) -> tuple[list[list[int]], dict[str, int]]:
    """tokenize()'s tokens as ids, with their vocabulary (cheaper than strings for a big build)."""
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(token, len(vocab)) for token in tokens] for tokens in tokenize(texts)]
    return ids, vocab


def _segment_of(rows: Sequence[tuple[int, str | None, str]]) -> _Segment:
    """A segment of (id, heading, text) rows in id order: the same words the text embedder saw at ingest."""
    return _Segment.build([chunk_id for chunk_id, _, _ in rows],
                          [indexed_text(heading, text) for _, heading, text in rows])


def _compacted(segments: list[_Segment]) -> list[_Segment]:
    """Merge MERGE_TIER segments of one size tier into one (up to SEGMENT_CHUNKS), and rewrite mostly-deleted
    ones: each chunk is merged about log4(N) times over its life, so a write's share stays small."""
    segments = [s if s.dead.sum() <= REWRITE_DEAD_FRACTION * len(s.ids) else _Segment.merge([s]) for s in segments]
    segments = [s for s in segments if len(s.ids)]
    while True:
        tiers: dict[int, list[int]] = defaultdict(list)
        for number, segment in enumerate(segments):
            if segment.live < SEGMENT_CHUNKS:
                tiers[int(math.log(max(1, segment.live), MERGE_TIER))].append(number)
        full = next((numbers for numbers in tiers.values() if len(numbers) >= MERGE_TIER), None)
        if full is None:
            return segments
        merged = _Segment.merge([segments[n] for n in full])
        segments = [s for n, s in enumerate(segments) if n not in full] + [merged]


def _top(segments: Iterable[_Segment], terms: list[str], k: int) -> list[tuple[int, float]]:
    """The best k (chunk id, score) over all segments for one query's terms (repeats count again, as in bm25s),
    with N, df and the average length over the live chunks of all segments."""
    segments = list(segments)
    live = sum(s.live for s in segments)
    average_length = sum(s.live_length for s in segments) / max(1, live)
    postings = [[s.postings(t) for s in segments] for t in terms]
    idf = []
    for per_segment in postings:
        df = sum(int((~s.dead[p[0]]).sum()) for s, p in zip(segments, per_segment) if p is not None)
        idf.append(math.log(1 + (live - df + 0.5) / (df + 0.5)) if df else 0.0)
    ids, scores = [], []
    for number, segment in enumerate(segments):
        parts = [(p[0], w * p[1] / (p[1] + K1 * (1 - B + B * segment.lengths[p[0]] / average_length)))
                 for w, per_segment in zip(idf, postings) if (p := per_segment[number]) is not None and w]
        if not parts:
            continue
        rows = np.concatenate([r for r, _ in parts])
        total = np.bincount(rows, weights=np.concatenate([v for _, v in parts]), minlength=len(segment.ids))
        total[segment.dead] = 0
        hits = np.flatnonzero(total > 0)
        ids.append(segment.ids[hits])
        scores.append(total[hits])
    if not ids:
        return []
    all_ids, all_scores = np.concatenate(ids), np.concatenate(scores)
    best = np.argpartition(-all_scores, min(k, len(all_scores)) - 1)[:k] if len(all_scores) > k else \
        np.arange(len(all_scores))
    best = best[np.lexsort((all_ids[best], -all_scores[best]))]  # score first, ties by id: deterministic
    return [(int(all_ids[i]), float(all_scores[i])) for i in best]


def bm25_scores(query: str, texts: Sequence[str]) -> np.ndarray:
    """BM25 of each of a few texts for `query`, the statistics taken over those texts alone (e.g. the
    sentences of the passages an answer is drawn from). Zeros where no word is shared."""
    import bm25s

    if not texts:
        return np.zeros(0)
    tokens = tokenize(list(texts))
    if not any(tokens):
        return np.zeros(len(texts))
    model = bm25s.BM25()
    model.index(tokens, show_progress=False)
    wanted = [t for t in tokenize([query])[0] if t in model.vocab_dict]
    return np.asarray(model.get_scores(wanted), float) if wanted else np.zeros(len(texts))
