"""word2vec trained on a knowledge base's own text (gensim), cached with it, and what users ask of it: nearest
neighbours, analogies (a - b + c), and intrinsic scores beside the Sentence-BERT model's.

The cache file is named by the store's generation, so a changed knowledge base is trained afresh and an
unchanged one loads in a moment. Every chunk is one training text, lower-cased and split into alphabetic words
(gensim's simple_preprocess). A small corpus needs more passes to move its vectors away from their random start:
EPOCHS_SMALL below SMALL_CORPUS_WORDS words.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import LoupeError, NotFound
from rag.evaluation.intrinsic import (
    ANALOGY_FILE,
    SIMILARITY_SETS,
    analogy_accuracy,
    gensim_test_data,
    read_analogies,
    read_pairs,
    similarity_spearman,
)
from rag.explore import cache_file
from rag.records import indexed_text
from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

ARCHITECTURES = ("skipgram", "cbow")
VECTOR_SIZE = 100
WINDOW = 5
MIN_COUNT = 2  # a word seen once has no neighbours worth showing
SMALL_CORPUS_WORDS = 200_000
EPOCHS_SMALL, EPOCHS_LARGE = 20, 5
SEED = 1
MIN_WORDS = 20  # fewer words than this in a whole knowledge base teach word2vec nothing
_CACHE_NAME = re.compile(r"word2vec-(skipgram|cbow)-g(\d+)\.bin")

Progress = Callable[[float], None]  # the share of training done, 0..1


class OutOfVocabulary(NotFound):
    """A word the word vectors never saw often enough; the message offers the closest known spellings."""


@dataclass(frozen=True)
class WordScore:
    word: str
    score: float  # cosine similarity


def tokens(text: str) -> list[str]:
    from gensim.utils import simple_preprocess

    return simple_preprocess(text, min_len=1, max_len=40)


def corpus(kb: KnowledgeBaseStore) -> list[list[str]]:
    """One token list per chunk, as the text embedder sees the chunk (heading and text)."""
    return [words for _, heading, text in kb.chunk_texts() if (words := tokens(indexed_text(heading, text)))]


def check_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise LoupeError(f"word2vec architecture must be one of {', '.join(ARCHITECTURES)}, not {architecture!r}")
    return architecture


def train(sentences: Sequence[list[str]], architecture: str = "skipgram", on_progress: Progress | None = None):
    """word2vec on `sentences`; returns its KeyedVectors. One worker and a fixed seed: the same text always
    gives the same vectors (and the machine's cores stay free for questions)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    check_architecture(architecture)
    words = sum(len(s) for s in sentences)
    if words < MIN_WORDS:
        raise LoupeError(f"the knowledge base holds {words} words: word vectors need at least {MIN_WORDS}")
    epochs = EPOCHS_SMALL if words < SMALL_CORPUS_WORDS else EPOCHS_LARGE

    class Report(CallbackAny2Vec):
        def __init__(self) -> None:
            self.done = 0

        def on_epoch_end(self, model) -> None:
            self.done += 1
            if on_progress:
                on_progress(self.done / epochs)

    model = Word2Vec(sentences, vector_size=VECTOR_SIZE, window=WINDOW, min_count=MIN_COUNT,
                     sg=1 if architecture == "skipgram" else 0, epochs=epochs, seed=SEED, workers=1,
                     callbacks=[Report()])
    if len(model.wv) == 0:
        raise LoupeError(f"no word occurs {MIN_COUNT} times in the knowledge base: word vectors need repeats")
    return model.wv


def vectors_path(kb: KnowledgeBaseStore, architecture: str, generation: int) -> Path:
    return cache_file(kb, f"word2vec-{check_architecture(architecture)}-g{generation}.bin")


def cached(kb: KnowledgeBaseStore, architecture: str):
    """The word vectors of the knowledge base as it is now, if they were trained; else None."""
    from gensim.models import KeyedVectors

    path = vectors_path(kb, architecture, kb.generation)
    return KeyedVectors.load_word2vec_format(str(path), binary=True) if path.exists() else None


def load_or_train(kb: KnowledgeBaseStore, architecture: str = "skipgram", on_progress: Progress | None = None):
    """The cached word vectors for the store's current generation, trained (and cached) when missing."""
    generation = kb.generation
    vectors = cached(kb, architecture)
    if vectors is not None:
        return vectors
    vectors = train(corpus(kb), architecture, on_progress)
    path = vectors_path(kb, architecture, generation)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    vectors.save_word2vec_format(str(partial), binary=True)
    os.replace(partial, path)  # a reader never loads half a file
    _remove_older(path.parent, architecture, generation)
    logger.info("%s: %s word vectors of %d words cached", kb.folder.name, architecture, len(vectors))
    return vectors


def _remove_older(folder: Path, architecture: str, generation: int) -> None:
    for path in folder.glob("word2vec-*.bin"):
        match = _CACHE_NAME.fullmatch(path.name)
        if match and match.group(1) == architecture and int(match.group(2)) < generation:
            path.unlink(missing_ok=True)


def known(vectors, word: str) -> str:
    """The word as the vocabulary holds it (lower-cased), or OutOfVocabulary naming the closest spellings."""
    key = " ".join(tokens(word)) or word.strip().lower()
    if key in vectors.key_to_index:
        return key
    close = difflib.get_close_matches(key, vectors.index_to_key, n=5, cutoff=0.7)
    hint = f"; closest known spellings: {', '.join(close)}" if close else "; no known word is spelt like it"
    raise OutOfVocabulary(f"'{word.strip()}' is not in the word vectors' vocabulary (words seen at least "
                          f"{MIN_COUNT} times in this knowledge base){hint}")


def neighbours(vectors, word: str, k: int = 10) -> list[WordScore]:
    return [WordScore(w, round(float(s), 4)) for w, s in vectors.most_similar(known(vectors, word), topn=int(k))]


def analogy(vectors, a: str, b: str, c: str, k: int = 10) -> list[WordScore]:
    """Words nearest a - b + c ("king" - "man" + "woman"), the three themselves left out (as gensim does)."""
    a, b, c = (known(vectors, w) for w in (a, b, c))
    return [WordScore(w, round(float(s), 4))
            for w, s in vectors.most_similar(positive=[a, c], negative=[b], topn=int(k))]


def intrinsic(vectors, reference: Callable[[list[str]], np.ndarray] | None = None,
              folder: Path | None = None) -> list[dict]:
    """WordSim-353, SimLex-999 (Spearman) and the Google analogies (accuracy) of the word vectors, on the pairs
    and questions whose words they know; with `reference` (words -> unit vectors, e.g. the text embedder), the
    same figures for it on the same items and on the whole set. A small corpus knows few of the words."""
    folder = folder or gensim_test_data()
    rows = []
    reference_words: dict[str, np.ndarray] = {}

    def of_reference(words: set[str]) -> dict[str, np.ndarray]:
        missing = sorted(words - reference_words.keys())
        if missing and reference is not None:
            reference_words.update(zip(missing, reference(missing)))
        return reference_words

    for name, file in SIMILARITY_SETS.items():
        pairs = read_pairs(folder / file)
        covered = [p for p in pairs if p.first in vectors.key_to_index and p.second in vectors.key_to_index]
        row = {"set": name, "measure": "Spearman", "covered": len(covered), "total": len(pairs),
               "word2vec": _spearman(covered, _unit(vectors, {w for p in covered for w in (p.first, p.second)}))}
        if reference is not None:
            all_words = of_reference({w for p in pairs for w in (p.first, p.second)})
            row |= {"reference_covered": _spearman(covered, all_words), "reference_all": _spearman(pairs, all_words)}
        rows.append(row)
    questions = read_analogies(folder / ANALOGY_FILE)
    covered_questions = [q for q in questions if all(w in vectors.key_to_index for w in q)]
    row = {"set": "google-analogies", "measure": "accuracy", "covered": len(covered_questions),
           "total": len(questions),
           "word2vec": _accuracy(covered_questions, _unit(vectors, {w for q in covered_questions for w in q}))}
    if reference is not None:
        all_words = of_reference({w for q in questions for w in q})
        row |= {"reference_covered": _accuracy(covered_questions, all_words),
                "reference_all": _accuracy(questions, all_words)}
    rows.append(row)
    return rows


def _unit(vectors, words: set[str]) -> dict[str, np.ndarray]:
    return {w: vectors.get_vector(w, norm=True) for w in words}


def _spearman(pairs: list, words: dict[str, np.ndarray]) -> float | None:
    return round(similarity_spearman(pairs, words), 4) if len(pairs) >= 3 else None  # too few to rank


def _accuracy(questions: list, words: dict[str, np.ndarray]) -> float | None:
    return round(analogy_accuracy(questions, words), 4) if questions else None
