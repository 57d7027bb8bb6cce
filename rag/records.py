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


# Documents whose pages are real. A web page, a Markdown or a text file is one long page: "p. 1" tells nothing.
PAGED_SUFFIXES = (".pdf", ".docx")


def place(file: str, page: int, heading: str | None) -> str:
    """Where a passage sits in its document, for a citation: the page (and section) of a PDF or DOCX; the section
    heading of a web page, Markdown or text file; empty when such a file has no heading."""
    if file.lower().endswith(PAGED_SUFFIXES):
        return f"p. {page}" + (f" · {heading}" if heading else "")
    return f"§ {heading}" if heading else ""


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
