"""Image files: the image itself, plus its OCR text when OCR is on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, TextBlock
from ingest.readers._images import open_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})


def read_image(path: Path, data: bytes, ocr: OcrEngine | None) -> ParsedFile:
    image = _decode(path, data)
    warnings: list[str] = []  # filled while the items are consumed
    items = _items(path, data, image, ocr, warnings)
    return ParsedFile(path=path, kind="image", page_count=1, items=items, warnings=warnings)


def _decode(path: Path, data: bytes) -> Image.Image:
    """Fully decodes the (first frame of the) image, so a broken file fails at read time."""
    try:
        return open_image(data)  # load() decodes only the first frame of a GIF
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IngestError(path, f"image too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:  # its message names an in-memory buffer, not the file
        raise IngestError(path, "image does not decode (not a recognised image format, or damaged)") from exc
    except Exception as exc:
        raise IngestError(path, f"image does not decode ({type(exc).__name__}: {exc})") from exc


def _items(
    path: Path, data: bytes, image: Image.Image, ocr: OcrEngine | None, warnings: list[str]
) -> Iterator[Item]:
    # the image first, then the slow OCR: OCR runs only as the items are consumed
    yield PageImage(page=1, data=data, name=path.name)
    if ocr is None:
        warnings.append("OCR is disabled: no text read from the image")
    else:
        try:
            text = ocr.text_of(image).strip()
        except Exception as exc:  # noqa: BLE001 - a failed OCR loses the text, not the image
            warnings.append(f"OCR failed: {type(exc).__name__}: {exc}")
            text = ""
        if text:
            yield TextBlock(page=1, text=text, ocr=True)
