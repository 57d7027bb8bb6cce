"""OCR on rendered text: the real RapidOCR models, a few calls only (about a second each on 2 cores)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PIL import Image

from ingest.ocr import MAX_SIDE, OcrEngine, _downscaled, _reading_order, _to_bgr_array


def test_reads_a_rendered_line(ocr_engine: OcrEngine, invoice_image: Image.Image) -> None:
    text = ocr_engine.text_of(invoice_image)
    assert "4711" in text
    assert "invoice" in text.lower()
    assert "\n" not in text, "one rendered line must come back as one line"


def test_reading_order_on_a_real_layout(
    ocr_engine: OcrEngine, render_text: Callable[..., Image.Image]
) -> None:
    """Two columns on one row read left to right; rows read top to bottom."""
    page = render_text(
        [(560, 30, "Right 22"), (30, 32, "Left 11"), (30, 150, "Bottom line 33")],
        (900, 230),
    )
    lines = [line for line in ocr_engine.text_of(page).splitlines() if line]  # a blank line between paragraphs
    assert len(lines) == 2, lines
    # the recogniser sometimes drops the space between a word and a number: compare without spaces
    assert "".join(lines[0].split()) == "Left11Right22"
    assert "".join(lines[1].split()) == "Bottomline33"


def test_transparent_image_with_dark_text(
    ocr_engine: OcrEngine, invoice_image: Image.Image
) -> None:
    """Black glyphs on fully transparent black: readable only once flattened onto white."""
    alpha = Image.eval(invoice_image.convert("L"), lambda value: 255 - value)
    rgba = Image.new("RGBA", invoice_image.size, (0, 0, 0, 0))
    rgba.putalpha(alpha)
    assert "4711" in ocr_engine.text_of(rgba)


def test_blank_and_tiny_images_give_empty_text(ocr_engine: OcrEngine) -> None:
    assert ocr_engine.text_of(Image.new("RGB", (400, 200), "white")) == ""
    assert ocr_engine.text_of(Image.new("RGB", (15, 300), "black")) == ""


def test_models_load_once_across_threads() -> None:
    engine = OcrEngine()
    barrier = threading.Barrier(4)
    loaded: list[object] = []

    def load() -> None:
        barrier.wait()
        loaded.append(engine._get_engine())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 4 and all(item is loaded[0] for item in loaded)


def test_large_images_are_downscaled_keeping_aspect() -> None:
    small = Image.new("RGB", (800, 600))
    assert _downscaled(small) is small
    big = _downscaled(Image.new("RGB", (5000, 1000)))
    assert big.size == (MAX_SIDE, 400)
    tall = _downscaled(Image.new("L", (300, 9000)))
    assert tall.size == (67, MAX_SIDE)


def test_array_is_bgr_for_rapidocr() -> None:
    array = _to_bgr_array(Image.new("RGB", (20, 20), (255, 0, 0)))
    assert array.shape == (20, 20, 3) and array.flags["C_CONTIGUOUS"]
    assert tuple(array[0, 0]) == (0, 0, 255)
    grey = _to_bgr_array(Image.new("L", (20, 20), 128))
    assert grey.shape == (20, 20, 3) and np.all(grey == 128)


def _box(left: float, top: float, right: float, bottom: float) -> list[list[float]]:
    return [[left, top], [right, top], [right, bottom], [left, bottom]]


def test_reading_order_groups_bands() -> None:
    """RapidOCR's result format: [box, text, score]; a slightly lower word still joins its row."""
    result = [
        [_box(300, 12, 420, 40), "world", 0.9],
        [_box(10, 100, 200, 130), "second row", 0.9],
        [_box(10, 10, 120, 38), "hello", 0.9],
        [_box(10, 200, 90, 230), "  ", 0.4],
        [_box(10, 300, 200, 330), "third", 0.8],
    ]
    # each row stops short of the widest and is followed by a gap taller than itself: a paragraph of its own
    assert _reading_order(result) == "hello world\n\nsecond row\n\nthird"


def test_seconds_spent_recognising_add_up(invoice_image: Image.Image) -> None:
    """Ingest summaries split OCR time from parsing time with this counter."""
    engine = OcrEngine()
    engine.load()
    assert engine.seconds == 0.0
    engine.text_of(invoice_image)
    first = engine.seconds
    engine.text_of(invoice_image)
    assert 0 < first < engine.seconds
