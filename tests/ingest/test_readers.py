"""Readers on real files: built here in tmp_path, and pypdf's corpus of real-world PDFs."""

from __future__ import annotations

import codecs
import gc
import io
import multiprocessing
import random
import tracemalloc
import types
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import docx
import pytest
from docx.enum.section import WD_SECTION
from fpdf import FPDF
from PIL import Image
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.generic import NameObject

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, PageImage, ParsedFile, TextBlock
from ingest.readers import SUPPORTED_SUFFIXES, read_file
from ingest.readers._images import as_png
from ingest.readers.pdf import RUNNING_WINDOW

Write = Callable[[str, bytes], Path]
Board = Callable[[int], Image.Image]
Png = Callable[[Image.Image], bytes]


def consume(parsed: ParsedFile) -> tuple[list[TextBlock], list[PageImage]]:
    items = list(parsed.items)
    texts = [item for item in items if isinstance(item, TextBlock)]
    images = [item for item in items if isinstance(item, PageImage)]
    assert len(texts) + len(images) == len(items)
    pages = [item.page for item in items]
    assert pages == sorted(pages), "items must come in page order"
    return texts, images


def reason_of(path: Path, ocr: OcrEngine | None = None) -> str:
    with pytest.raises(IngestError) as caught:
        parsed = read_file(path, ocr)
        consume(parsed)
    assert caught.value.path == str(path)
    return caught.value.reason


# --- dispatch ---------------------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == {
        ".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".docx",
        ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp",
    }


def test_unsupported_suffix_names_it_and_the_supported_ones(write: Write) -> None:
    reason = reason_of(write("table.xyz", b"a,b\n1,2\n"))
    assert reason.startswith("unsupported file type '.xyz' (supported: ")
    assert ".pdf" in reason and ".docx" in reason


def test_suffix_is_matched_case_insensitively(write: Write) -> None:
    parsed = read_file(write("NOTES.TXT", b"hello there"), None)
    assert parsed.kind == "text"


@pytest.mark.parametrize("name", ["empty.pdf", "empty.txt", "empty.png", "empty.docx"])
def test_empty_file(write: Write, name: str) -> None:
    assert reason_of(write(name, b"")) == "empty file"


# --- PDF --------------------------------------------------------------------------------------


def test_pdf_text_lands_on_its_page(text_pdf: Path, pdf_sentences: tuple[str, ...]) -> None:
    parsed = read_file(text_pdf, None)
    assert (parsed.kind, parsed.page_count) == ("pdf", 3)
    assert isinstance(parsed.items, types.GeneratorType), "PDF pages must be read lazily"
    texts, _ = consume(parsed)
    assert [block.page for block in texts] == [1, 2, 3]
    for block, sentence in zip(texts, pdf_sentences, strict=True):
        assert block.text == sentence
        assert block.heading is None and not block.ocr
    assert parsed.warnings == []


def test_pdf_images_are_decodable_and_tiny_ones_skipped(text_pdf: Path) -> None:
    _, images = consume(read_file(text_pdf, None))
    assert len(images) == 1, "the 8x8 dot must be skipped"
    assert images[0].page == 2
    with Image.open(io.BytesIO(images[0].data)) as image:
        image.load()
        assert image.size == (64, 64)
        assert image.convert("RGB").getpixel((12, 4)) == (200, 30, 30)


def test_pdf_image_that_does_not_decode_is_skipped(tmp_path: Path, checkerboard: Board) -> None:
    buffer = io.BytesIO()
    checkerboard(120).save(buffer, format="JPEG")
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.cell(0, 10, "Photo page")
    # fpdf2 embeds JPEG bytes as they are, so the PDF carries a truncated JPEG stream
    pdf.image(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]), x=10, y=30, w=50)
    path = tmp_path / "photo.pdf"
    pdf.output(str(path))

    parsed = read_file(path, None)
    texts, images = consume(parsed)
    assert [block.text for block in texts] == ["Photo page"] and images == []
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("page 1: skipped undecodable image /I1: image file is truncated")


