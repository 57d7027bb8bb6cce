"""PDF reader (pypdf): the text layer page by page, embedded images, OCR for pages without text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, TextBlock
from ingest.readers._images import MIN_IMAGE_SIDE, as_png, open_image

CACHE_PAGES = 32  # pages between flushes of pypdf's object cache

# pypdf logs every recoverable defect of a damaged file; the reader reports what matters as warnings
logging.getLogger("pypdf").setLevel(logging.ERROR)


def read_pdf(path: Path, data: bytes, ocr: OcrEngine | None) -> ParsedFile:
    reader = _open(path, data)
    warnings: list[str] = []  # filled while the items are consumed
    items = _items(reader, ocr, warnings)
    return ParsedFile(path=path, kind="pdf", page_count=len(reader.pages), items=items, warnings=warnings)


def _open(path: Path, data: bytes) -> PdfReader:
    """Opens the document and touches the page tree, so broken files fail here and not mid-iteration."""
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise IngestError(path, "encrypted PDF (password required)")
        if len(reader.pages) == 0:
            raise IngestError(path, "corrupt or truncated PDF (no pages found)")
        if reader.is_encrypted:
            # decrypting one stream now: AES needs the optional 'cryptography' package (DependencyError)
            reader.pages[0].get_contents()
    except IngestError:
        raise
    except DependencyError as exc:
        # AES-encrypted files need the optional 'cryptography' package even with an empty password
        raise IngestError(path, f"encrypted PDF (cannot decrypt: {exc})") from exc
    except FileNotDecryptedError as exc:
        raise IngestError(path, "encrypted PDF (password required)") from exc
    except Exception as exc:
        # pypdf surfaces damaged structure as many exception types, not only as its own PdfReadError
        raise IngestError(path, f"corrupt or truncated PDF ({_short(exc)})") from exc
    return reader


def _items(reader: PdfReader, ocr: OcrEngine | None, warnings: list[str]) -> Iterator[Item]:
    for index in range(len(reader.pages)):
        number = index + 1
        try:
            page = reader.pages[index]
        except Exception as exc:  # noqa: BLE001 - one broken page must not end the document
            warnings.append(f"page {number}: could not read page: {_short(exc)}")
            continue
        text = _page_text(page, number, warnings)
        images = list(_page_images(page, number, warnings))
        if text:
            yield TextBlock(page=number, text=text)
        elif images:
            yield from _ocr_blocks(images, number, ocr, warnings)
        yield from (PageImage(page=number, data=data, name=name) for name, data, _ in images)
        _release(reader, page, index)


def _release(reader: PdfReader, page: PageObject, index: int) -> None:
    """Drops pypdf's caches of pages already read, so memory stays flat on a 1,000-page file."""
    # pypdf keeps every parsed object (decoded content streams included) in resolved_objects, and
    # each page keeps its inline images; re-parsing shared fonts after a flush costs a few percent
    if hasattr(page, "_content_stream_images"):
        page._content_stream_images = None
    if index % CACHE_PAGES == CACHE_PAGES - 1:
        reader.resolved_objects.clear()


def _page_text(page: PageObject, number: int, warnings: list[str]) -> str:
    try:
        return page.extract_text().strip()
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for one bad content stream
        warnings.append(f"page {number}: could not extract text: {_short(exc)}")
        return ""


_Found = tuple[str, bytes, Image.Image]  # name, bytes PIL can open, decoded image


def _page_images(page: PageObject, number: int, warnings: list[str]) -> Iterator[_Found]:
    """Each image on the page big enough to matter; one that does not decode becomes a warning."""
    try:
        keys = page.images.keys()
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"page {number}: could not list images: {_short(exc)}")
        return
    for key in keys:
        try:
            found = _image(page, key)
        except Exception as exc:  # noqa: BLE001 - pypdf and PIL raise many types for one bad image
            name = key if isinstance(key, str) else "/".join(key)
            warnings.append(f"page {number}: skipped undecodable image {name}: {_short(exc)}")
            continue
        if found is not None:
            yield found


def _image(page: PageObject, key: str | list[str]) -> _Found | None:
    image_file = page.images[key]
    decoded = image_file.image
    if decoded is None or min(decoded.size) < MIN_IMAGE_SIDE:
        return None
    data = image_file.data
    try:
        open_image(data)
    except Exception:  # noqa: BLE001 - a raw stream PIL cannot open: re-encode what pypdf decoded
        data = as_png(decoded)
    return image_file.name, data, decoded


def _ocr_blocks(
    images: list[_Found], number: int, ocr: OcrEngine | None, warnings: list[str]
) -> Iterator[TextBlock]:
    if ocr is None:
        warnings.append(f"page {number}: no text layer and OCR is disabled")
        return
    for name, _data, decoded in images:
        try:
            text = ocr.text_of(decoded).strip()
        except Exception as exc:  # noqa: BLE001 - a failed OCR loses one image's text, not the file
            warnings.append(f"page {number}: OCR failed on image {name}: {_short(exc)}")
            continue
        if text:
            yield TextBlock(page=number, text=text, ocr=True)


def _short(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message if len(message) <= 120 else message[:117] + "..."
