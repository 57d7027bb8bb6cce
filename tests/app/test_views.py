"""How the browser app shows things, without a browser: citation links, counts in words, the upload's overall
bar, and the browser's conversation list as the page carries it."""

from __future__ import annotations

import json
import re

from markdown_it import MarkdownIt

from rag.explore.image_tags import Tag
from rag.records import DocumentInfo
from rag.wording import counted
from service import ImageResult
from service.uploads import FileRow
from ui.images import show_images
from ui.page import BrowserChats, status_line
from ui.views import answer_markdown, overall_progress_html, sources_html

SOURCES = [{"number": 1, "file": "a.md", "page": 1, "text": "Alpha.", "score": 0.9, "heading": None, "cited": True},
           {"number": 2, "file": "b.pdf", "page": 3, "text": "Beta.", "score": 0.5, "heading": "Intro"},
           {"number": 3, "file": "c.html", "page": 1, "text": "Gamma.", "score": 0.4, "heading": "Install"}]


def test_citations_become_links_to_their_sources_and_nothing_else_does():
    shown = answer_markdown("Alpha holds [1], and [7] is no source. [x](javascript:alert(1)) [2](http://e.example)",
                            {"sources": SOURCES})
    assert "[\\[1\\]](#cite-1)" in shown
    assert "\\[7\\]" in shown and "#cite-7" not in shown  # a number with no source stays text
    # a document's own link syntax stays text: rendered, the cite links are the only links
    rendered = MarkdownIt("commonmark").render(shown)
    assert re.findall(r'href="([^"]*)"', rendered) == ["#cite-1", "#cite-2"]
    assert "javascript:alert(1)" in rendered  # shown as text


def test_source_cards_link_to_their_number_and_mark_the_selected_one():
    cards = sources_html(SOURCES, selected=2)
    assert cards.count("class='source-open' href='#cite-") == 3
    assert len(re.findall("<div class='source-card[ ']", cards)) == 3
    assert "<div class='source-card selected' data-source='2'><a class='source-open' href='#cite-2'>" in cards
    # a PDF is cited by page (and section); a web page by its section, never "p. 1"; no heading, the file alone
    assert "b.pdf, p. 3 · Intro" in cards and "c.html, § Install" in cards and "p. 1" not in cards
    assert "[1] ✓ a.md <span" in cards
    assert sources_html([]) == ""


def test_a_web_page_is_cited_by_its_section_and_its_anchor_and_opens_there_when_it_has_an_address():
    from rag.records import place

    address = "https://docs.example.org/faq.html#ports"
    sources = [{**SOURCES[2], "number": 1, "heading": "Ports {#ports}"},
               {**SOURCES[2], "number": 2, "heading": f"Ports {{{address}}}"},
               {**SOURCES[2], "number": 3, "heading": "Ports {javascript:alert(1)}"}]
    cards = sources_html(sources)
    assert "[1] c.html, § Ports (#ports) <span" in cards  # no address known: the anchor is said
    assert "[2] c.html, § Ports <span" in cards  # the address is a link, not words
    assert (f"<a class='source-web' href='{address}' target='_blank' rel='noopener noreferrer nofollow'>"
            "Open § Ports on the web ↗</a>") in cards
    assert cards.count("source-web") == 1 and "javascript:alert(1)" in cards and "href='javascript" not in cards
    # the CLI words it the same way (rag.records.place)
    assert place("c.html", 1, f"Ports {{{address}}}") == f"§ Ports ({address})"
    assert place("c.html", 1, "Ports {#ports}") == "§ Ports (#ports)"


def test_counts_are_said_in_the_right_number():
    assert [counted(n, "page") for n in (0, 1, 2)] == ["0 pages", "1 page", "2 pages"]
    row = FileRow("a.pdf")
    row.show_progress("parse", 1, 1)
    assert row.progress == "page 1 of 1"
    row.show_progress("embed", 1, 0)
    assert row.progress == "1 passage embedded"
    row.show_progress("done", 1, 1)
    assert row.progress == "1 page"
    empty = FileRow("empty.docx")  # a new user's empty template: "no text or images found"
    empty.show_progress("parse", 0, 1)
    assert empty.progress == "1 page to read"
    empty.fail("empty.docx: no text or images found")
    assert empty.progress == ""  # not "1 page to read" beside the failure
    halfway = FileRow("cut.pdf")
    halfway.show_progress("parse", 3, 10)
    halfway.fail("cut.pdf: corrupt or truncated PDF")
    assert halfway.progress == "page 3 of 10"  # where it stopped is worth knowing


