"""Plain records that pass between the store, retrieval and answers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelId:
    """Which model made a set of vectors; a store refuses vectors from any other."""

    name: str
    dim: int


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    name: str
    path: str
    kind: str
    sha256: str
    size_bytes: int
    pages: int
    chunks: int
    images: int
    images_waiting: int  # images stored but not yet embedded (no CLIP weights when they came in)
    added_at: str


@dataclass(frozen=True)
class NewDocument:
    """A document on its way into a store: where it came from and what it is."""

    path: str
    name: str
    kind: str
    sha256: str
    size_bytes: int
    pages: int


@dataclass(frozen=True)
class NewChunk:
    page: int
    text: str
    heading: str | None = None
    ocr: bool = False


def indexed_text(heading: str | None, text: str) -> str:
    """What the text embedder and BM25 see of a chunk: its heading helps both find it."""
    return f"{heading}\n{text}" if heading else text


@dataclass(frozen=True)
class ChunkRecord:
    id: int
    document_id: int
    ordinal: int
    file: str  # the document's file name, for citations
    path: str
    page: int
    heading: str | None
    text: str


@dataclass(frozen=True)
class ImageRecord:
    id: int
    document_id: int
    file: str
    page: int
    name: str
    image_path: str  # the stored copy inside the knowledge base
    embedded: bool
