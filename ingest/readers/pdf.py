"""PDF reader (pypdf): the text layer page by page, embedded images, OCR for pages without text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError
from pypdf.generic import DictionaryObject, EncodedStreamObject, StreamObject

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, ReadLimits, TextBlock
from ingest.readers._images import MIN_IMAGE_SIDE, ImageBudget, as_png, header_of, open_image

logger = logging.getLogger(__name__)

CACHE_PAGES = 32  # pages between flushes of pypdf's object cache

# pypdf logs every recoverable defect of a damaged file; the reader reports what matters as warnings
logging.getLogger("pypdf").setLevel(logging.ERROR)


def read_pdf(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits) -> ParsedFile:
    reader = _open(path, data)
    warnings: list[str] = []  # filled while the items are consumed
    items = _items(reader, ocr, warnings, ImageBudget(path, limits))
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
    except (IngestError, MemoryError):
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


def _items(reader: PdfReader, ocr: OcrEngine | None, warnings: list[str], budget: ImageBudget) -> Iterator[Item]:
    for index in range(len(reader.pages)):
        number = index + 1
        try:
            page = reader.pages[index]
        except Exception as exc:  # noqa: BLE001 - one broken page must not end the document
            _skip(warnings, f"page {number}: could not read page", exc)
            continue
        text = _page_text(page, number, warnings)
        images = list(_page_images(page, number, warnings, budget))  # encoded only: pixels are decoded one at a time
        if text:
            yield TextBlock(page=number, text=text)
        elif images:
            yield from _ocr_blocks(images, number, ocr, warnings)
        yield from (PageImage(page=number, data=data, name=name) for name, data in images)
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
        _skip(warnings, f"page {number}: could not extract text", exc)
        return ""


_Found = tuple[str, bytes]  # the image's name, bytes PIL can open
_ImageKey = list[str]  # an image's name in the page's resources, through the form XObjects that hold it


def _page_images(page: PageObject, number: int, warnings: list[str], budget: ImageBudget) -> Iterator[_Found]:
    """Each image on the page big enough to matter; one that does not decode becomes a warning.

    Each image's size is charged to the budget from its dictionary before it is decoded (past a cap the
    file fails), and its pixels are dropped before the next one is decoded.
    """
    try:
        found = [*_xobject_images(page, [], set()), *_inline_images(page)]
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for one bad content stream
        _skip(warnings, f"page {number}: could not list images", exc)
        return
    for key, settings in list(_charged(found, number, warnings, budget)):  # all first: see _charged
        try:
            image = _image(page, key)
        except Exception as exc:  # noqa: BLE001 - pypdf and PIL raise many types for one bad image
            _skip(warnings, f"page {number}: skipped undecodable image {'/'.join(key)}", exc)
            continue
        finally:
            _forget_decoded(settings)
        if image is not None:
            yield image


def _charged(found: list[tuple[_ImageKey, Any]], number: int, warnings: list[str],
             budget: ImageBudget) -> Iterator[tuple[_ImageKey, Any]]:
    """The page's images, each charged to the budget from its dictionary (past a cap, IngestError).

    All of a page's images are charged before any is decoded: pypdf decodes a page's inline images together.
    """
    for key, settings in found:
        try:
            size = _decoded_size(settings)
        except Exception as exc:  # noqa: BLE001 - a damaged image dictionary
            _skip(warnings, f"page {number}: skipped undecodable image {'/'.join(key)}", exc)
            continue
        budget.charge(*size, page=number)
        yield key, settings


def _forget_decoded(settings: Any) -> None:
    """Drops pypdf's cached copy of an image stream's decoded bytes (and of its masks'), kept until a flush."""
    for stream in (settings, settings.get("/SMask"), settings.get("/Mask")):
        stream = stream.get_object() if stream is not None else None
        if isinstance(stream, EncodedStreamObject):
            stream.decoded_self = None


def _xobject_images(owner: DictionaryObject, prefix: _ImageKey, seen: set[int]) -> Iterator[tuple[_ImageKey, Any]]:
    """Image XObjects of a page and of the forms it draws, found from the resources without decoding any."""
    resources = owner.get("/Resources")
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if isinstance(resources, DictionaryObject) else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not isinstance(xobjects, DictionaryObject):
        return
    for name in xobjects:
        entry = xobjects[name]
        if not isinstance(entry, StreamObject):
            continue
        if entry.get("/Subtype") == "/Image":
            yield [*prefix, str(name)], entry
        elif id(entry) not in seen:  # a form: forms may draw each other, in a cycle
            seen.add(id(entry))
            yield from _xobject_images(entry, [*prefix, str(name)], seen)


def _inline_images(page: PageObject) -> Iterator[tuple[_ImageKey, Any]]:
    """Images written into the content stream itself, with their settings (pypdf names them ~0~, ~1~, ...)."""
    contents = page.get_contents()
    if contents is None:
        return
    inline = (operands["settings"] for operands, operator in contents.operations if operator == b"INLINE IMAGE")
    for number, settings in enumerate(inline):
        yield [f"~{number}~"], settings


def _decoded_size(settings: Any) -> tuple[int, int, str]:
    """Width, height and the PIL mode pypdf decodes into, from the image's dictionary (and JPEG header)."""
    width, height = int(_entry(settings, "/Width", "/W") or 0), int(_entry(settings, "/Height", "/H") or 0)
    filters = _entry(settings, "/Filter", "/F")
    last_filter = filters[-1] if isinstance(filters, list) and filters else filters
    if isinstance(settings, StreamObject) and last_filter in ("/DCTDecode", "/JPXDecode"):
        # the codestream's own header rules what PIL decodes, whatever the dictionary declares
        header_width, header_height, _ = header_of(settings.get_data())
        width, height = max(width, header_width), max(height, header_height)
    return width, height, "L" if _single_channel(settings) else "RGBA"


def _single_channel(settings: Any) -> bool:
    """Grey, bilevel and one-ink images decode to one byte a pixel; colour, palettes and masked ones to four."""
    if _entry(settings, "/ImageMask", "/IM"):
        return True
    if "/SMask" in settings:
        return False
    space = _entry(settings, "/ColorSpace", "/CS")
    if isinstance(space, list) and space:
        family = space[0]
        if family == "/ICCBased" and len(space) > 1:
            return space[1].get_object().get("/N") == 1
        return family == "/Separation" or (family == "/DeviceN" and len(space) > 1 and len(space[1]) == 1)
    return space in ("/DeviceGray", "/G", "/CalGray")


def _entry(settings: Any, *keys: str) -> Any:
    """The first of `keys` present in the dictionary, resolved (inline images use abbreviated keys)."""
    for key in keys:
        if key in settings:
            return settings[key]
    return None


def _image(page: PageObject, key: _ImageKey) -> _Found | None:
    image_file = page.images[key]
    decoded = image_file.image
    if decoded is None or min(decoded.size) < MIN_IMAGE_SIDE:
        return None
    data = image_file.data
    try:
        open_image(data)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a raw stream PIL cannot open: re-encode what pypdf decoded
        data = as_png(decoded)
    return image_file.name, data


def _ocr_blocks(images: list[_Found], number: int, ocr: OcrEngine | None, warnings: list[str]) -> Iterator[TextBlock]:
    """OCR of a page without a text layer, decoding its images again one at a time."""
    if ocr is None:
        warnings.append(f"page {number}: no text layer and OCR is disabled")
        return
    for name, data in images:
        try:
            text = ocr.text_of(open_image(data), page=number).strip()
        except Exception as exc:  # noqa: BLE001 - a failed OCR loses one image's text, not the file
            _skip(warnings, f"page {number}: OCR failed on image {name}", exc)
            continue
        if text:
            yield TextBlock(page=number, text=text, ocr=True)


def _skip(warnings: list[str], what: str, exc: Exception) -> None:
    """A damaged part of the file: the user sees a warning, the log keeps the traceback."""
    if isinstance(exc, MemoryError):
        raise exc  # the parse worker's memory limit: the file fails, not one image of it
    warnings.append(f"{what}: {_short(exc)}")
    logger.info("%s", what, exc_info=True)


def _short(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message if len(message) <= 120 else message[:117] + "..."
