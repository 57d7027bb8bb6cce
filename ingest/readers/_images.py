"""Images inside documents: checks that they decode, and a budget of what decoding them may cost.

An image's header says how large it decodes; a small file can declare gigapixels. `ImageBudget` checks
that size against the read limits BEFORE anything is decoded, per image, per page and per file.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image

from ingest.parsed import IngestError, ReadLimits

MIN_IMAGE_SIDE = 32  # smaller embedded images are bullets, rules and spacers, not content
_MB = 2**20


def open_image(data: bytes) -> Image.Image:
    """Decodes `data` fully; raises (PIL's own exception types) when it does not decode."""
    with warnings.catch_warnings():
        # an image between PIL's pixel limit and twice it only warns; treat it as the bomb it may be
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        image.load()  # open() only reads the header; load() decodes the pixels
    return image


def as_png(image: Image.Image) -> bytes:
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = image.convert("RGB")  # CMYK, YCbCr, F, ... cannot be written as PNG
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _pixel_bytes(mode: str) -> int:
    """What PIL holds per pixel: one byte for bilevel, grey and palette images, four for the rest (RGB too)."""
    return 1 if mode in ("1", "L", "P") else 4


class ImageBudget:
    """Counts the decoded size of one file's images against the pixel, per-page and per-file caps."""

    def __init__(self, path: Path, limits: ReadLimits) -> None:
        self.path = path
        self.limits = limits
        self._page_bytes: Counter[int | None] = Counter()
        self._file_bytes = 0

    def charge(self, width: int, height: int, mode: str, page: int | None = None) -> None:
        """Accounts for one image about to be decoded into PIL `mode`; raises IngestError past a cap."""
        where = f"page {page}: " if page is not None else ""
        pixels = max(0, width) * max(0, height)
        if pixels > self.limits.max_image_pixels:
            raise IngestError(self.path, f"{where}an image of {width}x{height} pixels ({_mega(pixels)} megapixels) "
                                         f"is over the {_mega(self.limits.max_image_pixels)} megapixel limit "
                                         "(LOUPE_MAX_IMAGE_MEGAPIXELS)")
        size = pixels * _pixel_bytes(mode)
        self._page_bytes[page] += size
        self._file_bytes += size
        if self._page_bytes[page] > self.limits.max_page_image_bytes:
            raise IngestError(self.path, f"{where}images decode to {megabytes(self._page_bytes[page])} MB, over the "
                                         f"{megabytes(self.limits.max_page_image_bytes)} MB per-page limit "
                                         "(LOUPE_MAX_PAGE_IMAGE_MB)")
        if self._file_bytes > self.limits.max_file_image_bytes:
            raise IngestError(self.path, f"{where}the file's images decode to {megabytes(self._file_bytes)} MB, over "
                                         f"the {megabytes(self.limits.max_file_image_bytes)} MB per-file limit "
                                         "(LOUPE_MAX_FILE_IMAGE_MB)")

    def charge_encoded(self, data: bytes, page: int | None = None) -> None:
        """Charges an encoded image (PNG, JPEG, ...) by its header; PIL's own errors propagate."""
        self.charge(*header_of(data), page)


def header_of(data: bytes) -> tuple[int, int, str]:
    """Width, height and mode from the image's header alone: nothing is decoded.

    PIL's own DecompressionBombError (past twice Image.MAX_IMAGE_PIXELS) propagates.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget decides, below PIL's error
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height, image.mode


def megabytes(size: int) -> str:
    """`size` in MB for a message: '512', '0.5', and a tiny limit still readable: '0.001'."""
    value = size / _MB
    return f"{value:.1f}".removesuffix(".0") if value >= 0.1 else f"{value:.2g}"


def _mega(pixels: int) -> str:
    return f"{round(pixels / 1e6, 1):g}"
