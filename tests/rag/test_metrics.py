"""Ranking and answer metrics on tiny rankings whose values are worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest

from rag.evaluation.metrics import (
    contains_answer,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    ranking_metrics,
    recall_at_k,
)


def test_ndcg_binary_relevance():
    # ranks 1..3 = d3 (0), d1 (1), d2 (1)
    # DCG  = 0/log2(2) + 1/log2(3) + 1/log2(4) = 0.630930 + 0.5 = 1.130930
    # IDCG = 1/log2(2) + 1/log2(3)             = 1 + 0.630930 = 1.630930
    # nDCG = 1.130930 / 1.630930 = 0.693426
    qrels = {"d1": 1, "d2": 1}
    assert ndcg_at_k(["d3", "d1", "d2"], qrels, 10) == pytest.approx(0.693426, abs=1e-6)
    # at k=2 only d1 counts: DCG = 0.630930; IDCG@2 = 1.630930 -> 0.386853
    assert ndcg_at_k(["d3", "d1", "d2"], qrels, 2) == pytest.approx(0.386853, abs=1e-6)


def test_ndcg_graded_relevance_uses_linear_gains_and_the_ideal_order():
    # ranking a (1), b (2), c (0); d (3) is judged but not retrieved
    # DCG@3  = 1/1 + 2/log2(3) + 0          = 1 + 1.261860 = 2.261860
    # IDCG@3 = 3/1 + 2/log2(3) + 1/log2(4)  = 3 + 1.261860 + 0.5 = 4.761860
    # nDCG@3 = 0.474995
    qrels = {"a": 1, "b": 2, "c": 0, "d": 3}
    assert ndcg_at_k(["a", "b", "c"], qrels, 3) == pytest.approx(0.474995, abs=1e-6)


def test_ndcg_perfect_empty_and_unjudged():
    assert ndcg_at_k(["d1"], {"d1": 1}, 10) == 1.0
    assert ndcg_at_k([], {"d1": 1}, 10) == 0.0
    assert ndcg_at_k(["d1"], {"d1": 0}, 10) == 0.0  # nothing relevant: 0, not a division by zero


def test_a_document_counts_once_at_its_best_rank():
    # two chunks of d1 retrieved: the ranking is d1, d2 -> perfect for qrels {d1, d2}
    assert ndcg_at_k(["d1", "d1", "d2"], {"d1": 1, "d2": 1}, 2) == pytest.approx(1.0)
    assert recall_at_k(["d1", "d1", "d2"], {"d1": 1, "d2": 1}, 2) == 1.0


def test_recall_at_k():
    qrels = {"d1": 1, "d2": 1, "d9": 0}
    ranking = ["d3", "d1", "d2"]
    assert recall_at_k(ranking, qrels, 1) == 0.0
    assert recall_at_k(ranking, qrels, 2) == 0.5  # d1 of {d1, d2}; d9 is judged not relevant
    assert recall_at_k(ranking, qrels, 3) == 1.0


def test_mrr_at_k():
    qrels = {"d2": 1, "d4": 1}
    assert mrr_at_k(["d1", "d2", "d4"], qrels, 10) == 0.5  # first relevant at rank 2
    assert mrr_at_k(["d1", "d2", "d4"], qrels, 1) == 0.0  # not within the cutoff
    assert mrr_at_k(["d1", "d3", "d5", "d4"], qrels, 10) == 0.25


def test_ranking_metrics_are_means_over_judged_queries():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    rankings = {
        "q1": ["d1", "d2"],  # rank 1: nDCG 1, MRR 1, R@1 1
        "q2": ["d1", "d2"],  # rank 2: nDCG 1/log2(3) = 0.630930, MRR 0.5, R@1 0, R@5 1
        # q3 not retrieved at all: zeros
    }
    metrics = ranking_metrics(rankings, qrels, k=10)
    assert set(metrics) == {"ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10"}
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)  # 0.543643
    assert metrics["mrr@10"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@5"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        ranking_metrics({}, {})


def test_answer_normalisation_follows_squad():
    assert normalize_answer("The  Normans, of NORMANDY!") == "normans of normandy"
    assert normalize_answer("Earth's atmosphere") == normalize_answer("Earth ' s atmosphere") == "earth s atmosphere"


def test_contains_answer_matches_whole_words_only():
    assert contains_answer("They were the Normans [1].", ["Normans"])
    assert contains_answer("in the 1990s.", ["xyz", "1990s"])
    assert not contains_answer("abnormans lived there", ["normans"])
    assert not contains_answer("anything", [])  # unanswerable: nothing to find
    assert not contains_answer("anything", [""])
