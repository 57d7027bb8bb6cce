"""Image tags kept per image and computed when images are embedded; the label list kept WITH the knowledge base on
both backends (a real folder store, a real PostgreSQL with pgvector); a search naming a tag finds the image. The
tiny random CLIP of the tests (conftest) checks the plumbing, not the tags' quality."""

from __future__ import annotations

import pytest

from ingest.pipeline import Ingestor
from rag.components import Models
from rag.explore import image_tags
from service import LoupeService
from tests.builders import png_bytes, sample_image
from tests.conftest import make_settings
from tests.threads import wait_until

PICTURES = ("astronaut", "chelsea", "coffee")
LABELS = ["cat", "cup of coffee", "astronaut", "rocket", "teapot"]


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in PICTURES:
        (folder / f"{name}.png").write_bytes(png_bytes(sample_image(name)))
    return folder


def expected_tags(embedder, data: bytes, labels: list[str]) -> list[str]:
    """The labels nearest the image by the cosine of the CLIP vectors, computed here from scratch."""
    label_vectors = embedder.embed_texts([image_tags.PROMPT.format(label) for label in labels])
    cosines = dict(zip(labels, label_vectors @ embedder.embed_images([data])[0]))
    return sorted(cosines, key=cosines.get, reverse=True)[:image_tags.TAGS_PER_IMAGE]


def test_new_images_are_tagged_and_earlier_tags_kept(models, pictures):
    kb = models.open_store()
    ingest = Ingestor(kb, models.settings, models.text_embedder, models.image_embedder)
    ingest.ingest([pictures / "coffee.png"])
    first = image_tags.tag_images(kb, models.image_embedder, LABELS)
    assert image_tags.cached_tags(kb, models.image_embedder, LABELS) == first  # complete for the store as it is

    ingest.ingest([pictures / "astronaut.png", pictures / "chelsea.png"])
    assert image_tags.cached_tags(kb, models.image_embedder, LABELS) is None  # the store changed: two untagged
    assert image_tags.saved_tags(kb, models.image_embedder, LABELS) == (first, False)  # the earlier ones meanwhile
    steps: list[float] = []
    tags = image_tags.tag_images(kb, models.image_embedder, LABELS, steps.append)
    assert steps and steps[-1] == 1.0
    images = {image.file: image for image in image_tags.all_images(kb)}
    assert set(tags) == {image.id for image in images.values()}
    assert {i: tags[i] for i in first} == first
    for name, image in images.items():
        assert [t.label for t in tags[image.id]] == expected_tags(models.image_embedder,
                                                                  (pictures / name).read_bytes(), LABELS)

    kb.delete(images["coffee.png"].document_id)
    assert set(image_tags.tag_images(kb, models.image_embedder, LABELS)) == {
        images["astronaut.png"].id, images["chelsea.png"].id}  # a deleted image's tags are forgotten


def test_an_ingest_through_the_service_returns_with_its_images_tagged(models, pictures):
    """Every surface (browser, REST, Gradio API) ingests through LoupeService.ingest (webapi.py's /api/ingest
    calls it): when it returns, the images have their tags, and word vectors a user trained follow the change."""
    service = LoupeService(models.settings, models)
    try:
        rows = service.ingest(None, [("coffee.png", pictures / "coffee.png")])
        assert [row.status for row in rows] == ["added"]
        store = service.kb(None)
        labels = image_tags.label_list(models.settings.image_labels, store)
        tags = image_tags.cached_tags(store, models.image_embedder, labels)
        assert tags is not None and len(tags) == 1  # tagged by the ingest itself, before any view asked
        assert service.explore.tags_of(None) == tags
    finally:
        service.close()


def test_waiting_images_get_their_tags_when_they_get_their_vectors(models_without_clip, models, pictures):
    settings = models.settings
    without = LoupeService(settings, models_without_clip)
    try:
        assert [row.status for row in without.ingest(None, [("chelsea.png", pictures / "chelsea.png")])] == ["added"]
        assert without.explore.tags_of(None) == {}  # no CLIP: the image waits, untagged
    finally:
        without.close()
    service = LoupeService(settings, models)
    try:
        store = service.kb(None)
        labels = image_tags.label_list(settings.image_labels, store)
        assert image_tags.saved_tags(store, models.image_embedder, labels)[0] == {}
        assert service.uploads.embed_waiting_images(None) == 1
        tags = image_tags.cached_tags(store, models.image_embedder, labels)
        assert tags is not None and [len(t) for t in tags.values()] == [image_tags.TAGS_PER_IMAGE]
    finally:
        service.close()


def test_a_search_naming_a_tag_finds_the_images_with_it(models, pictures):
    service = LoupeService(models.settings, models)
    try:
        service.ingest(None, [(f"{name}.png", pictures / f"{name}.png") for name in PICTURES])
        service.explore.set_labels(None, ", ".join(LABELS))
        store = service.kb(None)
        tags = image_tags.tag_images(store, models.image_embedder,
                                     image_tags.label_list(models.settings.image_labels, store))
        names = {image.id: image.file for image in image_tags.all_images(store)}
        for image_id, found in tags.items():
            label = found[0].label
            carrying = {names[i] for i, other in tags.items() if label in [t.label for t in other]}
            results = service.search_images(None, f"a photo with a {label.upper()}", k=len(carrying))
            assert {r.file for r in results} == carrying, label  # the tagged images first, whatever CLIP ranks
            assert names[image_id] in carrying
        assert image_tags.tag_matches(tags, "category") == {}  # whole words only
    finally:
        service.close()


def test_the_labels_live_in_the_postgresql_knowledge_base(pg_store_url, text_embedder, image_embedder, pictures,
                                                          tmp_path):
    """Two app servers (each its own local work folder) share one knowledge base in PostgreSQL: labels set on one
    are the other's labels, and the other re-tags its images with them."""
    servers = []
    for name in ("one", "two"):
        settings = make_settings(pg_store_url, cache_dir=tmp_path / name)
        servers.append(LoupeService(settings, Models(settings, text_embedder, image_embedder, "")))
    one, two = servers
    try:
        assert [row.status for row in one.ingest(None, [("coffee.png", pictures / "coffee.png")])] == ["added"]
        assert two.explore.labels(None) == []
        job = one.explore.set_labels(None, "espresso; latte art, teapot")
        assert two.explore.labels(None) == ["espresso", "latte art", "teapot"]
        assert not list(one.kb(None).folder.rglob("labels.json"))  # in the database, not a per-machine file

        wait_until(lambda: job.done, "server one re-tagged")
        tagging = two.explore.retag(None)
        wait_until(lambda: tagging.done, "server two re-tagged")
        store = two.kb(None)
        labels = image_tags.label_list(two.settings.image_labels, store)
        assert labels[-3:] == ["espresso", "latte art", "teapot"]
        assert not tagging.error and image_tags.cached_tags(store, image_embedder, labels) == tagging.result
        (found,) = tagging.result.values()
        assert [t.label for t in found] == expected_tags(image_embedder, (pictures / "coffee.png").read_bytes(), labels)
    finally:
        for server in servers:
            server.close()
