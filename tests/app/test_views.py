"""How the browser app shows things, without a browser: citation links, counts in words, the upload's overall
bar, and the browser's conversation list as the page carries it."""

from __future__ import annotations

import json

from rag.wording import counted
from service.uploads import FileRow
from ui.page import BrowserChats
from ui.views import answer_markdown, overall_progress_html, sources_html

SOURCES = [{"number": 1, "file": "a.md", "page": 1, "text": "Alpha.", "score": 0.9, "heading": None, "cited": True},
           {"number": 2, "file": "b.pdf", "page": 3, "text": "Beta.", "score": 0.5, "heading": "Intro"},
           {"number": 3, "file": "c.html", "page": 1, "text": "Gamma.", "score": 0.4, "heading": "Install"}]


def test_citations_become_links_to_their_sources_and_nothing_else_does():
    shown = answer_markdown("Alpha holds [1], and [7] is no source. [x](javascript:alert(1)) [2](http://e.example)",
                            {"sources": SOURCES})
    assert "[\\[1\\]](#cite-1)" in shown
    assert "\\[7\\]" in shown and "#cite-7" not in shown  # a number with no source stays text
    # a document's own link syntax stays text: only the cite link is a link
    assert "javascript" in shown and "](javascript" not in shown and "](http" not in shown


def test_source_cards_link_to_their_number_and_mark_the_selected_one():
    cards = sources_html(SOURCES, selected=2)
    assert cards.count("<a class='source-card") == 3
    assert "href='#cite-2'" in cards and "source-card selected' href='#cite-2'" in cards
    # a PDF is cited by page (and section); a web page by its section, never "p. 1"; no heading, the file alone
    assert "b.pdf, p. 3 · Intro" in cards and "c.html, § Install" in cards and "p. 1" not in cards
    assert "[1] ✓ a.md <span" in cards
    assert sources_html([]) == ""


def test_counts_are_said_in_the_right_number():
    assert [counted(n, "page") for n in (0, 1, 2)] == ["0 pages", "1 page", "2 pages"]
    row = FileRow("a.pdf")
    row.show_progress("parse", 1, 1)
    assert row.progress == "page 1 of 1"
    row.show_progress("embed", 1, 0)
    assert row.progress == "1 passage embedded"
    row.show_progress("done", 1, 1)
    assert row.progress == "1 page"


def test_the_overall_bar_counts_files_and_estimates_the_time_left():
    rows = [FileRow("a", status="added"), FileRow("b"), FileRow("c")]
    bar = overall_progress_html(rows, elapsed=10)
    assert "1 of 3 files" in bar and "10 s elapsed" in bar and "about 20 s left" in bar
    assert "value='1' max='3'" in bar
    assert "estimating" in overall_progress_html([FileRow("a")], elapsed=3)
    assert "done" in overall_progress_html([FileRow("a", status="failed")], elapsed=75)
    assert "1 min 15 s elapsed" in overall_progress_html([FileRow("a", status="failed")], elapsed=75)


def test_the_browser_conversation_list_drops_what_is_malformed():
    chats = BrowserChats.parse("abcdefgh1234", json.dumps({"ids": ["zzzzzzzz0001", "../../etc", 5, "abcdefgh1234"]}))
    assert chats.current == "abcdefgh1234" and chats.ids == ["zzzzzzzz0001", "abcdefgh1234"]
    fresh = BrowserChats.parse(None, "not json")
    assert fresh.ids == [fresh.current] and len(fresh.current) >= 8
    started = chats.start()
    assert chats.current == started and chats.ids[-1] == started
    assert json.loads(chats.carried()) == {"current": started, "ids": chats.ids}
