"""Copy a knowledge base into another one, document by document, without embedding anything again.

The way to move a folder knowledge base to PostgreSQL (or back): every document goes through the target's normal
write path, one transaction each, with its chunks, vectors, sentence vectors and images. Documents the target
holds already (same bytes) are skipped, so an interrupted copy is finished by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rag.records import NewChunk, NewDocument
from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

BATCH = 512  # chunks read and written together: bounds memory on a very long document


def copy_documents(source: KnowledgeBaseStore, target: KnowledgeBaseStore,
                   progress: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Copy every document of `source` that `target` lacks; returns how many were copied."""
    documents = source.documents()
    copied = 0
    for number, info in enumerate(documents, start=1):
        if target.document_by_sha(info.sha256) is None:
            _copy_one(source, target, info)
            copied += 1
        progress(number, len(documents))
    target.flush()
    return copied


def _copy_one(source: KnowledgeBaseStore, target: KnowledgeBaseStore, info) -> None:
    chunks = source.chunks_of_document(info.id)
    with target.write() as writer:
        document_id = writer.add_document(NewDocument(info.path, info.name, info.kind, info.sha256, info.size_bytes,
                                                      info.pages))
        for first in range(0, len(chunks), BATCH):
            part = chunks[first:first + BATCH]
            ids = [c.id for c in part]
            vectors, sentences = source.chunk_vectors(ids), source.sentence_vectors(ids)
            # no `ocr` flag on a ChunkRecord: it only changes how a passage is shown while it is ingested
            writer.add_chunks(document_id, first, [NewChunk(c.page, c.text, c.heading) for c in part],
                              _stack([vectors[i] for i in ids]), [sentences.get(i) for i in ids])
        for image in source.images_on_pages(info.id):
            data = source.image_path(image).read_bytes()
            with target.staging() as staged:  # the write path every backend shares for image bytes
                staged.add_image(image.page, image.name, data, None)
                writer.add_staged(document_id, staged)
    logger.info("copied %s (%d chunks)", info.name, len(chunks))


def _stack(vectors: list):
    import numpy as np

    return np.stack(vectors).astype(np.float32)
