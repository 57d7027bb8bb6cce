"""BM25 over a knowledge base's chunks (bm25s), a cache of the catalog like the FAISS indexes.

The index is saved as the folder `bm25-<generation>/` inside the store: written under a temporary name
and renamed, so a reader never sees half of one. Whenever the catalog's generation differs from the
loaded index's (an ingest or a delete, in this process or another), the index for the new generation is
loaded if some process saved it already, else rebuilt from the chunk texts in the catalog. Older
folders are removed. bm25s cannot add or remove documents in place, so "updated on ingest and delete"
means rebuilt on the first search after the write; tokenising is the bulk of that (~0.3 s for 1,500
chunks on 2 cores).

Tokens: lowercased words of two or more letters or digits, bm25s's English stop-word list dropped, and
Snowball English stems (PyStemmer) so "studies" finds "study". Nothing here is tuned to one data set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.records import indexed_text
from rag.store import KnowledgeBase
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


# Part of every saved index: an index made with another tokenizer is rebuilt rather than misread.
TOKENIZER = "bm25s-words2+en-stopwords+" + ("snowball-en/1" if stemmer() is not None else "no-stems/1")
_PREFIX = "bm25-"
_FOLDER = re.compile(r"bm25-(\d+)(?:\.(?:tmp|old)-.*)?")
_META = "loupe.json"
_IDS = "chunk_ids.npy"


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The tokens BM25 sees, for chunk texts and queries alike."""
    import bm25s

    stem = stemmer()
    return bm25s.tokenize(list(texts), lower=True, stopwords="en",
                          stemmer=stem.stemWords if stem is not None else None, return_ids=False,
                          show_progress=False)


@dataclass
class _Loaded:
    generation: int
    ids: np.ndarray  # row of the BM25 matrix -> chunk id
    model: object | None  # bm25s.BM25; None for a store without chunks


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
        if loaded.model is None or k < 1 or not queries:
            return [[] for _ in queries]
        tokens = tokenize(queries)
        k = min(k, len(loaded.ids))
        results: list[list[tuple[int, float]]] = [[] for _ in queries]
        asked = [i for i, t in enumerate(tokens) if any(w in loaded.model.vocab_dict for w in t)]
        if not asked:
            return results
        rows, scores = loaded.model.retrieve([tokens[i] for i in asked], k=k, show_progress=False, n_threads=0)
        for i, row, score in zip(asked, rows, scores):
            results[i] = [(int(loaded.ids[r]), float(s)) for r, s in zip(row, score) if s > 0]
        return results

    @property
    def generation(self) -> int:
        return self.refresh().generation

    # --- maintenance --------------------------------------------------------------------------
    def refresh(self) -> _Loaded:
        """The index for the catalog's current generation: kept, loaded from disk, or rebuilt."""
        with self._lock:
            generation = self.kb.generation
            if self._loaded is not None and self._loaded.generation == generation:
                return self._loaded
            saved = self._path(generation).is_dir()
            loaded = self._load(generation) if saved else None
            if loaded is None:
                loaded = self._build()
                # a saved folder that did not load is replaced, or every new process would rebuild again
                self._save(loaded, replace=saved and loaded.generation == generation)
            self._remove_stale(loaded.generation)
            self._loaded = loaded
            return loaded

    def _path(self, generation: int) -> Path:
        return self.kb.folder / f"{_PREFIX}{generation}"

    def _load(self, generation: int) -> _Loaded | None:
        path = self._path(generation)
        try:
            meta = json.loads((path / _META).read_text())
            if meta.get("tokenizer") != TOKENIZER or meta.get("generation") != generation:
                logger.info("%s was made by another tokenizer or for another generation; rebuilding from the "
                            "catalog", path.name)
                return None
            ids = np.load(path / _IDS)
            if not len(ids):
                return _Loaded(generation, ids, None)
            import bm25s

            model = bm25s.BM25.load(str(path), show_progress=False, verbosity=0)
            return _Loaded(generation, ids, model)
        except Exception:  # missing or damaged: the catalog still has every chunk
            logger.warning("cannot load the BM25 index %s; rebuilding from the catalog", path.name, exc_info=True)
            return None

    def _build(self) -> _Loaded:
        """Read the chunks of one generation (read again if a write lands meanwhile) and index them."""
        while True:
            generation = self.kb.generation
            ids, texts = self._chunk_texts()
            if self.kb.generation == generation:
                break
        if not ids:
            return _Loaded(generation, np.zeros(0, np.int64), None)
        import bm25s

        model = bm25s.BM25()
        model.index(tokenize(texts), show_progress=False)
        return _Loaded(generation, np.asarray(ids, np.int64), model)

    def _chunk_texts(self) -> tuple[list[int], list[str]]:
        """Each chunk's heading and text: the same words the text embedder saw at ingest."""
        rows = self.kb.chunk_texts()
        return [chunk_id for chunk_id, _, _ in rows], [indexed_text(heading, text) for _, heading, text in rows]

    def _save(self, loaded: _Loaded, replace: bool = False) -> None:
        """Write the index under a temporary name and rename it into place. An existing folder for the same
        generation is kept (another process saved it first) unless `replace`: then it is renamed aside
        first, so that a reader finds either the old folder, none, or the new one, never a mix."""
        target = self._path(loaded.generation)
        if target.exists() and not replace:
            return
        partial = scratch_path(target)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            if loaded.model is not None:
                loaded.model.save(str(partial), show_progress=False)
            np.save(partial / _IDS, loaded.ids)
            (partial / _META).write_text(json.dumps({"tokenizer": TOKENIZER, "generation": loaded.generation,
                                                     "chunks": len(loaded.ids)}))
            for file in partial.iterdir():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            if replace:
                self._move_aside(target)
            os.replace(partial, target)
        except OSError:  # e.g. another process renamed its copy in first; this one is not needed
            shutil.rmtree(partial, ignore_errors=True)

    @staticmethod
    def _move_aside(target: Path) -> None:
        aside = target.with_name(f"{target.name}.old-{os.getpid()}-{threading.get_ident()}")
        try:
            os.replace(target, aside)
        except FileNotFoundError:  # another process moved it aside first
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _remove_stale(self, generation: int) -> None:
        """Folders of older generations, and partial ones a killed process left; never a newer one."""
        for path in self.kb.folder.glob(f"{_PREFIX}*"):
            match = _FOLDER.fullmatch(path.name)
            if match and int(match.group(1)) < generation and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


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
