"""HTML pages (stdlib html.parser): visible text in paragraphs, under the nearest h1-h6."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from pathlib import Path

from ingest.ocr import OcrEngine
from ingest.parsed import ParsedFile, TextBlock
from ingest.readers.text import decode_text

_HIDDEN = frozenset({"script", "style", "noscript", "template", "head"})
_BLOCKS = frozenset({
    "p", "div", "li", "tr", "td", "th", "br", "section", "article", "pre", "blockquote", "ul", "ol",
    "table", "dl", "dt", "dd", "header", "footer", "nav", "main", "aside", "figure", "figcaption", "hr",
    "form", "address", "details", "summary", "caption", "body",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def read_html(path: Path, data: bytes, ocr: OcrEngine | None) -> ParsedFile:
    parser = _TextParser()
    parser.feed(_decode(path, data))
    parser.close()
    blocks = parser.finish()
    return ParsedFile(path=path, kind="html", page_count=1, items=iter(blocks))


def _decode(path: Path, data: bytes) -> str:
    declared = _declared_charset(data[:4096])
    has_bom = data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if declared is not None and not has_bom:  # a byte order mark outranks the declaration
        try:
            return data.decode(declared)
        except UnicodeDecodeError:
            pass  # a wrong declaration is common: fall back to detection
    return decode_text(path, data)


def _declared_charset(head: bytes) -> str | None:
    match = _META_CHARSET.search(head)
    if match is None:
        return None
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None
    if name in ("utf-16", "utf-16-le", "utf-16-be"):
        return None  # a declaration readable as ASCII cannot be in UTF-16: the file lies
    # browsers (WHATWG Encoding) read latin-1 and ASCII labels as Windows-1252
    return "cp1252" if name in ("latin-1", "iso8859-1", "ascii") else name


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[TextBlock] = []
        self._hidden: list[str] = []  # open hidden elements, innermost last
        self._buffer: list[str] = []
        self._heading: str | None = None
        self._in_heading = False
        self._in_title = False
        self._title_seen = False
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "head" in self._hidden and (tag == "body" or tag in _BLOCKS or tag in _HEADINGS):
            self._hidden.remove("head")  # </head> and <body> are optional: content ends the head
        if tag in _HIDDEN or (tag == "title" and self._title_seen):
            self._hidden.append(tag)  # later <title>s are SVG tooltips, not the page's title
        elif tag == "title":
            self._flush()
            self._in_title = self._title_seen = True
        elif tag in _HEADINGS:
            self._flush()
            self._in_heading = True
        elif tag in _BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._hidden:
            # close whatever was left open inside too: an unclosed tag must not hide the rest of the page
            while self._hidden.pop() != tag:
                pass
        elif tag == "title" and self._in_title:
            title = self._take()
            self._in_title = False
            if title:
                # the title heads the text until the first h1-h6
                self.blocks.append(TextBlock(page=1, text=title))
                self._heading = title
        elif tag in _HEADINGS and self._in_heading:
            self._heading = self._take() or self._heading
            self._in_heading = False
        elif tag in _BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden and not self._in_title:
            return
        self._buffer.append(data if self._pre_depth else _SPACE.sub(" ", data))

    def finish(self) -> list[TextBlock]:
        self._flush()
        return self.blocks

    def _take(self) -> str:
        text = "".join(self._buffer)
        self._buffer.clear()
        return text.strip("\n") if self._pre_depth else _SPACE.sub(" ", text).strip()

    def _flush(self) -> None:
        if self._in_heading or self._in_title:
            return  # a block tag inside a heading (<h2><br>...) does not end the heading
        text = self._take()
        if text.strip():
            self.blocks.append(TextBlock(page=1, text=text, heading=self._heading))
