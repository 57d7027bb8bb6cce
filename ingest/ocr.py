"""Optical character recognition for images and scanned pages (RapidOCR, PP-OCR ONNX models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from rapidocr_onnxruntime import RapidOCR

MIN_SIDE = 16  # below this no glyph is legible; skipping saves a model call
MAX_SIDE = 2000  # larger images are downscaled first: detection time grows with pixel count


class OcrEngine:
    """Recognises the text in an image. The models load once, on first use, from any thread."""

    def __init__(self) -> None:
        self._engine: RapidOCR | None = None
        self._lock = threading.Lock()
        self.seconds = 0.0  # spent recognising, in all: ingest summaries split it from parsing
        # Told before each recognition starts, with the page when the reader names it: one page of a scan takes
        # seconds, so the parse worker reports it as it begins (ingest.parse_worker).
        self.on_recognise: Callable[[int | None], None] | None = None

    def load(self) -> None:
        """Loads the models now rather than on the first image."""
        self._get_engine()

    def _get_engine(self) -> RapidOCR:
        if self._engine is None:
            with self._lock:
                # double-checked: two threads may both have seen None
                if self._engine is None:
                    # imported here: onnxruntime and opencv are slow to import and unused without OCR
                    from rapidocr_onnxruntime import RapidOCR

                    self._engine = RapidOCR()
        return self._engine

    def text_of(self, image: Image.Image, page: int | None = None) -> str:
        """The recognised lines in reading order, one line per text row; "" when nothing is found.
        `page`: the 1-based page the image is on, for progress reports (`on_recognise`)."""
        if min(image.size) < MIN_SIDE:
            return ""
        engine = self._get_engine()
        if self.on_recognise is not None:
            self.on_recognise(page)
        start = time.perf_counter()
        try:
            result, _timings = engine(_to_bgr_array(_downscaled(image)))
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start
        if not result:
            return ""
        return _reading_order(result)


def _downscaled(image: Image.Image) -> Image.Image:
    long_side = max(image.size)
    if long_side <= MAX_SIDE:
        return image
    scale = MAX_SIDE / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _to_bgr_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels often hide black RGB values: flatten onto white so dark text stays visible
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"))
    # RapidOCR takes a 3-channel ndarray as OpenCV's BGR order
    return np.ascontiguousarray(rgb[:, :, ::-1])


# A row that stops this short of the text's right edge ends its paragraph (a heading, a label, a last line);
# so does one followed by a gap taller than this share of a row: prose wraps, a screenshot's labels do not.
SHORT_ROW = 0.7
PARAGRAPH_GAP = 0.8
_Box = tuple[float, float, float, float, str]  # top, bottom, left, right, text


def _reading_order(result: list[Any]) -> str:
    """The detected text rows top to bottom, each read left to right; a blank line between paragraphs, so that
    a sentence ends where a row of a label or heading ends even without a full stop."""
    bands = _bands(result)
    if not bands:
        return ""
    left = min(box[2] for band in bands for box in band)
    right = max(box[3] for band in bands for box in band)
    rows = [" ".join(box[4] for box in sorted(band, key=lambda b: b[2])) for band in bands]
    parts = [rows[0]]
    for band, following, row in zip(bands, bands[1:], rows[1:]):
        parts.append("\n\n" if _ends_paragraph(band, following, left, right) else "\n")
        parts.append(row)
    return "".join(parts)


def _ends_paragraph(band: list[_Box], following: list[_Box], left: float, right: float) -> bool:
    band_bottom = max(box[1] for box in band)
    height = band_bottom - min(box[0] for box in band)
    gap = min(box[0] for box in following) - band_bottom
    short = max(box[3] for box in band) < left + SHORT_ROW * (right - left)
    return short or gap > PARAGRAPH_GAP * height


def _bands(result: list[Any]) -> list[list[_Box]]:
    """Groups detected lines into horizontal bands (top to bottom)."""
    boxes = []
    for box, text, _score in result:
        text = str(text).strip()
        if not text:
            continue
        ys = [float(point[1]) for point in box]
        xs = [float(point[0]) for point in box]
        boxes.append((min(ys), max(ys), min(xs), max(xs), text))
    boxes.sort(key=lambda b: (b[0], b[2]))

    bands: list[list[_Box]] = []
    for box in boxes:
        top, bottom = box[0], box[1]
        if bands:
            band_top = min(b[0] for b in bands[-1])
            band_bottom = max(b[1] for b in bands[-1])
            overlap = min(bottom, band_bottom) - max(top, band_top)
            # same row when the boxes share at least half of the smaller height
            if overlap >= 0.5 * min(bottom - top, band_bottom - band_top):
                bands[-1].append(box)
                continue
        bands.append([box])
    return bands
