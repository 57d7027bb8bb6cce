"""What a reader hands to the ingest pipeline: text blocks and images, in page order.

Readers yield these lazily so that a 2,000-page PDF never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class IngestError(Exception):
    """A file that cannot be ingested; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class TextBlock:
    """A run of text (a paragraph, a page's text) on one 1-based physical page."""

    page: int
    text: str
    heading: str | None = None  # the section heading the text sits under, if the format has one
    ocr: bool = False  # True when the text came from OCR rather than a text layer


@dataclass(frozen=True)
class PageImage:
    """An image found in a document (or the image file itself), as encoded bytes."""

    page: int
    data: bytes  # encoded image (PNG, JPEG, ...), decodable by PIL
    name: str = ""  # the image's name inside the document, for display


Item = TextBlock | PageImage


@dataclass
class ParsedFile:
    """A file opened by a reader. `items` is consumed once, in page order."""

    path: Path
    kind: str  # "pdf", "text", "markdown", "html", "docx", "image"
    page_count: int
    items: Iterator[Item]
    warnings: list[str] = field(default_factory=list)  # non-fatal problems (a page that failed OCR, ...)