def test_the_overall_bar_counts_files_and_estimates_the_time_left():
    rows = [FileRow("a", status="added"), FileRow("b"), FileRow("c")]
    bar = overall_progress_html(rows, elapsed=10)
    assert "1 of 3 files" in bar and "10 s elapsed" in bar and "about 20 s left" in bar
    assert "value='1' max='3'" in bar
    assert "estimating" in overall_progress_html([FileRow("a")], elapsed=3)
    assert "done" in overall_progress_html([FileRow("a", status="failed")], elapsed=75)
    assert "1 min 15 s elapsed" in overall_progress_html([FileRow("a", status="failed")], elapsed=75)


def test_the_bar_moves_page_by_page_while_a_scan_is_recognised():
    scan = FileRow("scan.pdf")
    scan.show_progress("ocr", 3, 4)  # page 3 begun: two of four read
    assert (scan.stage, scan.progress) == ("OCR", "page 3 of 4")
    bar = overall_progress_html([scan, FileRow("b.txt")], elapsed=30)
    assert "value='0.5' max='2'" in bar and "0 of 2 files" in bar
    assert "about 1 min 30 s left" in bar  # 0.5 of 2 files in 30 s: 1.5 files to go
    scan.show_progress("parse", 3, 4)
    assert scan.stage == "parse" and "value='0.75'" in overall_progress_html([scan], elapsed=1)


def test_a_fine_tune_that_made_the_check_worse_says_so_and_a_server_folder_is_named_by_its_own_name():
    from rag.finetune import CheckScore, FinetuneOptions, FinetuneReport
    from ui.views import finetune_report

    def report(before: float, after: float) -> FinetuneReport:
        return FinetuneReport("/srv/models/base-model", "/srv/out", {"heading": 30, "sentence": 40}, 12, 5,
                              CheckScore(before, before), CheckScore(after, after), FinetuneOptions(epochs=2))

    worse = finetune_report(report(0.8, 0.7), "default", "default-20261130-0600")
    assert "MRR 0.800 → 0.700" in worse and "70 training pairs (30 heading, 40 sentence), 2 epochs" in worse
    assert "The held-back check got worse" in worse and "Saved as **default\\-20261130\\-0600**" in worse
    assert "**Fine-tuned** base\\-model on" in worse and "/srv" not in worse  # never a server path
    assert "got worse" not in finetune_report(report(0.7, 0.8), "default", "x")


def test_the_browser_conversation_list_drops_what_is_malformed():
    chats = BrowserChats.parse("abcdefgh1234", json.dumps({"ids": ["zzzzzzzz0001", "../../etc", 5, "abcdefgh1234"]}))
    assert chats.current == "abcdefgh1234" and chats.ids == ["zzzzzzzz0001", "abcdefgh1234"]
    fresh = BrowserChats.parse(None, "not json")
    assert fresh.ids == [fresh.current] and len(fresh.current) >= 8
    started = chats.start()
    assert chats.current == started and chats.ids[-1] == started
    assert json.loads(chats.carried()) == {"current": started, "ids": chats.ids}


def test_a_gallery_caption_carries_the_images_zero_shot_tags_when_known():
    results = [ImageResult("harbour.pdf", 2, "p2-img1", 0.31, "/tmp/a.png", image_id=7),
               ImageResult("cat.png", 1, "cat.png", 0.28, "/tmp/b.png", image_id=8)]
    items, note = show_images(results, {7: [Tag("a lighthouse", 0.27), Tag("the sea", 0.22)]})
    assert items[0][1] == "harbour.pdf, page 2 (0.310) · a lighthouse 0.27 · the sea 0.22"
    assert items[1][1] == "cat.png, page 1 (0.280)" and note.startswith("2 images")


