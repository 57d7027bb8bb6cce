"""Small real files for tests, built on the fly: PDFs with a text layer and pictures, images, text."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from PIL import Image


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height grey pixels while its data holds one row: decoding it would
    allocate them all, so a size check must read the header first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
            + chunk(b"IEND", b""))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_image(name: str, side: int = 96) -> Image.Image:
    """A real photograph shipped with scikit-image (astronaut, chelsea, coffee, ...), downscaled."""
    from skimage import data

    array = getattr(data, name)()
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((side, side))
    return image


def make_pdf(path: Path, pages: list[list[str]], images: dict[int, Image.Image] | None = None) -> Path:
    """A PDF with one page per entry of `pages` (paragraphs of text); `images` puts a picture on a 1-based page."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number, paragraphs in enumerate(pages, start=1):
        pdf.add_page()
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(3)
        if images and number in images:
            pdf.image(images[number], w=40)
    pdf.output(str(path))
    return path


REPORT_TOPICS = ["glaciers", "volcanoes", "coral reefs", "deserts", "rainforests", "tundra", "estuaries", "savannas"]


def write_reports(folder: Path, count: int, paragraphs: int = 16) -> Path:
    """`count` survey reports as text files, report-00.txt on; every paragraph's wording is the report's own."""
    folder.mkdir()
    for n in range(count):
        topic = REPORT_TOPICS[n % len(REPORT_TOPICS)]
        text = [f"Report {n} paragraph {p} on {topic}: field station {n * 100 + p} measured values that changed by "
                f"{p + n} percent over the season, as the survey team noted in detail." for p in range(paragraphs)]
        (folder / f"report-{n:02d}.txt").write_text("\n\n".join(text))
    return folder
