"""Checks that image bytes found inside documents decode, so every PageImage is usable downstream."""

from __future__ import annotations

import io
import warnings

from PIL import Image

MIN_IMAGE_SIDE = 32  # smaller embedded images are bullets, rules and spacers, not content


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
