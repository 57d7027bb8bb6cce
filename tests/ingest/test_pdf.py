"""The PDF reader (ingest.readers.pdf): its text layer on small real PDFs built here, as ingest reads and chunks
it, and its cost (each page's content stream parsed once) on those and on pypdf's own test PDFs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from ingest.chunking import ChunkBudget, chunk_blocks
from ingest.parsed import IngestError, TextBlock
from ingest.readers import pdf as pdf_reader
from ingest.readers import read_file
from rag.sentences import split_sentences
from tests.builders import make_pdf

CHAPTER = ["Chapter 2", "The ASN.1 structure handling of the library is described in this chapter. Each definition "
           "is read from a file before any structure is built from it, and the parser is case sensitive."]
SECTION = ["2.4 Library Notes", "The header file of this library is libtasn1.h."]


def page_texts(path: Path) -> list[str]:
    return [item.text for item in read_file(path, None).items if isinstance(item, TextBlock)]


def test_a_heading_keeps_its_own_line_and_a_wrapped_paragraph_does_not_break(tmp_path):
    pdf = make_pdf(tmp_path / "chapter.pdf", [CHAPTER, SECTION])
    chapter, section = page_texts(pdf)
    assert chapter.startswith("Chapter 2\n\nThe ASN.1")
    assert "\n\n" not in chapter.removeprefix("Chapter 2\n\n") and chapter.count("\n") > 2  # wrapped, not broken
    assert section == "2.4 Library Notes\n\nThe header file of this library is libtasn1.h."


def test_a_pdf_chapter_heading_is_not_quoted_with_its_first_sentence(tmp_path, text_embedder):
    """Read and chunked as ingest does, then cut as the answer's quotes and the grounding check cut a chunk."""
    pdf = make_pdf(tmp_path / "chapter.pdf", [CHAPTER])
    chunks = list(chunk_blocks(read_file(pdf, None).items, text_embedder.count_tokens_batch, ChunkBudget(256, 0)))
    sentences = [" ".join(sentence.split()) for sentence in split_sentences(chunks[0].text)]  # lines wrap in a PDF
    assert sentences == [CHAPTER[0], *split_sentences(CHAPTER[1])]


# --- each page's content stream parsed once ---------------------------------------------------------------------
ALWAYS = re.compile(rb"")  # the reader before: every page's stream parsed again to list its inline images
SMALL_PDF = 150_000  # bytes: pypdf's test PDFs up to this size are compared (the largest alone take seconds)
SLOW_PDFS = {"issue-301.pdf"}  # small, but half a minute of the comparison on 2 cores


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    """Counts pypdf's real content-stream parses (which still run)."""
    counted: list[int] = []
    parse = ContentStream._parse_content_stream

    def counting(stream: ContentStream, *args: object) -> None:
        counted.append(1)
        parse(stream, *args)

    monkeypatch.setattr(ContentStream, "_parse_content_stream", counting)
    return counted


def readout(path: Path) -> list[tuple[str, int, str]]:
    """What the reader gives: each item's kind, page and text (an image: its name and a digest of its bytes)."""
    try:
        items = list(read_file(path, None).items)
    except IngestError as refused:
        return [("refused", 0, refused.reason)]
    return [(type(item).__name__, item.page, item.text if isinstance(item, TextBlock)
             else f"{item.name} {hashlib.sha256(item.data).hexdigest()}") for item in items]


def test_a_page_without_images_is_parsed_once(tmp_path, parses):
    """Text extraction parses each page's stream; listing its inline images parsed it again. (A page with image
    XObjects still is: pypdf's page.images parses the stream to list the ids it holds.)"""
    pdf = make_pdf(tmp_path / "three.pdf", [[CHAPTER[1]], SECTION, ["A third page."]])
    assert [kind for kind, _, _ in readout(pdf)] == ["TextBlock"] * 3
    assert len(parses) == 3


def test_the_reader_gives_the_same_items_as_when_it_parsed_every_page_twice(pypdf_resources, monkeypatch):
    pdfs = sorted(path for path in pypdf_resources.rglob("*.pdf")
                  if path.stat().st_size <= SMALL_PDF and path.name not in SLOW_PDFS)
    assert len(pdfs) > 40
    now = {path.name: readout(path) for path in pdfs}
    monkeypatch.setattr(pdf_reader, "_INLINE_IMAGE", ALWAYS)
    before = {path.name: readout(path) for path in pdfs}
    assert now == before
    inline = PdfReader(pypdf_resources / "reportlab-inline-image.pdf").pages[0]
    assert [key for key, _ in pdf_reader._inline_images(inline)] == [["~0~"]]  # one is there, and still found
