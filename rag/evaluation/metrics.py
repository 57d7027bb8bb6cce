"""Ranking and answer metrics, as BEIR (pytrec_eval) and SQuAD define them.

Rankings are lists of document ids, best first; qrels map document id -> graded relevance (0 = judged
not relevant). Gains are linear in the grade (trec_eval's nDCG), and a query's ideal ranking sorts its
judged documents by grade.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence

Qrels = Mapping[str, int]


def dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg(max(qrels.get(doc, 0), 0) for doc in _unique(ranking)[:k]) / ideal


def recall_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    relevant = {doc for doc, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranking)[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    for rank, doc in enumerate(_unique(ranking)[:k], start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ranking_metrics(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Qrels], k: int = 10,
                    recall_at: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float]:
    """Means over the queries of `qrels` (a query with no ranking counts as an empty one)."""
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    names = [f"ndcg@{k}"] + [f"recall@{n}" for n in recall_at] + [f"mrr@{k}"]
    totals = dict.fromkeys(names, 0.0)
    for query, judged in qrels.items():
        ranking = rankings.get(query, [])
        totals[f"ndcg@{k}"] += ndcg_at_k(ranking, judged, k)
        for n in recall_at:
            totals[f"recall@{n}"] += recall_at_k(ranking, judged, n)
        totals[f"mrr@{k}"] += mrr_at_k(ranking, judged, k)
    return {name: value / len(qrels) for name, value in totals.items()}


def _unique(ranking: Sequence[str]) -> list[str]:
    """A document counts once, at its best rank (several of its chunks may be retrieved)."""
    return list(dict.fromkeys(ranking))


# --- answers (SQuAD's normalisation) ----------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def contains_answer(text: str, golds: Iterable[str]) -> bool:
    """Whether any gold answer appears in `text`, as whole words after normalisation."""
    haystack = f" {normalize_answer(text)} "
    return any(f" {gold} " in haystack for gold in (normalize_answer(g) for g in golds) if gold)
