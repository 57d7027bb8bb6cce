"""Plain records that pass between the store, retrieval and answers."""

from __future__ import annotations

import re
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


# A web page's section keeps its link at the end of its stored heading: "Title {#anchor}", or "Title {URL#anchor}"
# when the page names its own address (a canonical link, og:url). The braces follow Markdown's heading attributes.
_HEADING_LINK = re.compile(r"(?P<title>.+?) \{(?P<link>#[^\s{}]+|https?://[^\s{}]+)\}", re.DOTALL)


def linked_heading(title: str | None, link: str) -> str | None:
    """The heading stored for a section with this link ("#anchor" or an http(s) address); the title when none."""
    return f"{title} {{{link}}}" if title and link else title


def heading_parts(heading: str | None) -> tuple[str | None, str]:
    """(title, link) of a stored heading; the link is "" when the section has none."""
    match = _HEADING_LINK.fullmatch(heading or "")
    return (match["title"], match["link"]) if match else (heading, "")


def web_link(heading: str | None) -> str:
    """The address that opens a passage's section on the web ("" when its page named no address of its own)."""
    link = heading_parts(heading)[1]
    return link if link.startswith(("https://", "http://")) else ""


def place(file: str, page: int, heading: str | None) -> str:
    """Where a passage sits in its document, for a citation: the page (and section) of a PDF or DOCX; the section
    heading of a web page, Markdown or text file, with its link ("§ Setup (#setup)"); empty when such a file has
    no heading."""
    title, link = heading_parts(heading)
    if file.lower().endswith(PAGED_SUFFIXES):
        return f"p. {page}" + (f" · {title}" if title else "")
    return f"§ {title}" + (f" ({link})" if link else "") if title else ""


def indexed_text(heading: str | None, text: str) -> str:
    """What the text embedder and BM25 see of a chunk: its heading's title helps both find it (not its link)."""
    title = heading_parts(heading)[0]
    return f"{title}\n{text}" if title else text


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
