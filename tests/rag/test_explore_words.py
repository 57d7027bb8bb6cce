"""word2vec on a knowledge base's own text: training on real paragraphs, the cache keyed by the store's generation,
neighbours and analogies checked against the vectors themselves, out-of-vocabulary words, intrinsic scores."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import LoupeError
from rag.evaluation.intrinsic import gensim_test_data
from rag.explore import word_vectors
from rag.explore.word_vectors import OutOfVocabulary, analogy, known, load_or_train, neighbours, tokens, train
from rag.store import KnowledgeBase
from tests.rag.explore_kb import add_text_document, disflqa_paragraphs, fill


@pytest.fixture(scope="module")
def sentences() -> list[list[str]]:
    return [tokens(p) for p in disflqa_paragraphs(300)]


@pytest.fixture(scope="module")
def vectors(sentences):
    return train(sentences, "skipgram")


def test_training_reports_progress_and_is_repeatable(sentences, vectors):
    seen: list[float] = []
    again = train(sentences, "skipgram", seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == word_vectors.EPOCHS_SMALL
    assert again.index_to_key == vectors.index_to_key
    assert np.array_equal(again.vectors, vectors.vectors)  # one worker, one seed: the same vectors
    cbow = train(sentences, "cbow")
    assert cbow.index_to_key == vectors.index_to_key and not np.allclose(cbow.vectors, vectors.vectors)
    assert "oxygen" in vectors.key_to_index and len(vectors) > 2000


def unit(vectors, word: str) -> np.ndarray:
    return vectors.get_vector(word, norm=True)


def test_neighbours_are_the_words_of_highest_cosine(vectors):
    found = neighbours(vectors, "Oxygen", 5)  # any case: the vocabulary is lower-cased
    assert len(found) == 5 and "oxygen" not in [w.word for w in found]
    assert [w.score for w in found] == sorted((w.score for w in found), reverse=True)
    for w in found:
        assert w.score == pytest.approx(float(unit(vectors, "oxygen") @ unit(vectors, w.word)), abs=1e-3)
    every = vectors.get_normed_vectors() @ unit(vectors, "oxygen")
    every[vectors.key_to_index["oxygen"]] = -np.inf
    assert found[0].word == vectors.index_to_key[int(every.argmax())]


def test_an_analogy_is_the_word_nearest_a_minus_b_plus_c(vectors):
    found = analogy(vectors, "french", "france", "germany", 3)
    assert {w.word for w in found}.isdisjoint({"french", "france", "germany"})
    target = unit(vectors, "french") - unit(vectors, "france") + unit(vectors, "germany")
    every = vectors.get_normed_vectors() @ (target / np.linalg.norm(target))
    for word in ("french", "france", "germany"):
        every[vectors.key_to_index[word]] = -np.inf
    assert found[0].word == vectors.index_to_key[int(every.argmax())]
    assert found[0].score == pytest.approx(float(every.max()), abs=1e-3)


def test_an_unknown_word_names_the_closest_known_spellings(vectors):
    with pytest.raises(OutOfVocabulary) as raised:
        known(vectors, "oxygne")
    message = str(raised.value)
    assert "'oxygne' is not in the word vectors' vocabulary" in message and "oxygen" in message
    with pytest.raises(OutOfVocabulary, match="no known word is spelt like it"):
        analogy(vectors, "oxygen", "qqqqzzzz", "water")


def test_too_little_text_or_another_architecture_is_refused():
    with pytest.raises(LoupeError, match="needs at least|need at least"):
        train([["just", "four", "words", "here"]])
    with pytest.raises(LoupeError, match="architecture must be one of"):
        train([["a"] * 50], "glove")


def test_the_cache_follows_the_knowledge_base(tmp_path, text_embedder):
    kb = KnowledgeBase(tmp_path / "kb", text_embedder.model_id)
    paragraphs = disflqa_paragraphs(40)
    fill(kb, text_embedder, paragraphs[:30], documents=2)
    first = load_or_train(kb, "skipgram")
    path = word_vectors.vectors_path(kb, "skipgram", kb.generation)
    assert path.exists() and path.parent == kb.folder / "explore"
    stamp = path.stat().st_mtime_ns
    again = load_or_train(kb, "skipgram", lambda done: pytest.fail("trained again for an unchanged store"))
    assert path.stat().st_mtime_ns == stamp and again.index_to_key == first.index_to_key

    add_text_document(kb, text_embedder, "more.txt", paragraphs[30:] + ["zeppelin zeppelin zeppelin airship"])
    progress: list[float] = []
    changed = load_or_train(kb, "skipgram", progress.append)
    assert progress and progress[-1] == 1.0  # trained afresh for the new generation
    assert "zeppelin" in changed.key_to_index and "zeppelin" not in first.key_to_index
    assert not path.exists() and word_vectors.vectors_path(kb, "skipgram", kb.generation).exists()
    kb.close()


def test_intrinsic_scores_on_the_items_the_vectors_know(vectors, text_embedder, tmp_path):
    """gensim's real word sets, cut to the lines whose words these vectors know plus a few they don't (so the
    reference model's call stays small); the full sets are what the app and `explore words scores` use."""
    source = gensim_test_data()
    for name in ("wordsim353.tsv", "simlex999.txt"):
        lines = source.joinpath(name).read_text(encoding="utf-8").splitlines()
        rows = [line for line in lines if line and not line.startswith("#")]
        kept = [r for r in rows if all(w.lower() in vectors.key_to_index for w in r.split("\t")[:2])]
        unknown = [r for r in rows if r not in kept][:5]
        (tmp_path / name).write_text("\n".join(kept + unknown), encoding="utf-8")
    questions = [line for line in source.joinpath("questions-words.txt").read_text(encoding="utf-8").splitlines()
                 if not line.startswith(":")]
    kept = [q for q in questions if all(w.lower() in vectors.key_to_index for w in q.split())][:200]
    unknown = [q for q in questions if any(w.lower() not in vectors.key_to_index for w in q.split())][:5]
    (tmp_path / "questions-words.txt").write_text("\n".join(kept + unknown), encoding="utf-8")

    rows = word_vectors.intrinsic(vectors, lambda words: text_embedder.embed(words), tmp_path)
    assert [r["set"] for r in rows] == ["wordsim353", "simlex999", "google-analogies"]
    for row in rows:
        assert row["covered"] >= 3 and row["total"] == row["covered"] + 5
        for key in ("word2vec", "reference_covered", "reference_all"):
            assert -1.0 <= row[key] <= 1.0
    # Sentence-BERT, trained on a billion sentence pairs, beats 300 paragraphs of word2vec on word similarity
    assert rows[0]["reference_covered"] > rows[0]["word2vec"]
