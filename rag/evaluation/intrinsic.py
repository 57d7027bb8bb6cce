"""Intrinsic evaluation of a text embedder on the standard word sets that gensim ships in its package
(gensim/test/test_data/): WordSim-353 and SimLex-999 (Spearman correlation of the embedder's cosines with the
human ratings) and the Google analogies (questions-words.txt: accuracy).

Every word is embedded alone, as a passage. A sentence embedder has no vocabulary of its own, so an analogy
a : b :: c : ? is answered by vector arithmetic (b - a + c, normalised) over a closed vocabulary: every word that
occurs in the analogy file (about 900), less a, b and c themselves, as gensim's own evaluation excludes them.
That is an easier search than word2vec's usual 30,000 words: the figure compares embedders with each other, not
with published word-vector results. Words are compared lower-cased (gensim's default).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from rag.embedder import Embedder
from rag.errors import NotFound

SIMILARITY_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ANALOGY_FILE = "questions-words.txt"


def gensim_test_data() -> Path:
    """gensim's test_data folder, found without importing gensim (which loads scipy's whole stack)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the intrinsic sets come with gensim: pip install gensim (see requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    rating: float


def read_pairs(path: Path) -> list[Pair]:
    """Word pairs with their human rating: tab-separated, `#` comment lines at the top."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            first, second, rating = line.split("\t")[:3]
            pairs.append(Pair(first.lower(), second.lower(), float(rating)))
    return pairs


def read_analogies(path: Path) -> list[tuple[str, str, str, str]]:
    """The analogy questions a b c d (a is to b as c is to d); `: section` lines are dropped."""
    return [tuple(line.lower().split()) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith(":")]


def similarity_spearman(pairs: list[Pair], vectors: dict[str, np.ndarray]) -> float:
    cosines = [float(vectors[p.first] @ vectors[p.second]) for p in pairs]
    return float(spearmanr(cosines, [p.rating for p in pairs]).statistic)


def analogy_accuracy(questions: list[tuple[str, str, str, str]], vectors: dict[str, np.ndarray],
                     chunk: int = 2048) -> float:
    """Share of questions whose nearest vocabulary word to b - a + c (a, b, c excluded) is d."""
    vocabulary = sorted({w for q in questions for w in q})
    index = {w: i for i, w in enumerate(vocabulary)}
    matrix = np.stack([vectors[w] for w in vocabulary])
    ids = np.array([[index[w] for w in q] for q in questions])
    correct = 0
    for start in range(0, len(ids), chunk):  # bounded memory: chunk x vocabulary scores at a time
        part = ids[start:start + chunk]
        targets = matrix[part[:, 1]] - matrix[part[:, 0]] + matrix[part[:, 2]]
        scores = targets @ matrix.T  # ranking only: no need to normalise the targets
        rows = np.arange(len(part))[:, None]
        scores[rows, part[:, :3]] = -np.inf
        correct += int((scores.argmax(axis=1) == part[:, 3]).sum())
    return correct / len(ids)


def evaluate_intrinsic(embedder: Embedder, folder: Path | None = None, batch_size: int = 0) -> dict:
    """{"wordsim353": spearman, "simlex999": spearman, "analogies": accuracy, ...} for `embedder`."""
    folder = folder or gensim_test_data()
    pair_sets = {name: read_pairs(folder / file) for name, file in SIMILARITY_SETS.items()}
    questions = read_analogies(folder / ANALOGY_FILE)
    words = sorted({w for pairs in pair_sets.values() for p in pairs for w in (p.first, p.second)}
                   | {w for q in questions for w in q})
    start = time.perf_counter()
    vectors = dict(zip(words, embedder.embed(words, batch_size)))
    seconds = time.perf_counter() - start
    result = {name: round(similarity_spearman(pairs, vectors), 4) for name, pairs in pair_sets.items()}
    result["analogies"] = round(analogy_accuracy(questions, vectors), 4)
    return result | {"model": embedder.model_id.name, "pairs": {n: len(p) for n, p in pair_sets.items()},
                     "analogy_questions": len(questions), "words_embedded": len(words),
                     "words_per_second": round(len(words) / seconds, 1)}
