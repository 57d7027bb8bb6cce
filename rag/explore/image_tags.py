"""Zero-shot image tags with CLIP: an image's tags are the labels whose CLIP text vector is nearest its stored
CLIP image vector, each with that cosine.

The label list is the `image_labels` setting (a general default) plus the knowledge base's own labels, kept WITH
the knowledge base on either backend (rag.explore.kb_values: every app server sharing a PostgreSQL knowledge base
reads the same labels).

Tags are derived from stored vectors only, so they are kept per image in a cache beside the store (the local
folder), for one CLIP model and one label list: an image is tagged once, when it is embedded (after an ingest, or
after `embed-images` gives the images stored without CLIP weights their vectors: `tag_images`), and all of them
again when the label list or the model changes. An image stored without CLIP weights has no vector, and so no
tags, until then (WAITING_FOR_CLIP says so). The tiny random CLIP of the tests checks the plumbing; how well real
CLIP tags a user's pictures cannot be measured here (no weights ship).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from rag.errors import LoupeError
from rag.explore import cache_file
from rag.explore.kb_values import read_value, write_atomically, write_value
from rag.image_embedder import ImageEmbedder
from rag.records import ImageRecord
from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

TAGS_PER_IMAGE = 3
PROMPT = "a picture of {}"  # CLIP was trained on captions: a label alone matches less well than a caption
MAX_LABELS = 200
MAX_LABEL_CHARS = 60
LABELS_VALUE = "labels"  # the knowledge base's own labels, a JSON list (rag.explore.kb_values)
TAGS_FILE = "image-tags.json"
BATCH = 256  # images whose vectors are read (or re-embedded) at a time: the progress steps
_SEPARATORS = re.compile(r"[,\n;]+")
_WORD = re.compile(r"\w+")
# One tagging at a time per process: two would each save what they computed, the later one losing the other's.
_TAGGING = threading.Lock()
WAITING_FOR_CLIP = ("Image tags wait for CLIP weights: images keep no tags until they have CLIP vectors "
                    "(`python -m rag embed-images` once the weights are available tags them too).")


@dataclass(frozen=True)
class Tag:
    label: str
    score: float  # cosine of the image's CLIP vector with the label's


@dataclass(frozen=True)
class TaggedImage:
    image: ImageRecord
    tags: list[Tag]


def parse_labels(text: str) -> list[str]:
    """Labels from text separated by commas, semicolons or lines; blanks and repeats (any case) dropped."""
    labels: dict[str, str] = {}
    for raw in _SEPARATORS.split(text or ""):
        label = " ".join(raw.split())
        if not label:
            continue
        if len(label) > MAX_LABEL_CHARS:
            raise LoupeError(f"the label '{label[:20]}…' is longer than {MAX_LABEL_CHARS} characters")
        labels.setdefault(label.casefold(), label)
    if len(labels) > MAX_LABELS:
        raise LoupeError(f"{len(labels)} labels given; at most {MAX_LABELS}")
    return list(labels.values())


def own_labels(kb: KnowledgeBaseStore) -> list[str]:
    """The knowledge base's own labels (none until a user sets some), as every server sharing it sees them."""
    saved = read_value(kb, LABELS_VALUE)
    return parse_labels("\n".join(json.loads(saved))) if saved else []


def set_own_labels(kb: KnowledgeBaseStore, labels: list[str]) -> None:
    write_value(kb, LABELS_VALUE, json.dumps(labels))


def label_list(default_labels: str, kb: KnowledgeBaseStore) -> list[str]:
    """The default labels, then the knowledge base's own, each once."""
    return parse_labels("\n".join([*parse_labels(default_labels), *own_labels(kb)]))


def all_images(kb: KnowledgeBaseStore) -> list[ImageRecord]:
    return [image for document in kb.documents() if document.images for image in kb.images_on_pages(document.id)]


def tags_from_vectors(image_vectors: np.ndarray, label_vectors: np.ndarray, labels: list[str],
                      per_image: int = TAGS_PER_IMAGE) -> list[list[Tag]]:
    """Each image's best `per_image` labels with their cosines (the vectors are unit length)."""
    cosines = np.asarray(image_vectors, np.float32) @ np.asarray(label_vectors, np.float32).T
    best = np.argsort(-cosines, axis=1, kind="stable")[:, :per_image]
    return [[Tag(labels[j], round(float(row[j]), 4)) for j in order] for row, order in zip(cosines, best)]


def _cache_key(embedder: ImageEmbedder, labels: list[str]) -> dict:
    return {"model": embedder.model_id.name, "labels": labels}


def _load(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str]) -> tuple[dict[int, list[Tag]], int]:
    """(the saved tags for this model and these labels, the store generation they were complete at); ({}, -1)
    when none are saved for them."""
    path = cache_file(kb, TAGS_FILE)
    if not path.exists():
        return {}, -1
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s: unreadable image tags cache, tagging again", kb.folder.name, exc_info=True)
        return {}, -1
    if saved.get("key") != _cache_key(embedder, labels):
        return {}, -1
    tags = {int(image_id): [Tag(label, score) for label, score in found] for image_id, found in saved["tags"].items()}
    return tags, int(saved.get("generation", -1))


