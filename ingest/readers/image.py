"""Image files: the image itself, plus its OCR text when OCR is on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, ReadLimits, TextBlock
from ingest.readers._images import ImageBudget, open_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})


def read_image(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits) -> ParsedFile:
    image = _decode(path, data, limits)
    warnings: list[str] = []  # filled while the items are consumed
    # the decoded pixels are kept only for OCR; without it they go now
    items = _items(path, data, image if ocr is not None else None, ocr, warnings)
    return ParsedFile(path=path, kind="image", page_count=1, items=items, warnings=warnings)


def _decode(path: Path, data: bytes, limits: ReadLimits) -> Image.Image:
    """Fully decodes the (first frame of the) image, so a broken file fails at read time."""
    try:
        ImageBudget(path, limits).charge_encoded(data)  # from the header, before decoding a pixel
        return open_image(data)  # load() decodes only the first frame of a GIF
    except (IngestError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IngestError(path, f"image too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:  # its message names an in-memory buffer, not the file
        raise IngestError(path, "image does not decode (not a recognised image format, or damaged)") from exc
    except Exception as exc:
        raise IngestError(path, f"image does not decode ({type(exc).__name__}: {exc})") from exc


def _items(
    path: Path, data: bytes, image: Image.Image | None, ocr: OcrEngine | None, warnings: list[str]
) -> Iterator[Item]:
    # the image first, then the slow OCR: OCR runs only as the items are consumed
    yield PageImage(page=1, data=data, name=path.name)
    if ocr is None or image is None:
        warnings.append("OCR is disabled: no text read from the image")
    else:
        try:
            text = ocr.text_of(image, page=1).strip()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed OCR loses the text, not the image
            logger.info("%s: OCR failed", path.name, exc_info=True)
            warnings.append(f"OCR failed: {type(exc).__name__}: {exc}")
            text = ""
        if text:
            yield TextBlock(page=1, text=text, ocr=True)