def test_the_library_row_ends_with_the_documents_image_tags_or_why_it_has_none():
    from rag.records import DocumentInfo
    from ui.documents import LIBRARY_HEADERS, TAGS_SHOWN, library_rows

    def document(number: int, images: int, waiting: int = 0) -> DocumentInfo:
        return DocumentInfo(number, f"d{number}.pdf", "/d", "pdf", "sha", 2048, 1, 3, images, waiting,
                            "2026-11-30T08:00:00Z")

    tags = {1: [Tag(f"label {i}", 0.3 - i / 100) for i in range(TAGS_SHOWN + 2)]}
    documents = [document(1, 2), document(2, 0), document(3, 1, waiting=1), document(4, 1)]
    rows = library_rows("default", documents, tags)
    assert LIBRARY_HEADERS[-1] == "Image tags" and all(len(row) == len(LIBRARY_HEADERS) for row in rows)
    assert rows[0][-1] == "label 0, label 1, label 2, label 3, label 4 (+2)"
    assert [row[-1] for row in rows[1:]] == ["", "waiting for CLIP", "tagging…"]
    assert library_rows("default", [document(4, 1)], {}, clip_on=False)[0][-1] == "waiting for CLIP"


def test_sizes_read_as_people_read_them():
    from ui.views import size_text

    assert [size_text(n) for n in (348, 2048, 3_565_158)] == ["348 B", "2 KB", "3.4 MB"]  # a small file: not "0 KB"


def test_the_passage_in_context_shows_the_text_neighbouring_chunks_share_once():
    from rag.records import ChunkRecord
    from ui.views import context_html

    def chunk(ordinal: int, text: str) -> ChunkRecord:
        return ChunkRecord(ordinal, 1, ordinal, "guide.pdf", "/guide.pdf", 1, None, text)

    shared = "The NULL constant can be used for the variable initialization."
    before, cited, after = (chunk(0, f"Declare the variable first. {shared}"),
                            chunk(1, f"{shared} Then call the parser. It reads the definitions file."),
                            chunk(2, "It reads the definitions file. Errors name the line."))
    shown = context_html([(before, False), (cited, True), (after, False)])
    assert shown.count("NULL constant") == 1 and shown.count("definitions file") == 1
    assert f"<mark>{shared} Then call the parser. It reads the definitions file.</mark>" in shown  # cited: whole
    assert "Declare the variable first.</p>" in shown and "Errors name the line.</p>" in shown


def test_a_failure_in_an_html_component_reads_as_it_is_written():
    """Regression: Explore's word-vector results (gr.HTML) showed Markdown's escapes, "no\\_telemetry"."""
    import numpy as np
    import pytest
    from gensim.models import KeyedVectors

    from rag.explore.word_vectors import OutOfVocabulary, known
    from ui import views

    vectors = KeyedVectors(vector_size=2)
    vectors.add_vectors(["telemetry", "no_telemetry"], np.eye(2, dtype=np.float32))
    with pytest.raises(OutOfVocabulary) as unknown:
        known(vectors, "telemetri")
    shown = views.failure_html(unknown.value, "find neighbours")
    assert shown.startswith("⚠ &#x27;telemetri&#x27; is not in the word vectors")
    assert shown.endswith("closest known spellings: telemetry, no_telemetry") and "\\" not in shown
    assert views.failure_html(OutOfVocabulary("<b>x</b> is unknown"), "x") == "⚠ &lt;b&gt;x&lt;/b&gt; is unknown"
    bug = views.failure_html(ValueError("<script>"), "draw the map")
    assert bug == "⚠ Loupe failed to draw the map (see the server log)"  # a bug's own text stays in the log


def test_the_status_line_says_one_document_not_one_documents():
    one = DocumentInfo(1, "a.pdf", "/x/a.pdf", "pdf", "0" * 64, 10, 1, 1, 1, 0, "2026-11-30")
    assert "1 document · 1 passage · 1 image" in status_line("docs", [one])
    assert "2 documents · 2 passages · 2 images" in status_line("docs", [one, one])
