"""The similarity playground with the real MiniLM and word2vec on real paragraphs; zero-shot image tags with the
tiny random CLIP of the tests (conftest): its tags mean nothing, so the tests check the plumbing (each score is the
cosine of the stored image vector with the label's, the cache, re-tagging, search), not the tags' quality."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.pipeline import Ingestor
from rag.errors import LoupeError
from rag.explore import image_tags
from rag.explore.figures import heatmap_figure
from rag.explore.similarity import check_texts, cosine_matrix, polysemy_note, shared_words, word_vector_matrix
from rag.explore.word_vectors import tokens, train
from tests.builders import png_bytes, sample_image
from tests.rag.explore_kb import disflqa_paragraphs

BANKS = ["I sat on the river bank and watched the water flow.",
         "The muddy shore of the river was covered in reeds.",
         "I opened a savings account at the bank."]


@pytest.fixture(scope="module")
def vectors():
    return train([tokens(p) for p in disflqa_paragraphs(300)], "skipgram")


def test_contextual_cosines_follow_meaning(text_embedder):
    matrix = cosine_matrix(text_embedder, BANKS)
    assert matrix.shape == (3, 3) and np.allclose(matrix, matrix.T, atol=1e-5)
    assert np.allclose(np.diag(matrix), 1.0, atol=1e-4)
    # the river bank is nearer the river shore (no shared word but "river") than the savings bank
    assert matrix[0, 1] > matrix[0, 2]
    note = polysemy_note(BANKS[::2], cosine_matrix(text_embedder, BANKS[::2]))
    assert note.startswith("Every text uses 'bank'") and "cosine 1.00 between its uses" in note
    assert shared_words(BANKS[::2]) == ["bank"]  # "i" is a function word


def test_word_vectors_compare_texts_by_their_words(vectors):
    same = word_vector_matrix(vectors, ["The oxygen in the air", "the air, the OXYGEN in"])
    assert same.matrix[0, 1] == pytest.approx(1.0, abs=1e-5)  # the same words in another order: no context
    odd = word_vector_matrix(vectors, ["oxygen in the air", "qqqq zzzz"])
    assert odd.unknown == [[], ["qqqq", "zzzz"]]
    assert odd.matrix[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(odd.matrix[0, 1]) and np.isnan(odd.matrix[1, 1])  # no known word: no cosine, not even 1 or 0
    assert "n/a" in heatmap_figure(odd.matrix, ["oxygen in the air", "qqqq zzzz"], "t").data[0].text[1]


def test_two_to_twelve_texts():
    assert check_texts(["a", "  ", "b"]) == ["a", "b"]
    with pytest.raises(LoupeError, match="between 2 and 12 texts"):
        check_texts(["only one"])
    with pytest.raises(LoupeError, match="not 13"):
        check_texts([f"text {i}" for i in range(13)])


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        (folder / f"{name}.png").write_bytes(png_bytes(sample_image(name)))
    return folder


def test_tags_are_the_labels_nearest_each_image(models, pictures):
    kb = models.open_store()
    assert not Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest([pictures]).failed
    labels = ["cat", "cup of coffee", "astronaut", "rocket"]
    tags = image_tags.refresh_tags(kb, models.image_embedder, labels)
    images = {i.file: i for i in image_tags.all_images(kb)}
    assert set(tags) == {i.id for i in images.values()}
    label_vectors = models.image_embedder.embed_texts([image_tags.PROMPT.format(label) for label in labels])
    for name, image in images.items():
        image_vector = models.image_embedder.embed_images([(pictures / name).read_bytes()])[0]
        cosines = dict(zip(labels, label_vectors @ image_vector))
        expected = sorted(cosines, key=cosines.get, reverse=True)[:image_tags.TAGS_PER_IMAGE]
        assert [t.label for t in tags[image.id]] == expected
        assert [t.score for t in tags[image.id]] == pytest.approx([cosines[label] for label in expected], abs=1e-3)

    tagged = image_tags.tagged_images(kb, tags)
    label = tags[images["chelsea.png"].id][0].label
    found = image_tags.search_tags(tagged, label.upper()[:4])
    assert images["chelsea.png"].id in [t.image.id for t in found]
    assert image_tags.search_tags(tagged, "no such tag") == []


def test_tags_are_cached_until_the_labels_or_the_store_change(models, pictures):
    kb = models.open_store()
    Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest([pictures / "coffee.png"])
    labels = image_tags.label_list("photo, diagram", kb)
    assert labels == ["photo", "diagram"]
    first = image_tags.refresh_tags(kb, models.image_embedder, labels)
    assert image_tags.cached_tags(kb, models.image_embedder, labels) == first

    image_tags.set_own_labels(kb, image_tags.parse_labels("espresso;\n Photo, latte art"))
    labels = image_tags.label_list("photo, diagram", kb)
    assert labels == ["photo", "diagram", "espresso", "latte art"]  # "Photo" is the default's "photo" again
    assert image_tags.cached_tags(kb, models.image_embedder, labels) is None
    retagged = image_tags.refresh_tags(kb, models.image_embedder, labels)
    assert {t.label for ts in retagged.values() for t in ts} <= set(labels)

    Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest([pictures / "chelsea.png"])
    assert image_tags.cached_tags(kb, models.image_embedder, labels) is None  # a new generation
    assert len(image_tags.refresh_tags(kb, models.image_embedder, labels)) == 2


def test_an_image_stored_without_clip_has_no_tags_until_it_has_a_vector(models_without_clip, models, pictures):
    kb = models_without_clip.open_store()
    Ingestor(kb, models_without_clip.settings, models_without_clip.text_embedder, None).ingest([pictures])
    kb.close()
    kb = models.open_store()  # the same folder, now with CLIP loaded: the images still wait for their vectors
    assert image_tags.refresh_tags(kb, models.image_embedder, ["cat"]) == {}
    assert [t.tags for t in image_tags.tagged_images(kb, {})] == [[], [], []]
    assert image_tags.search_tags(image_tags.tagged_images(kb, {}), "") == []


def test_labels_are_checked():
    assert image_tags.parse_labels(" cat ,, Cat;\n\ndog ") == ["cat", "dog"]
    with pytest.raises(LoupeError, match="longer than 60 characters"):
        image_tags.parse_labels("x" * 61)