def test_images_pil_cannot_store_as_png_are_converted() -> None:
    """The fallback for raw image streams PIL cannot open: re-encode what pypdf decoded."""
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))
    with Image.open(io.BytesIO(as_png(cmyk))) as image:
        assert image.format == "PNG" and image.size == (40, 40)
        assert image.convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_scanned_pdf_is_read_by_ocr(scanned_pdf: Path, ocr_engine: OcrEngine) -> None:
    parsed = read_file(scanned_pdf, ocr_engine)
    texts, images = consume(parsed)
    assert len(texts) == 1 and texts[0].ocr and texts[0].page == 1
    assert "4711" in texts[0].text and "invoice" in texts[0].text.lower()
    assert len(images) == 1


def test_scanned_pdf_without_ocr_warns(scanned_pdf: Path) -> None:
    parsed = read_file(scanned_pdf, None)
    texts, images = consume(parsed)
    assert texts == [] and len(images) == 1
    assert parsed.warnings == ["page 1: no text layer and OCR is disabled"]


def test_truncated_pdf(text_pdf: Path, write: Write) -> None:
    data = text_pdf.read_bytes()
    reason = reason_of(write("cut.pdf", data[: len(data) // 3]))
    assert reason.startswith("corrupt or truncated PDF (")


def test_not_a_pdf_at_all(write: Write) -> None:
    assert reason_of(write("fake.pdf", b"this is a text file with a pdf name\n")).startswith(
        "corrupt or truncated PDF"
    )


def test_encrypted_pdf_needs_password(encrypted_pdf: Path) -> None:
    assert reason_of(encrypted_pdf) == "encrypted PDF (password required)"


def test_pdf_with_empty_user_password_opens(owner_only_pdf: Path, pdf_sentences: tuple[str, ...]) -> None:
    texts, _ = consume(read_file(owner_only_pdf, None))
    assert [block.text for block in texts] == list(pdf_sentences)


def test_broken_page_becomes_a_warning(
    text_pdf: Path, tmp_path: Path, pdf_sentences: tuple[str, ...]
) -> None:
    """A page whose content stream does not decode must not stop the pages after it."""
    writer = PdfWriter(clone_from=PdfReader(text_pdf))
    stream = writer.pages[1]["/Contents"].get_object()
    stream[NameObject("/Filter")] = NameObject("/LZWDecode")
    stream.set_data(b"\xff" * 5)  # not LZW data: decoding fails
    path = tmp_path / "damaged.pdf"
    writer.write(path)

    parsed = read_file(path, None)
    texts, _ = consume(parsed)
    assert [(block.page, block.text) for block in texts] == [(1, pdf_sentences[0]), (3, pdf_sentences[2])]
    # pypdf finds a page's images through its content stream too, so both fail, each with a warning
    assert [warning.split(":")[:2] for warning in parsed.warnings] == [
        ["page 2", " could not extract text"],
        ["page 2", " could not list images"],
    ]


# Four times the reader's flush period (ingest.readers.pdf.CACHE_PAGES = 32): each half of the file spans two flushes
LONG_PDF_PAGES = 128
SAMPLE_EVERY = 8  # pages between two memory samples


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for number in range(1, LONG_PDF_PAGES + 1):
        pdf.add_page()
        text = f"Page {number}. " + "Lorem ipsum dolor sit amet. " * 30
        for start in range(0, len(text), 95):  # one cell a line: 7x faster to lay out than multi_cell
            pdf.cell(0, 5, text[start:start + 95], new_x="LMARGIN", new_y="NEXT")
    path = tmp_path_factory.mktemp("long") / "long.pdf"
    pdf.output(str(path))
    return path


def test_long_pdf_is_read_page_by_page(long_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither read_file nor the first item may extract the whole document."""
    extracted: list[int] = []  # counts pypdf's real text extraction, which still runs
    extract_text = PageObject.extract_text

    def counted(page: PageObject, *args: object, **kwargs: object) -> str:
        extracted.append(1)
        return extract_text(page, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", counted)
    parsed = read_file(long_pdf, None)
    assert extracted == []
    first = next(parsed.items)
    assert len(extracted) == 1 + RUNNING_WINDOW  # the pages ahead that running headers are compared with
    rest = list(parsed.items)
    assert isinstance(first, TextBlock) and first.text.startswith("Page 1.")
    last = LONG_PDF_PAGES
    assert len(rest) == last - 1 and rest[-1].page == last and rest[-1].text.startswith(f"Page {last}.")
    assert len(extracted) == last


def _reachable_bytes() -> int:
    gc.collect()  # garbage awaiting the cycle collector is not a leak
    return tracemalloc.get_traced_memory()[0]


def _memory_while_reading(path: Path) -> list[int]:
    """The bytes in use every SAMPLE_EVERY pages while the reader walks `path`."""
    parsed = read_file(path, None)
    tracemalloc.start()
    try:
        return [_reachable_bytes() for number, _ in enumerate(parsed.items) if number % SAMPLE_EVERY == 0]
    finally:
        tracemalloc.stop()


def test_long_pdf_memory_stays_flat(long_pdf: Path) -> None:
    """pypdf caches every object it parses; the reader must not let that grow with the page count."""
    # Measured in a fresh process: each sample's full garbage collection walks every object of the process, and
    # in the suite's own process (models, apps, a browser's driver loaded) the 16 samples took most of 40 s.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_use = pool.submit(_memory_while_reading, long_pdf).result()
    half = len(in_use) // 2
    first_half, second_half = max(in_use[:half]), max(in_use[half:])
    # unbounded caching costs about 5 KB per page here: over 300 KB across the 64 pages of the second half (checked
    # with CACHE_PAGES set past the page count); the flushes' saw-tooth moves the halves' peaks by under 50 KB
    assert second_half - first_half < 100_000, (first_half, second_half)


# --- real-world PDFs from pypdf's test corpus ---------------------------------------------------


def _read_resource(path: Path) -> tuple[str | None, str, int]:
    """(the refusal's reason or None, the text, how many pictures) of one corpus PDF, read in a worker process.
    Any exception but IngestError propagates and fails the test with its traceback."""
    try:
        parsed = read_file(path, None)
        blocks, pictures = consume(parsed)
    except IngestError as exc:
        return exc.reason, "", 0
    assert parsed.page_count >= 1
    assert all(1 <= item.page <= parsed.page_count for item in (*blocks, *pictures)), path.name
    for picture in pictures:
        with Image.open(io.BytesIO(picture.data)) as decoded:
            decoded.load()
    return None, "\n".join(block.text for block in blocks), len(pictures)


def test_every_pypdf_resource_pdf_reads_or_fails_cleanly(pypdf_resources: Path) -> None:
    # Biggest first: issue-604.pdf alone is half the parsing, so one worker reads it while the other reads the rest
    pdfs = sorted(pypdf_resources.rglob("*.pdf"), key=lambda path: (-path.stat().st_size, path))
    assert len(pdfs) >= 60, f"expected pypdf's ~72 test PDFs, found {len(pdfs)}"
    # pypdf's parsing is pure Python on one core: two processes use both
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = dict(zip((path.relative_to(pypdf_resources).as_posix() for path in pdfs),
                           pool.map(_read_resource, pdfs), strict=True))
    refused = {name: reason for name, (reason, _, _) in results.items() if reason is not None}
    text = {name: body for name, (reason, body, _) in results.items() if reason is None}
    images = {name: count for name, (reason, _, count) in results.items() if reason is None}

    assert "The Crazy Ones" in text["crazyones.pdf"] and "troublemakers" in text["crazyones.pdf"]
    assert "Hello World" in text["hello-world.pdf"] and "Привет, мир" in text["hello-world.pdf"]
    assert "text without a meaning" in text["pdflatex-outline.pdf"]
    assert "National Hydro Network" in text["GeoBase_NHNC1_Data_Model_UML_EN.pdf"]
    assert text["jpeg.pdf"] == "A PDF with a JPEG image." and images["jpeg.pdf"] == 1
    assert len(text["issue-604.pdf"]) > 100_000
    # a user password refuses the file, with the reason
    assert refused["encrypted-file.pdf"] == "encrypted PDF (password required)"
    assert refused["encryption/r2-user-password.pdf"] == "encrypted PDF (password required)"
    # RC4 with an empty user password, or only an owner password: opens without asking
    assert text["encryption/r3-empty-password.pdf"].startswith("pdf encryption test")
    assert text["encryption/r2-owner-password.pdf"].startswith("pdf encryption test")
    clean_reasons = ("encrypted PDF (", "corrupt or truncated PDF (")
    assert all(reason.startswith(clean_reasons) for reason in refused.values()), refused
    assert len(text) > 2 * len(refused), "most of the corpus must be readable"


# --- plain text and Markdown ------------------------------------------------------------------


def test_text_paragraphs(write: Write) -> None:
    parsed = read_file(write("notes.txt", b"First line\nsame paragraph\n\n  \n\nSecond paragraph.\n"), None)
    assert (parsed.kind, parsed.page_count) == ("text", 1)
    texts, _ = consume(parsed)
    assert [block.text for block in texts] == ["First line\nsame paragraph", "Second paragraph."]
    assert all(block.page == 1 and block.heading is None for block in texts)


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_unicode_with_bom(write: Write, codec: str) -> None:
    text = "Grüße aus Köln\r\n\r\nСъешь же ещё этих булок 🍞"
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    texts, _ = consume(read_file(write("greeting.txt", data), None))
    assert [block.text for block in texts] == ["Grüße aus Köln", "Съешь же ещё этих булок 🍞"]


@pytest.mark.parametrize(
    ("codec", "text"),
    [
        ("cp1252", "Le cœur a ses raisons. Prix : 12 € — « très » cher, naïve façade, crème brûlée."),
        ("latin-1", "Grüße aus Köln, schöne Straße, Müller und Söhne."),
        ("cp1251", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
    ],
)
def test_legacy_encodings_are_detected(write: Write, codec: str, text: str) -> None:
    texts, _ = consume(read_file(write("legacy.txt", text.encode(codec)), None))
    assert [block.text for block in texts] == [text]


def test_image_named_txt_is_read_as_the_image(write: Write, checkerboard: Board, png_bytes: Png) -> None:
    """The bytes choose the reader, not the name (ingest.sniff); the user is told."""
    parsed = read_file(write("photo.txt", png_bytes(checkerboard(40))), None)
    assert parsed.kind == "image"
    assert parsed.warnings[0] == "named .txt but is a PNG image; read as PNG"


def test_undecodable_bytes(write: Write) -> None:
    noise = random.Random(4711).randbytes(4000).replace(b"\x00", b"\x01")
    assert reason_of(write("noise.txt", noise)) in ("unknown text encoding", "binary content, not text")


def test_markdown_headings_and_front_matter(write: Write) -> None:
    source = """---
title: Internal metadata that must not be indexed
tags: [a, b]
---
Intro before any heading.

# Getting started ##

Install the package.
Then run it.

Configuration
=============

Set the port.

```sh
# not a heading, a shell comment

echo done
```

### Deep   dive
Details here.

Troubleshooting
---
Restart it.

***

After a thematic break.
"""
    parsed = read_file(write("guide.md", source.encode()), None)
    assert (parsed.kind, parsed.page_count) == ("markdown", 1)
    texts, _ = consume(parsed)
    got = [(block.heading, block.text) for block in texts]
    assert got == [
        (None, "Intro before any heading."),
        ("Getting started", "Install the package.\nThen run it."),
        ("Configuration", "Set the port."),
        ("Configuration", "```sh\n# not a heading, a shell comment\n\necho done\n```"),
        ("Deep   dive", "Details here."),
        ("Troubleshooting", "Restart it."),
        ("Troubleshooting", "After a thematic break."),
    ]
    assert "metadata" not in " ".join(block.text for block in texts)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b"---\ntitle: never closed\n\nJust text.\n", ["title: never closed", "Just text."]),
        (b"---\nA rule above, not YAML.\n\n---\n\nBody.\n", ["A rule above, not YAML.", "Body."]),
    ],
)
def test_markdown_that_only_looks_like_front_matter_keeps_its_text(
    write: Write, source: bytes, expected: list[str]
) -> None:
    texts, _ = consume(read_file(write("odd.markdown", source), None))
    assert [block.text for block in texts] == expected


# --- HTML -------------------------------------------------------------------------------------


HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Field   Guide</title>
<style>body { color: red; }</style>
<script>var secret = "<p>not text</p>";</script>
</head>
<body>
<noscript>Enable JavaScript</noscript>
<template><p>template text</p></template>
<p>Opening words &amp; more.</p>
<h1>Birds</h1>
<div>Robins sing<br>at dawn.</div>
<ul><li>Sparrow</li><li>Wren</li></ul>
<h2>Water <em>birds</em></h2>
<table><tr><td>Heron</td><td>wading</td></tr></table>
<pre>  indented
    code</pre>
<p>Café au lait <svg><title>cup icon</title></svg></p>
</body></html>"""


def test_html_text_headings_and_hidden_content(write: Write) -> None:
    parsed = read_file(write("guide.html", HTML_PAGE.encode()), None)
    assert (parsed.kind, parsed.page_count) == ("html", 1)
    texts, _ = consume(parsed)
    got = [(block.heading, block.text) for block in texts]
    assert got == [
        ("Field Guide", "Opening words & more."),
        ("Birds", "Robins sing"),
        ("Birds", "at dawn."),
        ("Birds", "Sparrow"),
        ("Birds", "Wren"),
        ("Water birds", "Heron"),
        ("Water birds", "wading"),
        ("Water birds", "  indented\n    code"),
        ("Water birds", "Café au lait"),
    ]
    joined = " ".join(text for _, text in got)
    for hidden in ("color", "secret", "not text", "JavaScript", "template text", "icon"):
        assert hidden not in joined


def test_html_declared_legacy_charset(write: Write) -> None:
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>'
    page += "<body><p>Prix : 12 € — crème brûlée</p></body></html>"
    # latin-1 has no euro sign: browsers read the label as Windows-1252, and so must we
    texts, _ = consume(read_file(write("menu.htm", page.encode("cp1252")), None))
    assert [block.text for block in texts] == ["Prix : 12 € — crème brûlée"]


@pytest.mark.parametrize(
    "page",
    [
        b"<html><head><title>T</title><body><p>Visible body text.</p></body></html>",
        b"<html><head><title>T</title><p>Visible body text.",  # neither </head> nor <body>
    ],
)
def test_html_without_head_end_tag(write: Write, page: bytes) -> None:
    texts, _ = consume(read_file(write("sloppy.html", page), None))
    assert [block.text for block in texts] == ["Visible body text."]


def test_html_utf16_with_bom(write: Write) -> None:
    page = "<html><body><h3>Überblick</h3><p>Inhalt</p></body></html>".encode("utf-16")
    texts, _ = consume(read_file(write("page.html", page), None))
    assert [(block.heading, block.text) for block in texts] == [("Überblick", "Inhalt")]


# --- DOCX -------------------------------------------------------------------------------------


def test_docx_blocks_headings_pages_table_and_picture(docx_file: Path) -> None:
    parsed = read_file(docx_file, None)
    assert parsed.kind == "docx"
    texts, images = consume(parsed)
    got = [(block.page, block.heading, block.text) for block in texts]
    assert got == [
        (1, "Introduction", "Our cooperative grows heirloom tomatoes."),
        (2, "Results", "Harvest doubled compared to last season."),
        (2, "Results", "Crop | Tonnes"),
        (2, "Results", "Tomatoes | 42"),
        (2, "Results", "Text before the break."),
        (3, "Results", "Text after the break."),
        (3, "Results", "Closing remarks on page three."),
        (4, "Results", "Appendix on page four."),
    ]
    # the explicit break and Word's mark of the same break count once; the lone mark counts
    assert parsed.page_count == 4
    assert len(images) == 1 and images[0].page == 2
    with Image.open(io.BytesIO(images[0].data)) as image:
        assert image.size == (64, 64)
    assert parsed.warnings == []


def test_docx_section_breaks_and_page_break_before(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Chapter one.")
    document.add_section(WD_SECTION.NEW_PAGE)
    document.add_paragraph("Chapter two.")
    document.add_section(WD_SECTION.CONTINUOUS)  # a new section on the same page
    document.add_paragraph("Still page two.")
    document.add_paragraph("Forced onto a new page.").paragraph_format.page_break_before = True
    path = tmp_path / "sections.docx"
    document.save(str(path))

    parsed = read_file(path, None)
    texts, _ = consume(parsed)
    assert [(block.page, block.text) for block in texts] == [
        (1, "Chapter one."),
        (2, "Chapter two."),
        (2, "Still page two."),
        (3, "Forced onto a new page."),
    ]
    assert parsed.page_count == 3


def test_docx_that_is_not_a_zip(write: Write) -> None:
    assert reason_of(write("report.docx", b"PK\x03\x04 but not really a zip")).startswith("corrupt DOCX (")


def test_docx_without_document_part(write: Write) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/other.xml", "<x/>")
    assert reason_of(write("hollow.docx", buffer.getvalue())).startswith("corrupt DOCX (")


def test_docx_truncated(docx_file: Path, write: Write) -> None:
    data = docx_file.read_bytes()
    assert reason_of(write("cut.docx", data[: len(data) // 2])).startswith("corrupt DOCX (")


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_image_file_is_passed_through(write: Write, fmt: str, checkerboard: Board) -> None:
    buffer = io.BytesIO()
    checkerboard(48).save(buffer, format=fmt)
    path = write(f"board.{fmt.lower()}", buffer.getvalue())
    parsed = read_file(path, None)
    assert (parsed.kind, parsed.page_count) == ("image", 1)
    texts, images = consume(parsed)
    assert texts == []
    assert images == [PageImage(page=1, data=buffer.getvalue(), name=path.name)]
    assert parsed.warnings == ["OCR is disabled: no text read from the image"]


def test_animated_gif_uses_first_frame(write: Write, checkerboard: Board) -> None:
    frames = [checkerboard(40), Image.new("RGB", (40, 40), "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    _, images = consume(read_file(write("anim.gif", buffer.getvalue()), None))
    assert len(images) == 1 and images[0].data == buffer.getvalue()


def test_image_with_ocr(
    write: Write, invoice_image: Image.Image, invoice_text: str, png_bytes: Png, ocr_engine: OcrEngine
) -> None:
    parsed = read_file(write("invoice.png", png_bytes(invoice_image)), ocr_engine)
    texts, images = consume(parsed)
    assert len(images) == 1 and len(texts) == 1
    assert texts[0].ocr and texts[0].page == 1
    assert "4711" in texts[0].text and "invoice" in texts[0].text.lower()
    assert texts[0].text.lower().split() == invoice_text.lower().split()
    assert parsed.warnings == []


def test_garbage_image(write: Write) -> None:
    assert reason_of(write("photo.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")).startswith(
        "image does not decode ("
    )


def test_truncated_image(write: Write, checkerboard: Board, png_bytes: Png) -> None:
    data = png_bytes(checkerboard(200))
    assert reason_of(write("cut.png", data[: len(data) // 2])).startswith("image does not decode (")


def test_decompression_bomb(write: Write, png_bytes: Png, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write("huge.png", png_bytes(Image.new("L", (1200, 1200), "white")))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # 1.44 Mpx: PIL only warns here
    assert reason_of(path).startswith("image too large to decode safely (")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)  # 1.44 Mpx > twice the limit: PIL raises
    assert reason_of(path).startswith("image too large to decode safely (")
