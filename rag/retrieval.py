"""Search a knowledge base: text query → chunks, text query → images (CLIP), image → similar images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.image_embedder import ImageEmbedder
from rag.records import ChunkRecord, ImageRecord
from rag.store import KnowledgeBase
from rag.text_embedder import TextEmbedder


@dataclass(frozen=True)
class Passage:
    chunk: ChunkRecord
    score: float  # cosine similarity for dense search; the fused score for hybrid search
    dense_score: float | None = None  # cosine similarity, when known: the "documents don't say" test uses it


@dataclass(frozen=True)
class ImageHit:
    image: ImageRecord
    score: float


class Retriever:
    def __init__(self, kb: KnowledgeBase, text_embedder: TextEmbedder, image_embedder: ImageEmbedder | None = None,
                 mode: str = "dense") -> None:
        self.kb = kb
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        self.mode = mode

    def search(self, query: str, k: int, mode: str | None = None) -> list[Passage]:
        query_vector = self.text_embedder.embed([query])
        return [Passage(chunk, score, score) for chunk, score in self.kb.search_chunks(query_vector, k)]

    def search_images(self, query: str, k: int) -> list[ImageHit]:
        """Images whose CLIP vector is nearest the query text's; empty without CLIP weights."""
        if self.image_embedder is None:
            return []
        return self._images(self.image_embedder.embed_texts([query]), k)

    def similar_images(self, image: bytes, k: int) -> list[ImageHit]:
        if self.image_embedder is None:
            return []
        return self._images(self.image_embedder.embed_images([image]), k)

    def _images(self, vector: np.ndarray, k: int) -> list[ImageHit]:
        return [ImageHit(image, score) for image, score in self.kb.search_images(vector, k)]