def _save(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str], tags: dict[int, list[Tag]],
          generation: int) -> None:
    saved = {"key": _cache_key(embedder, labels), "generation": generation,
             "tags": {str(i): [[t.label, t.score] for t in found] for i, found in tags.items()}}
    write_atomically(cache_file(kb, TAGS_FILE), json.dumps(saved))


def saved_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder,
               labels: list[str]) -> tuple[dict[int, list[Tag]], bool]:
    """(the tags saved for these labels by image id, whether they are complete for the store as it is now): the
    newest images may not have theirs yet (tag_images)."""
    tags, generation = _load(kb, embedder, labels)
    return tags, generation == kb.generation


def cached_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str]) -> dict[int, list[Tag]] | None:
    """The tags of every embedded image of the store as it is now with these labels; None when some are missing
    or stale (the store changed since they were saved)."""
    tags, current = saved_tags(kb, embedder, labels)
    return tags if current else None


def tag_images(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str],
               progress: Callable[[float], None] | None = None) -> dict[int, list[Tag]]:
    """Tag every embedded image that has no tags for these labels yet, forget the images that are gone, save, and
    return every image's tags. After an ingest only the new images are tagged; after a change of labels, all."""
    with _TAGGING:
        generation = kb.generation  # before listing: a write meanwhile leaves the saved tags stale, not wrong
        tags, _ = _load(kb, embedder, labels)
        embedded = [image for image in all_images(kb) if image.embedded]
        tags = {image.id: tags[image.id] for image in embedded if image.id in tags}
        waiting = [image for image in embedded if image.id not in tags] if labels else []
        if waiting:
            label_vectors = embedder.embed_texts([PROMPT.format(label) for label in labels])
            for done, batch in enumerate(_batches(waiting, BATCH), 1):
                vectors = kb.image_vectors([image.id for image in batch])  # deleted ones: absent
                if vectors:
                    tags.update(zip(vectors, tags_from_vectors(np.stack(list(vectors.values())), label_vectors,
                                                               labels)))
                if progress:
                    progress(min(1.0, done * BATCH / len(waiting)))
            logger.info("%s: %d images tagged from %d labels (%d tagged in all)", kb.folder.name, len(waiting),
                        len(labels), len(tags))
        _save(kb, embedder, labels, tags, generation)
    return tags


def tag_stored_images(kb: KnowledgeBaseStore, embedder: ImageEmbedder, default_labels: str) -> dict[int, list[Tag]]:
    """What follows an ingest, or `embed-images`, wherever it ran (app or command line): the images that have CLIP
    vectors now and no tags get theirs, from the default labels and the knowledge base's own."""
    return tag_images(kb, embedder, label_list(default_labels, kb))


def refresh_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str],
                 progress: Callable[[float], None] | None = None) -> dict[int, list[Tag]]:
    """The tags for the store as it is now: from the cache when it is current, else brought up to date."""
    tags = cached_tags(kb, embedder, labels)
    return tags if tags is not None else tag_images(kb, embedder, labels, progress)


def _batches(items: list[ImageRecord], size: int) -> Iterable[list[ImageRecord]]:
    return (items[start:start + size] for start in range(0, len(items), size))


def tagged_images(kb: KnowledgeBaseStore, tags: dict[int, list[Tag]]) -> list[TaggedImage]:
    """Every image of the store with its tags (none for an image without a CLIP vector)."""
    return [TaggedImage(image, tags.get(image.id, [])) for image in all_images(kb)]


def search_tags(images: list[TaggedImage], query: str) -> list[TaggedImage]:
    """Images with a tag containing `query` (any case), the best-scoring such tag first."""
    wanted = " ".join(query.split()).casefold()
    if not wanted:
        return [image for image in images if image.tags]

    def best(image: TaggedImage) -> float:
        return max((t.score for t in image.tags if wanted in t.label.casefold()), default=-np.inf)

    return sorted((image for image in images if best(image) > -np.inf), key=lambda image: -best(image))


def tag_matches(tags: dict[int, list[Tag]], query: str) -> dict[int, float]:
    """{image id: score} of the images with a tag the query names (the tag's words, whole, in the query: "cat"
    finds a "cat" image for "a cat on a sofa", not for "category"), scored by their best such tag."""
    wanted = _words(query)
    found: dict[int, float] = {}
    for image_id, image_tags in tags.items():
        scores = [t.score for t in image_tags if _words(t.label) in wanted]
        if scores:
            found[image_id] = max(scores)
    return found


def _words(text: str) -> str:
    """The text's words in lower case, each with a space either side, so `in` matches whole words only."""
    return " " + " ".join(_WORD.findall(text.casefold())) + " "
