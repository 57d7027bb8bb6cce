"""What a reader hands to the ingest pipeline: text blocks and images, in page order.

Readers yield these lazily so that a 2,000-page PDF never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class IngestError(Exception):
    """A file that cannot be ingested; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one untrusted file may cost to read (from Settings; see `from_settings`)."""

    max_file_bytes: int = 200 * 2**20
    max_image_pixels: int = 64_000_000
    max_page_image_bytes: int = 512 * 2**20  # decoded pixels of one page's images together
    max_file_image_bytes: int = 4096 * 2**20  # decoded pixels of all of a file's images together
    max_unzipped_bytes: int = 512 * 2**20  # a DOCX's parts together, uncompressed
    max_zip_ratio: int = 200  # uncompressed / compressed size of any one part
    parse_timeout_s: float = 120.0
    parse_memory_bytes: int = 1536 * 2**20  # on top of the parse worker's own footprint

    @classmethod
    def from_settings(cls, settings) -> ReadLimits:
        mb = 2**20
        return cls(settings.max_file_bytes, int(settings.max_image_megapixels * 1_000_000),
                   settings.max_page_image_mb * mb, settings.max_file_image_mb * mb, settings.max_unzipped_mb * mb,
                   settings.max_zip_ratio, settings.parse_timeout_s, settings.parse_memory_mb * mb)


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
    ocr_seconds: float = 0.0  # spent in OCR so far, when the file is parsed in a worker (ingest.parse_worker)
    # Hears (stage, page, page_count) as the worker begins work on a page ("ocr" as it starts recognising one),
    # while the items are consumed: a scanned page takes seconds before its first item comes.
    on_progress: Callable[[str, int, int], None] | None = None
