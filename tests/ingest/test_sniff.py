"""detect_suffix: the reader comes from the real bytes (built here by the real libraries), not the client's name."""

from __future__ import annotations

import codecs
import gzip
import io
import zipfile

import docx
import pytest
from fpdf import FPDF
from PIL import Image

from ingest.readers import SUPPORTED_SUFFIXES
from ingest.sniff import SUPPORTED_SUFFIXES as SNIFFED_SUFFIXES
from ingest.sniff import detect_suffix

TEXT = b"Plain notes about the harbor relay.\nSecond line.\n"


def _image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def _pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(text="A real PDF page.")
    return bytes(pdf.output())


def _docx() -> bytes:
    document = docx.Document()
    document.add_paragraph("A real Word paragraph.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def samples() -> dict[str, bytes]:
    """One real file of each kind a reader takes."""
    images = {f".{fmt.lower()}": _image(fmt) for fmt in ("PNG", "GIF", "WEBP", "BMP")}
    return {".pdf": _pdf(), ".docx": _docx(), ".jpg": _image("JPEG"), **images}


KINDS = [".pdf", ".docx", ".jpg", ".png", ".gif", ".webp", ".bmp"]


def test_sniffed_suffixes_are_exactly_the_readers() -> None:
    assert SNIFFED_SUFFIXES == SUPPORTED_SUFFIXES


@pytest.mark.parametrize("suffix", KINDS)
def test_each_kind_under_its_own_name_is_read_as_named(samples: dict[str, bytes], suffix: str) -> None:
    assert detect_suffix(samples[suffix], suffix) == (suffix, None)
    assert detect_suffix(samples[suffix], suffix.upper()) == (suffix, None)


WRONG_NAMES = [(kind, name) for kind in KINDS for name in (".txt", ".md", ".html", ".png", ".xyz", "") if name != kind]


@pytest.mark.parametrize(("suffix", "claimed"), WRONG_NAMES)
def test_the_bytes_outrank_a_wrong_name(samples: dict[str, bytes], suffix: str, claimed: str) -> None:
    got, note = detect_suffix(samples[suffix], claimed)
    assert got == suffix
    assert note is not None and note.startswith(f"named {claimed or 'without a suffix'} but is ")


def test_the_note_says_what_the_file_is_and_how_it_is_read(samples: dict[str, bytes]) -> None:
    assert detect_suffix(samples[".pdf"], ".png") == (".pdf", "named .png but is a PDF; read as PDF")
    assert detect_suffix(samples[".docx"], ".txt") == (".docx", "named .txt but is a Word document; read as DOCX")


def test_jpeg_keeps_either_of_its_names(samples: dict[str, bytes]) -> None:
    assert detect_suffix(samples[".jpg"], ".jpeg") == (".jpeg", None)


def test_pdf_after_junk_within_the_first_kilobyte(samples: dict[str, bytes]) -> None:
    assert detect_suffix(b"\r\n" * 100 + samples[".pdf"], ".pdf") == (".pdf", None)
    assert detect_suffix(b"\r\n" * 100 + samples[".pdf"], ".bin")[0] == ".pdf"


@pytest.mark.parametrize(
    ("data", "claimed", "expected"),
    [
        (TEXT, ".txt", ".txt"),
        (TEXT, ".MD", ".md"),
        (TEXT, ".markdown", ".markdown"),
        (b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", ".html", ".html"),
        (b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", ".txt", ".txt"),  # harmless: read as text
        ("Über Köln\n".encode("utf-16"), ".txt", ".txt"),  # NUL bytes, but a BOM says UTF-16
        (codecs.BOM_UTF32_BE + "Über Köln\n".encode("utf-32-be"), ".md", ".md"),
        (b"Headers:\n%PDF-1.7 starts every PDF file.\n", ".md", ".md"),  # prose about PDFs is not a PDF
        (b"BMW and BMX bikes, listed by size and colour.\n", ".txt", ".txt"),  # 'BM' alone is not a bitmap
    ],
)
def test_text_keeps_its_claimed_text_type(data: bytes, claimed: str, expected: str) -> None:
    assert detect_suffix(data, claimed) == (expected, None)


@pytest.mark.parametrize("claimed", [".pdf", ".docx", ".png", ".jpg"])
def test_unrecognised_bytes_under_a_document_name_go_to_its_reader(claimed: str) -> None:
    """A damaged file of the claimed type: its reader says what is wrong with it."""
    assert detect_suffix(TEXT, claimed) == (claimed, None)
    assert detect_suffix(b"\x00\x01garbage\x00" * 10, claimed) == (claimed, None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_zip("notes.txt", "photo.png"), "looks like a ZIP archive"),
        (_zip("[Content_Types].xml", "xl/workbook.xml"), "looks like an Excel workbook"),
        (_zip("[Content_Types].xml", "ppt/presentation.xml"), "looks like a PowerPoint presentation"),
        (b"PK\x03\x04 cut short", "looks like a damaged ZIP archive"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"\x90" * 200, "looks like an executable program (ELF)"),
        (gzip.compress(TEXT), "looks like a gzip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "looks like a legacy Office file"),
        (b"some text\x00\x00\x00with NUL bytes", "looks like binary data"),
    ],
)
@pytest.mark.parametrize("claimed", [".txt", ".md", ".html"])
def test_other_archives_and_binaries_are_refused_with_a_reason(data: bytes, reason: str, claimed: str) -> None:
    suffix, note = detect_suffix(data, claimed)
    assert suffix == ""
    assert note is not None and note.startswith("not a supported document: ") and reason in note


def test_a_zip_named_docx_goes_to_the_docx_reader() -> None:
    """The DOCX reader explains a hollow or damaged one ('corrupt DOCX (...)')."""
    assert detect_suffix(_zip("word/other.xml"), ".docx") == (".docx", None)


def test_a_zip_with_too_many_entries_is_refused_before_listing_them() -> None:
    data = _zip(*(f"part{i}.xml" for i in range(10_001)))
    for claimed in (".docx", ".txt"):
        suffix, note = detect_suffix(data, claimed)
        assert suffix == "" and note is not None and "more than 10,000 entries" in note


@pytest.mark.parametrize("claimed", [".xyz", ".csv", ""])
def test_text_with_an_unsupported_name_is_refused_naming_the_supported_types(claimed: str) -> None:
    suffix, note = detect_suffix(TEXT, claimed)
    assert suffix == ""
    assert note is not None and note.startswith(f"unsupported file type '{claimed or 'without a suffix'}' (supported: ")
    assert all(supported in note for supported in SUPPORTED_SUFFIXES)
