"""Zero-shot image tags with CLIP: an image's tags are the labels whose CLIP text vector is nearest its stored
CLIP image vector, each with that cosine.

The label list is the `image_labels` setting (a general default) plus the knowledge base's own labels, kept with
the knowledge base. Tags are derived from stored vectors only, so they are cached under the store's generation,
the CLIP model and the labels, and recomputed when any of them changes. An image stored without CLIP weights has
no vector, and so no tags, until `python -m rag embed-images` gives it one. The tiny random CLIP of the tests
checks the plumbing; how well real CLIP tags a user's pictures cannot be measured here (no weights ship).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from rag.errors import LoupeError
from rag.explore import cache_file
from rag.image_embedder import ImageEmbedder
from rag.records import ImageRecord
from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

TAGS_PER_IMAGE = 3
PROMPT = "a picture of {}"  # CLIP was trained on captions: a label alone matches less well than a caption
MAX_LABELS = 200
MAX_LABEL_CHARS = 60
LABELS_FILE = "labels.json"
TAGS_FILE = "image-tags.json"
_SEPARATORS = re.compile(r"[,\n;]+")
WAITING_FOR_CLIP = ("Image tags wait for CLIP weights: images keep no tags until they have CLIP vectors "
                    "(`python -m rag embed-images` once the weights are available).")


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
    """The knowledge base's own labels (none until a user sets some)."""
    path = cache_file(kb, LABELS_FILE)
    return parse_labels("\n".join(json.loads(path.read_text(encoding="utf-8")))) if path.exists() else []


def set_own_labels(kb: KnowledgeBaseStore, labels: list[str]) -> None:
    _write_json(cache_file(kb, LABELS_FILE), labels)


def label_list(default_labels: str, kb: KnowledgeBaseStore) -> list[str]:
    """The default labels, then the knowledge base's own, each once."""
    return parse_labels("\n".join([*parse_labels(default_labels), *own_labels(kb)]))


def all_images(kb: KnowledgeBaseStore) -> list[ImageRecord]:
    return [image for document in kb.documents() for image in kb.images_on_pages(document.id)]


def compute_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str],
                 per_image: int = TAGS_PER_IMAGE) -> dict[int, list[Tag]]:
    """{image id: its best `per_image` tags} for every image that has a CLIP vector. The cosines come from the
    store's own image index: one search per label over all images."""
    embedded = sum(1 for image in all_images(kb) if image.embedded)
    if not embedded or not labels:
        return {}
    scores: dict[int, dict[str, float]] = {}
    for label, vector in zip(labels, embedder.embed_texts([PROMPT.format(label) for label in labels])):
        for image, score in kb.search_images(vector[None, :], embedded):
            scores.setdefault(image.id, {})[label] = score
    return {image_id: [Tag(label, round(float(score), 4)) for label, score in
                       sorted(by_label.items(), key=lambda item: -item[1])[:per_image]]
            for image_id, by_label in scores.items()}


def _cache_key(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str]) -> dict:
    return {"generation": kb.generation, "model": embedder.model_id.name, "labels": labels}


def cached_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str]) -> dict[int, list[Tag]] | None:
    """The tags saved for the store as it is now with these labels; None when they must be computed."""
    path = cache_file(kb, TAGS_FILE)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s: unreadable image tags cache, computing them again", kb.folder.name, exc_info=True)
        return None
    if saved.get("key") != _cache_key(kb, embedder, labels):
        return None
    return {int(image_id): [Tag(label, score) for label, score in tags] for image_id, tags in saved["tags"].items()}


def refresh_tags(kb: KnowledgeBaseStore, embedder: ImageEmbedder, labels: list[str]) -> dict[int, list[Tag]]:
    """The tags for the store as it is now: from the cache, else computed and saved."""
    tags = cached_tags(kb, embedder, labels)
    if tags is not None:
        return tags
    key = _cache_key(kb, embedder, labels)  # before computing: a write meanwhile makes the saved tags stale, not new
    tags = compute_tags(kb, embedder, labels)
    _write_json(cache_file(kb, TAGS_FILE),
                {"key": key, "tags": {str(i): [[t.label, t.score] for t in ts] for i, ts in tags.items()}})
    logger.info("%s: %d images tagged from %d labels", kb.folder.name, len(tags), len(labels))
    return tags


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


def _write_json(path, value) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    partial.write_text(json.dumps(value), encoding="utf-8")
    os.replace(partial, path)  # a reader never sees half a file
