"""Passages that read clean: what a new user found in real files (HTML titles, PDF running headers, dot leaders and
broken words, OCR text without line breaks), each on a small real file built here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image

from ingest.chunking import ChunkBudget, chunk_blocks
from ingest.ocr import OcrEngine
from ingest.parsed import ReadLimits, TextBlock
from ingest.readers.html import read_html
from ingest.readers.pdf import read_pdf


def _texts(items) -> list[TextBlock]:
    return [item for item in items if isinstance(item, TextBlock)]


def _word_counter(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


# --- (A) HTML: the title heads the text, it is not a passage -----------------------------------

OWNERSHIP_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>What is Ownership? - The Rust Programming Language</title></head>
<body><main><h1>What Is Ownership?</h1>
<p>Ownership is a set of rules that govern how a Rust program manages memory.</p>
<p>Each value in Rust has an owner, and there can only be one owner at a time.</p></main></body></html>"""


def test_html_title_heads_the_text_but_is_no_passage() -> None:
    blocks = _texts(read_html(Path("own.html"), OWNERSHIP_PAGE.encode(), None).items)
    assert [block.text for block in blocks] == [
        "Ownership is a set of rules that govern how a Rust program manages memory.",
        "Each value in Rust has an owner, and there can only be one owner at a time.",
    ]
    chunks = list(chunk_blocks(blocks, _word_counter, ChunkBudget(200, 20)))
    assert all("The Rust Programming Language" not in chunk.text for chunk in chunks), "no title-only chunk"


def test_html_text_before_the_first_heading_sits_under_the_title() -> None:
    page = "<html><head><title>Field Guide</title></head><body><p>Opening words.</p><h1>Birds</h1><p>Robins.</p>"
    blocks = _texts(read_html(Path("guide.html"), page.encode(), None).items)
    assert [(block.heading, block.text) for block in blocks] == [("Field Guide", "Opening words."),
                                                                  ("Birds", "Robins.")]


def test_html_page_with_only_a_title_keeps_it() -> None:
    page = b"<html><head><title>Release notes 4.2</title></head><body></body></html>"
    assert [block.text for block in _texts(read_html(Path("notes.html"), page, None).items)] == ["Release notes 4.2"]


# --- (B) PDF: running headers, page numbers, dot leaders, broken words -------------------------

CHAPTERS = {  # chapter title -> its pages' body text; headers change from chapter to chapter, as in a manual
    "Structure handling": [
        "The parser is case sensitive.",
        "Comments begin with two dashes.",
        "The identifier names a node.",
    ],
    "Utilities": [
        "The coder reads a definitions file.",
        "The decoder prints a value.",
        "Both tools report errors to the terminal.",
    ],
}


@pytest.fixture
def manual_pdf(tmp_path: Path) -> Path:
    """A manual as a typesetter makes one: a table of contents with dot leaders, chapters whose first page has
    only a page number at the top and later pages a "Chapter N: Title  page" header, a footer on every page,
    and a word hyphenated across a line break."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)  # the footer sits in the bottom margin
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.cell(0, 8, "Table of Contents", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 8, "1 Structure handling " + ". " * 30 + "1", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 8, "2 Utilities" + "." * 40 + " 4", new_x="LMARGIN", new_y="NEXT")
    folio = 1
    for number, (title, bodies) in enumerate(CHAPTERS.items(), start=1):
        for position, body in enumerate(bodies):
            pdf.add_page()
            header = str(folio) if position == 0 else f"Chapter {number}: {title} {folio}"
            pdf.cell(0, 8, header, new_x="LMARGIN", new_y="NEXT")
            if position == 0:
                pdf.cell(0, 8, f"{number} {title}", new_x="LMARGIN", new_y="NEXT")
            pdf.cell(0, 8, body, new_x="LMARGIN", new_y="NEXT")
            if (number, position) == (1, 2):
                pdf.cell(0, 8, "Each node has an iden-", new_x="LMARGIN", new_y="NEXT")
                pdf.cell(0, 8, "tifier and a well-known type; a well-", new_x="LMARGIN", new_y="NEXT")
                pdf.cell(0, 8, "known type is built in.", new_x="LMARGIN", new_y="NEXT")
            pdf.set_y(-20)
            pdf.cell(0, 8, "GNU Libtasn1 manual, draft edition")
            folio += 1
    path = tmp_path / "manual.pdf"
    pdf.output(str(path))
    return path


@pytest.fixture
def manual_pages(manual_pdf: Path) -> dict[int, str]:
    parsed = read_pdf(manual_pdf, manual_pdf.read_bytes(), None, ReadLimits())
    return {block.page: block.text for block in _texts(parsed.items)}


def test_pdf_running_headers_footers_and_page_numbers_are_dropped(manual_pages: dict[int, str]) -> None:
    assert sorted(manual_pages) == list(range(1, 8))
    for page, text in manual_pages.items():
        assert "Chapter" not in text, (page, text)
        assert "draft edition" not in text, (page, text)
        assert not text.split("\n")[0].strip().isdigit(), (page, text)  # no page number left at the top
    # a heading keeps a blank line after it, so that it ends before the sentence below it
    assert manual_pages[2].split("\n")[:3] == ["1 Structure handling", "", "The parser is case sensitive."]
    assert manual_pages[5].split("\n") == ["2 Utilities", "", "The coder reads a definitions file."]
    assert manual_pages[7] == "Both tools report errors to the terminal."


def test_pdf_dot_leaders_are_removed(manual_pages: dict[int, str]) -> None:
    assert manual_pages[1].split("\n") == ["Table of Contents", "1 Structure handling", "2 Utilities"]


def test_pdf_words_broken_at_a_line_end_are_joined_and_real_hyphens_kept(manual_pages: dict[int, str]) -> None:
    text = manual_pages[4]
    assert "identifier" in text and "iden-" not in text
    assert text.count("well-known") == 2, text  # the page writes it with its hyphen: the broken one keeps it


# --- (C) OCR: rows that are labels or headings end their sentence -------------------------------

def test_ocr_rows_that_stop_short_end_a_sentence(
    ocr_engine: OcrEngine, render_text: Callable[..., Image.Image]
) -> None:
    """A documentation screenshot: a version label, a name, then a sentence. Each row is a sentence of its own
    in the chunk, as the chunker and the answer's quotes cut it, instead of one run-on sentence."""
    screenshot = render_text(
        [(30, 30, "0.1.0"), (30, 110, "my_crate"), (30, 190, "In crate Adds one to the number given.")],
        (1000, 260),
    )
    block = TextBlock(page=1, text=ocr_engine.text_of(screenshot), ocr=True)
    [chunk] = chunk_blocks([block], _word_counter, ChunkBudget(200, 20))
    paragraphs = [" ".join(part.split()) for part in chunk.text.split("\n\n")]
    assert paragraphs == ["0.1.0", "my_crate", "In crate Adds one to the number given."], chunk.text
