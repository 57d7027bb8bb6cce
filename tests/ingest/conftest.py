"""Fixtures for the reader and OCR tests: small real files built in tmp_path, and pypdf's own test PDFs."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import docx
import pytest
from docx.enum.text import WD_BREAK
from docx.oxml import OxmlElement
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

from ingest.ocr import OcrEngine

REPO_ROOT = Path(__file__).resolve().parents[2]
INVOICE_TEXT = "Invoice 4711 total 93 euros"
# one sentence per page of the text-layer PDF; each must come back on its own page
PDF_SENTENCES = (
    "The aardvark sleeps under the baobab tree.",
    "Quarterly revenue grew by seventeen percent.",
    "Zebras migrate across the Serengeti in July.",
)
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if _DEJAVU.exists():
        return ImageFont.truetype(str(_DEJAVU), size)
    return ImageFont.load_default(size=size)


def _render_text(
    lines: list[tuple[int, int, str]], size: tuple[int, int], font_size: int = 40
) -> Image.Image:
    """Black text on white at the given (x, y) positions."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for x, y, text in lines:
        draw.text((x, y), text, fill="black", font=_font(font_size))
    return image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _checkerboard(side: int) -> Image.Image:
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    cell = max(1, side // 8)
    for row in range(0, side, cell):
        for col in range(0, side, cell):
            if (row // cell + col // cell) % 2:
                draw.rectangle((col, row, col + cell - 1, row + cell - 1), fill=(200, 30, 30))
    return image


@pytest.fixture(scope="session")
def ocr_engine() -> OcrEngine:
    """One engine for the whole run: loading the models costs about a second."""
    return OcrEngine()


@pytest.fixture(scope="session")
def invoice_image() -> Image.Image:
    return _render_text([(20, 35, INVOICE_TEXT)], (640, 120))


# plain helpers as fixtures: test modules here are not a package, so they cannot import conftest
@pytest.fixture(scope="session")
def invoice_text() -> str:
    return INVOICE_TEXT


@pytest.fixture(scope="session")
def pdf_sentences() -> tuple[str, ...]:
    return PDF_SENTENCES


@pytest.fixture(scope="session")
def checkerboard() -> Callable[[int], Image.Image]:
    """A red-and-white board of 8x8 squares, `side` pixels wide."""
    return _checkerboard


@pytest.fixture(scope="session")
def png_bytes() -> Callable[[Image.Image], bytes]:
    return _png_bytes


@pytest.fixture(scope="session")
def render_text() -> Callable[..., Image.Image]:
    return _render_text


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def _write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write


@pytest.fixture
def text_pdf(tmp_path: Path) -> Path:
    """Three pages with a text layer; page 2 also holds a 64x64 picture and an 8x8 dot."""
    pdf = FPDF()
    pdf.set_compression(False)  # plain content streams, so a test can damage one page
    pdf.set_font("helvetica", size=14)
    for number, sentence in enumerate(PDF_SENTENCES, start=1):
        pdf.add_page()
        pdf.cell(0, 10, sentence)
        if number == 2:
            pdf.image(_checkerboard(64), x=20, y=40, w=30)
            pdf.image(_checkerboard(8), x=80, y=40, w=5)
    path = tmp_path / "report.pdf"
    pdf.output(str(path))
    return path


@pytest.fixture
def scanned_pdf(tmp_path: Path, invoice_image: Image.Image) -> Path:
    """A single page that is only a picture of text, as a scanner produces (written by PIL)."""
    path = tmp_path / "scan.pdf"
    invoice_image.save(path, format="PDF", resolution=100)
    return path


@pytest.fixture
def encrypted_pdf(text_pdf: Path, tmp_path: Path) -> Path:
    writer = PdfWriter(clone_from=PdfReader(text_pdf))
    writer.encrypt("secret")
    path = tmp_path / "locked.pdf"
    writer.write(path)
    return path


@pytest.fixture
def owner_only_pdf(text_pdf: Path, tmp_path: Path) -> Path:
    """Encrypted with an empty user password: any reader may open it."""
    writer = PdfWriter(clone_from=PdfReader(text_pdf))
    writer.encrypt(user_password="", owner_password="secret")
    path = tmp_path / "restricted.pdf"
    writer.write(path)
    return path


@pytest.fixture
def docx_file(tmp_path: Path) -> Path:
    """Title, two headed sections over four pages, a table and an inline picture on page 2."""
    document = docx.Document()
    document.add_heading("Annual Report", level=0)  # style "Title"
    document.add_heading("Introduction", level=1)
    document.add_paragraph("Our cooperative grows heirloom tomatoes.")
    document.add_page_break()
    document.add_heading("Results", level=1)
    document.add_paragraph("Harvest doubled compared to last season.")
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(table.rows, (("Crop", "Tonnes"), ("Tomatoes", "42")), strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_picture(io.BytesIO(_png_bytes(_checkerboard(64))))
    split = document.add_paragraph("Text before the break.")
    run = split.add_run()
    run.add_break(WD_BREAK.PAGE)
    # Word marks where it broke the page last time it laid the document out: the same break again
    run._r.append(OxmlElement("w:lastRenderedPageBreak"))
    split.add_run(" Text after the break.")
    document.add_paragraph("Closing remarks on page three.")
    # a page Word broke by itself (text overflow): only the rendered mark records it
    appendix = document.add_paragraph().add_run("Appendix on page four.")
    appendix._r.insert(0, OxmlElement("w:lastRenderedPageBreak"))
    path = tmp_path / "report.docx"
    document.save(str(path))
    return path


def _download_pypdf_sdist(cache: Path) -> Path:
    """pypdf's sdist ships its test corpus under resources/; fetch it once per machine."""
    pinned = version("pypdf")
    resources = cache / f"pypdf-{pinned}" / "resources"
    if resources.is_dir():
        return resources
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"pypdf=={pinned}", "-d", scratch],
            check=True, capture_output=True, timeout=300,
        )
        archive = next(Path(scratch).glob("pypdf-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        # rename into place last, so an interrupted run never leaves a half-extracted corpus behind
        extracted = Path(scratch) / f"pypdf-{pinned}"
        target = cache / f"pypdf-{pinned}"
        if not target.exists():
            shutil.move(str(extracted), str(target))
    return resources


@pytest.fixture(scope="session")
def pypdf_resources() -> Path:
    configured = os.environ.get("LOUPE_PYPDF_RESOURCES")
    if configured:
        path = Path(configured)
        assert path.is_dir(), f"LOUPE_PYPDF_RESOURCES={configured} is not a directory"
        # accept the unpacked sdist as well as its resources/ folder
        return path / "resources" if (path / "resources").is_dir() else path
    try:
        return _download_pypdf_sdist(REPO_ROOT / ".cache" / "pypdf-sdist")
    except (subprocess.SubprocessError, OSError, StopIteration) as exc:
        pytest.skip(f"pypdf sdist not available (set LOUPE_PYPDF_RESOURCES or allow PyPI): {exc}")
