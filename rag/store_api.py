"""The narrow interfaces every caller of a knowledge base relies on, whatever holds it.

Two backends implement them:
- `rag.store.KnowledgeBase`: a folder on one machine (SQLite catalog, FAISS, BM25 files, image files);
- `rag.pg_store.PgKnowledgeBase`: a schema in a PostgreSQL database with pgvector, shared by several app servers.

`rag.store_factory` picks one from the `--store` location (a folder, or a `postgresql://` URL). Retrieval,
answering, ingest and the service only use what these protocols name, and tests/rag/test_store_contract.py runs
one suite against both backends.

A store's `folder` is a local working folder in both cases: uploads are staged there and images are copied there
for display. For the folder backend it is the knowledge base itself; for a database it is a per-machine cache that
can be deleted at any time (everything that matters is in the database).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rag.records import ChunkRecord, DocumentInfo, ImageRecord, ModelId, NewChunk, NewDocument
from rag.store import StagedDocument

DATABASE_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: Path | str | None) -> bool:
    """Whether a --store value names a PostgreSQL database rather than a folder."""
    return isinstance(location, str) and location.lower().startswith(DATABASE_SCHEMES)


class StoreWriter(Protocol):
    """Adds and removes documents inside one write transaction (`KnowledgeBaseStore.write()`)."""

    def document_by_sha(self, sha256: str) -> DocumentInfo | None: ...

    def documents_by_path(self, path: str) -> list[DocumentInfo]: ...

    def add_document(self, document: NewDocument) -> int: ...

    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk], vectors: np.ndarray,
                   sentence_vectors: Sequence[np.ndarray | None] | None = None) -> None: ...

    def add_staged(self, document_id: int, staged: StagedDocument) -> None: ...

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> None: ...

    def delete_document(self, document_id: int) -> DocumentInfo: ...


class VectorCount(Protocol):
    """How many chunk vectors a store searches (the fusion's pool size)."""

    @property
    def size(self) -> int: ...


@runtime_checkable
class LexicalSearch(Protocol):
    """BM25 over a store's chunks: (chunk id, score) lists, best first, chunks sharing no term left out."""

    def search(self, query: str, k: int) -> list[tuple[int, float]]: ...

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]: ...

    def coverage(self, terms: Sequence[str], chunk_ids: Iterable[int]) -> dict[int, float]:
        """The share of the distinct `terms` (rag.lexical_index.tokenize's) that each chunk holds; chunks that
        are gone are left out."""
        ...

    def refresh(self) -> object: ...


class KnowledgeBaseStore(Protocol):
    """The knowledge-base facade: catalog reads, dense search, writes in transactions, stored images."""

    text_model: ModelId
    image_model: ModelId | None
    folder: Path  # the local working folder (see the module docstring)

    @property
    def generation(self) -> int: ...

    @property
    def text_index(self) -> VectorCount: ...

    # catalog
    def documents(self) -> list[DocumentInfo]: ...

    def document_by_sha(self, sha256: str) -> DocumentInfo | None: ...

    def documents_by_path(self, path: str) -> list[DocumentInfo]: ...

    def resolve(self, reference: str) -> DocumentInfo: ...

    def chunks(self, ids: list[int]) -> dict[int, ChunkRecord]: ...

    def chunks_of_document(self, document_id: int, first: int = 0, last: int | None = None) -> list[ChunkRecord]: ...

    def chunk_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...

    def sentence_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...

    def chunks_without_sentence_vectors(self, document_ids: Sequence[int] | None, limit: int,
                                        after_id: int = 0) -> list[tuple[int, str]]:
        """(id, text) of up to `limit` chunks that have no sentence vectors yet, of these documents (all: None),
        with ids above `after_id`, in id order: the sentence pass (rag.sentence_vectors.fill_missing) pages with it."""
        ...

    def set_sentence_vectors(self, blobs: dict[int, bytes]) -> int:
        """Store chunks' packed sentence vectors (rag.sentence_vectors.pack) in one short transaction, only where a
        chunk still has none (another pass may have filled it meanwhile, with the same vectors); a chunk deleted
        meanwhile is skipped. Returns how many chunks were written. Search indexes are unchanged."""
        ...

    def image_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...

    def chunk_texts(self) -> list[tuple[int, str | None, str]]: ...

    # vector search
    def search_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[ChunkRecord, float]]: ...

    def search_chunk_ids(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]: ...

    def search_images(self, query_vector: np.ndarray, k: int) -> list[tuple[ImageRecord, float]]: ...

    # images (blob storage)
    def images_on_pages(self, document_id: int, pages: list[int] | None = None) -> list[ImageRecord]: ...

    def images_waiting(self) -> list[ImageRecord]: ...

    def image_path(self, image: ImageRecord) -> Path: ...

    # writes
    def staging(self) -> AbstractContextManager[StagedDocument]: ...

    def commit(self, document: NewDocument, staged: StagedDocument) -> tuple[int, list[DocumentInfo]]: ...

    def write(self) -> AbstractContextManager[StoreWriter]: ...

    def bulk_load(self) -> AbstractContextManager[None]:
        """Around many writes: the search indexes are built once at the end instead of write by write."""
        ...

    def delete(self, document_id: int) -> DocumentInfo: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def lexical_index(kb: KnowledgeBaseStore) -> LexicalSearch:
    """The BM25 index of a store: a database store searches inside the database (its `lexical_index()`); a folder
    store shares one bm25s index per process (rag.lexical_index)."""
    own = getattr(kb, "lexical_index", None)
    if callable(own):
        return own()
    from rag.lexical_index import LexicalIndex  # imported here: rag.lexical_index imports rag.store

    return LexicalIndex.for_store(kb)
