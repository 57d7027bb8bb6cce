"""Images: search a knowledge base's pictures by text or by an example image (CLIP), and the display copies the
web server may serve (the store's own folder is never served)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.components import Models
from rag.explore.image_tags import Tag, all_images, tag_matches
from rag.retrieval import ImageHit
from service.errors import ServiceError
from service.knowledge_bases import KnowledgeBases


@dataclass(frozen=True)
class ImageResult:
    file: str
    page: int
    name: str
    score: float
    path: str  # a copy the UI may serve
    image_id: int = 0  # the store's id, for what other views know of the image (its tags)


class Images:
    def __init__(self, models: Models, knowledge_bases: KnowledgeBases) -> None:
        self.models = models
        self.knowledge_bases = knowledge_bases
        self._display_dir = Path(tempfile.gettempdir()) / f"loupe-display-{os.getpid()}"
        # Called with each display copy's name once it is deleted, so the web layer can drop the copies its
        # server made of it (the service knows nothing of Gradio).
        self.on_display_removed: Callable[[str], None] = lambda name: None
        # The images' zero-shot tags by image id (Explore's, wired by LoupeService): a search naming a tag finds the
        # images that carry it.
        self.tags_of: Callable[[str | None], dict[int, list[Tag]]] = lambda kb: {}

    @property
    def available(self) -> bool:
        return self.models.image_embedder is not None

    def search(self, kb: str | None, query: str, k: int = 8) -> list[ImageResult]:
        if not self.available:
            raise ServiceError(self.models.clip_status)
        if not str(query or "").strip():
            raise ServiceError("type what the image should show")
        hits = self.knowledge_bases.assistant(kb).retriever.search_images(query, int(k))
        return [self._result(kb, hit) for hit in self._tagged_first(kb, query, hits, int(k))]

    def _tagged_first(self, kb: str | None, query: str, hits: list[ImageHit], k: int) -> list[ImageHit]:
        """The images with a tag the query names, best tag first, then CLIP's hits: a tag is a word the user can
        search by, and CLIP's nearest vectors alone may miss it. Both scores are cosines with a CLIP text
        vector (the tag's prompt, the query), so they read alike."""
        matches = tag_matches(self.tags_of(kb), query)
        if not matches:
            return hits
        tagged = [ImageHit(image, matches[image.id]) for image in all_images(self.knowledge_bases.open(kb))
                  if image.id in matches]
        tagged.sort(key=lambda hit: -hit.score)
        return (tagged + [hit for hit in hits if hit.image.id not in matches])[:k]

    def similar(self, kb: str | None, data: bytes, k: int = 8) -> list[ImageResult]:
        if not self.available:
            raise ServiceError(f"Finding similar images needs CLIP as well. {self.models.clip_status}")
        try:
            hits = self.knowledge_bases.assistant(kb).retriever.similar_images(data, int(k))
        except OSError:  # PIL cannot read it
            raise ServiceError("that file is not an image Loupe can read") from None
        return [self._result(kb, hit) for hit in hits]

    def _result(self, kb: str | None, hit: ImageHit) -> ImageResult:
        path = self.knowledge_bases.open(kb).image_path(hit.image)
        return ImageResult(hit.image.file, hit.image.page, hit.image.name, round(hit.score, 4),
                           str(self.display_copy(path)), hit.image.id)

    def display_copy(self, path: str | Path) -> Path:
        """A copy of a stored image in the temp folder, which the web server may serve (the store may not)."""
        path = Path(path)
        self._display_dir.mkdir(exist_ok=True)
        copy = self._display_dir / path.name  # stored images are named by their content hash
        if not copy.exists():
            partial = copy.with_name(f".{copy.name}.{threading.get_ident()}")
            shutil.copyfile(path, partial)
            os.replace(partial, copy)  # a reader never sees half a file
        return copy

    def forget(self, image_names: set[str]) -> None:
        """Drop the display copies of stored images that are gone, here and in the web layer."""
        for image_name in image_names:
            (self._display_dir / image_name).unlink(missing_ok=True)
            self.on_display_removed(image_name)

    def close(self) -> None:
        shutil.rmtree(self._display_dir, ignore_errors=True)
