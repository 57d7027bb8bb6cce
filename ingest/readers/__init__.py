"""Readers turn one file into a ParsedFile: lazily yielded text blocks and images, in page order.

`read_file` opens the file eagerly, so an unreadable file raises IngestError there, before any item
is consumed; problems confined to one page or one image become entries in ParsedFile.warnings,
which fill up while the items are consumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, ParsedFile
from ingest.readers import docx, html, image, pdf, text

Reader = Callable[[Path, bytes, OcrEngine | None], ParsedFile]

_READERS: dict[str, Reader] = {
    ".pdf": pdf.read_pdf,
    ".txt": text.read_text,
    ".md": text.read_markdown,
    ".markdown": text.read_markdown,
    ".html": html.read_html,
    ".htm": html.read_html,
    ".docx": docx.read_docx,
    **{suffix: image.read_image for suffix in image.IMAGE_SUFFIXES},
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_READERS)

__all__ = ["SUPPORTED_SUFFIXES", "read_file"]


def read_file(path: Path, ocr: OcrEngine | None) -> ParsedFile:
    """Opens `path` with the reader for its suffix; `ocr=None` turns OCR off."""
    path = Path(path)
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        supported = " ".join(sorted(SUPPORTED_SUFFIXES))
        raise IngestError(path, f"unsupported file type '{suffix or path.name}' (supported: {supported})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise IngestError(path, "empty file")
    return reader(path, data, ocr)
