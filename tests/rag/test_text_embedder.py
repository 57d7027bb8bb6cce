"""The text embedder: vectors in the callers' order whatever the batching, and one batch in the model at a time
however many threads ask at once (concurrent torch calls fight over the cores)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rag.embedder import family_prefixes
from rag.text_embedder import TextEmbedder, model_prefixes

TEXTS = ["a cat", "a much longer sentence about dogs, boats and the open sea at night", "x",
         "The walrus operator := assigns a value inside an expression."] * 5


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder("all-MiniLM-L6-v2")


def test_vectors_come_back_in_the_callers_order_and_match_the_model(embedder):
    vectors = embedder.embed(TEXTS, batch_size=3)
    reference = np.asarray(embedder.model.encode(TEXTS, normalize_embeddings=True))
    assert vectors.shape == (len(TEXTS), embedder.dim)
    assert np.allclose(vectors, reference, atol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_concurrent_callers_never_run_the_model_at_the_same_time(embedder):
    inside, most = 0, 0
    guard = threading.Lock()

    def enter(_module, _args):
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)

    def leave(_module, _args, _output):
        nonlocal inside
        with guard:
            inside -= 1

    handles = [embedder.model.register_forward_pre_hook(enter), embedder.model.register_forward_hook(leave)]
    results: list[np.ndarray] = []
    try:
        threads = [threading.Thread(target=lambda: results.append(embedder.embed(TEXTS, batch_size=4)))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for handle in handles:
            handle.remove()
    assert len(results) == 6 and all(np.allclose(r, results[0], atol=1e-5) for r in results)
    assert most == 1


def test_queries_and_passages_get_the_prefixes_their_model_was_trained_with(embedder):
    assert (embedder.query_prefix, embedder.passage_prefix) == ("", "")  # MiniLM has none: both embed alike
    assert np.array_equal(embedder.embed(TEXTS[:2], query=True), embedder.embed(TEXTS[:2]))
    assert family_prefixes("intfloat/e5-small-v2") == ("query: ", "passage: ")
    assert family_prefixes("BAAI/bge-small-en-v1.5")[0].startswith("Represent this sentence")
    assert model_prefixes({"query": "search_query: ", "document": "search_document: "}, "nomic-embed-text") == (
        "search_query: ", "search_document: ")  # the model's own config wins over a name
    embedder.query_prefix, embedder.passage_prefix = "query: ", "passage: "
    try:
        asked, stored = embedder.embed(["a cat"], query=True), embedder.embed(["a cat"])
    finally:
        embedder.query_prefix, embedder.passage_prefix = "", ""
    expected = embedder.model.encode(["query: a cat", "passage: a cat"], normalize_embeddings=True)
    assert np.allclose(asked[0], expected[0], atol=1e-5) and np.allclose(stored[0], expected[1], atol=1e-5)
