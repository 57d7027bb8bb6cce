"""The similarity playground: cosine matrices of a few texts, contextual beside context-free.

Contextual: the current text embedder (rag.embedder) reads each text whole, so "bank" in "river bank" and in
"savings bank" pulls its sentence in different directions. Context-free: word2vec gives each word one vector
whatever surrounds it; a text is the mean of its words' vectors. A word the texts share (the polysemy example)
is named, with its one word2vec vector, so the contrast reads in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.embedder import Embedder
from rag.errors import LoupeError
from rag.explore.word_vectors import tokens

MAX_TEXTS = 12  # a heatmap past this is unreadable
MIN_TEXTS = 2


def check_texts(texts: Sequence[str]) -> list[str]:
    texts = [t.strip() for t in texts if t and t.strip()]
    if not MIN_TEXTS <= len(texts) <= MAX_TEXTS:
        raise LoupeError(f"give between {MIN_TEXTS} and {MAX_TEXTS} texts to compare (one a line), not {len(texts)}")
    return texts


def cosine_matrix(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Cosines of the texts' embeddings (the embedder's rows are unit length)."""
    vectors = embedder.embed(check_texts(texts))
    return np.clip(vectors @ vectors.T, -1.0, 1.0)


@dataclass(frozen=True)
class WordVectorMatrix:
    matrix: np.ndarray
    unknown: list[list[str]]  # per text, the words the word vectors don't know (left out of its mean)


def word_vector_matrix(vectors, texts: Sequence[str]) -> WordVectorMatrix:
    """Cosines of the texts as the means of their words' unit word2vec vectors; a text with no known word has no
    vector, so its row and column are NaN (shown as "n/a"), not a cosine of 0, not even with itself."""
    texts = check_texts(texts)
    rows, unknown = [], []
    for text in texts:
        words = tokens(text)
        known = [w for w in words if w in vectors.key_to_index]
        unknown.append(sorted(set(words) - set(known)))
        mean = (np.mean([vectors.get_vector(w, norm=True) for w in known], axis=0) if known
                else np.zeros(vectors.vector_size, np.float32))
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    matrix = np.stack(rows)
    cosines = np.clip(matrix @ matrix.T, -1.0, 1.0)
    without = [i for i, text in enumerate(texts) if len(unknown[i]) == len(set(tokens(text)))]
    cosines[without, :] = np.nan
    cosines[:, without] = np.nan
    return WordVectorMatrix(cosines, unknown)


def shared_words(texts: Sequence[str]) -> list[str]:
    """Words every text uses (the "bank" of "river bank" and "savings bank"), in the first text's order; function
    words ("the", "at") left out: their sense doesn't change."""
    from gensim.parsing.preprocessing import STOPWORDS

    common = set.intersection(*(set(tokens(t)) for t in texts)) - STOPWORDS if texts else set()
    return [w for w in dict.fromkeys(tokens(texts[0])) if w in common]


def polysemy_note(texts: Sequence[str], contextual: np.ndarray, vectors=None) -> str:
    """One line contrasting a shared word's single word2vec vector with the texts' contextual embeddings."""
    shared = shared_words(texts)
    if not shared:
        return ""
    word = shared[-1]  # "river bank" / "savings bank": the head word comes last
    off_diagonal = contextual[~np.eye(len(contextual), dtype=bool)]
    spread = f"{off_diagonal.min():.2f} to {off_diagonal.max():.2f}"
    if vectors is not None and word in vectors.key_to_index:
        context_free = f"word2vec gives '{word}' one vector in every text (cosine 1.00 between its uses)"
    else:
        context_free = f"a word vector would give '{word}' one vector in every text (cosine 1.00 between its uses)"
    return f"Every text uses '{word}': {context_free}; the text embedder's cosines between the texts run {spread}."
