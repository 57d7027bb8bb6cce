"""HTML pages: the main content in paragraphs under the nearest h1-h6 (the page's title before the first). Each
heading keeps its link (its anchor, on the page's own address when the page names one), so a citation can name and
open it.

lxml (libxml2, linear time) parses the page. trafilatura finds the main content and drops navigation,
sidebars and footers. Small pages, and pages where it falls back to dumping all text without headings, are
read whole: every visible block of text, as a browser would show it.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import lxml.html
import trafilatura
from lxml.etree import ParserError, _Element, strip_tags
from trafilatura.settings import DEFAULT_CONFIG

from ingest.ocr import OcrEngine
from ingest.parsed import ParsedFile, ReadLimits, TextBlock
from ingest.readers.text import decode_text
from rag.records import linked_heading

logger = logging.getLogger(__name__)

_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "title"})  # <title>s in <svg> are tooltips
_BLOCKS = frozenset({
    "p", "div", "li", "tr", "td", "th", "br", "section", "article", "pre", "blockquote", "ul", "ol",
    "table", "dl", "dt", "dd", "header", "footer", "nav", "main", "aside", "figure", "figcaption", "hr",
    "form", "address", "details", "summary", "caption", "body",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# No two adjacent parts may match the same characters: "\s*["']?\s*" made this regex cubic on a 4 KB head.
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=[\s"']*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# Below trafilatura's own minimum extraction size a page is too small to have boilerplate worth the risk.
_MIN_MAIN_CHARS = DEFAULT_CONFIG.getint("DEFAULT", "MIN_EXTRACTED_SIZE")
_DUMP_SHARE = 0.95  # an "extraction" with this share of the page's text and no headings is a whole-page dump
_LINKABLE = re.compile(r"[^\s{}<>\"'`\\]{1,500}")  # an address a citation may carry and the browser may link
_MAX_ANCHOR_CHARS = 200
_ANCHOR_SAFE = "-._~!$&()*+,;=:@/?"  # what a fragment keeps as it is; the rest is percent-encoded
# Inline code, and the inline formatting found inside it (Sphinx writes <code><span>/usr/lib/python2.</span><em>Y</em>
# ...</code>): trafilatura 2.3 puts formatting nested in code out of order (adbar/trafilatura#882, #528).
_INLINE_CODE = ("code", "kbd", "samp", "tt", "var")
_INLINE_FORMATTING = ("em", "i", "b", "strong", "span", "a", "u", "s", "sub", "sup", "small", "big", "mark", "font",
                      "abbr", "cite", "dfn", "q", "del", "ins", *_INLINE_CODE)


def read_html(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits | None = None) -> ParsedFile:
    root = _parse(_decode(path, data))
    blocks = [] if root is None else _page_blocks(path, root)
    return ParsedFile(path=path, kind="html", page_count=1, items=iter(blocks))


def _page_blocks(path: Path, root: _Element) -> list[TextBlock]:
    title = _title(root)
    links = _SectionLinks(root)  # before trafilatura, which prunes the tree it is given
    whole = _WholePage(title, links).read(root)
    main = _main_content(path, root, title, links)
    return main if main is not None and _is_main_content(main, whole, title) else whole


class _SectionLinks:
    """Where each section of the page can be opened, kept with its heading (rag.records.linked_heading) so that a
    citation names it: the page's own address when it names one (a canonical link, og:url), with the fragment of
    the heading's anchor; the anchor alone ("#setup") when the page names no address."""

    def __init__(self, root: _Element) -> None:
        self.address = _page_address(root)
        self._by_title: dict[str, str] = {}
        for heading in root.iter(*_HEADINGS):
            self._by_title.setdefault(_collapse("".join(_visible_text(heading))), self.of(heading))

    def of(self, heading: _Element) -> str:
        anchor = _anchor(heading)
        if anchor:
            return f"{self.address}#{anchor}" if self.address else f"#{anchor}"
        return self.address

    def titled(self, title: str | None) -> str:
        """The link of the heading with this text (trafilatura's copy of the page keeps no attributes)."""
        return self._by_title.get(title or "", self.address)


def _page_address(root: _Element) -> str:
    """The address the page gives itself, without its fragment: a canonical link first, else og:url; "" when it
    gives none that is an absolute http(s) address."""
    found: dict[str, str] = {}
    for element in root.iter("link", "meta"):
        if element.tag == "link" and "canonical" in (element.get("rel") or "").lower().split():
            found.setdefault("canonical", element.get("href") or "")
        elif element.tag == "meta" and (element.get("property") or "").lower() == "og:url":
            found.setdefault("og:url", element.get("content") or "")
    for address in (found.get("canonical"), found.get("og:url")):
        address = (address or "").strip().split("#")[0]
        if address.lower().startswith(("https://", "http://")) and _LINKABLE.fullmatch(address):
            return address
    return ""


def _anchor(heading: _Element) -> str:
    """The fragment that points at a heading: its id, an <a id|name> in it or just before it, its permalink, or
    the id of the section it opens; "" when it has none. Percent-encoded, so it is safe in a link."""
    inside = list(heading.iter("a"))
    candidates = [heading.get("id"), *(a.get("id") or a.get("name") for a in inside),
                  *((a.get("href") or "")[1:] for a in inside if (a.get("href") or "").startswith("#"))]
    before = heading.getprevious()
    if before is not None and before.tag == "a" and not before.text_content().strip():
        candidates.append(before.get("id") or before.get("name"))
    parent = heading.getparent()
    if parent is not None and parent.tag in ("section", "div", "article") and len(parent) and parent[0] is heading:
        candidates.append(parent.get("id"))
    for candidate in candidates:
        candidate = (candidate or "").strip()
        if candidate and len(candidate) <= _MAX_ANCHOR_CHARS:
            return quote(candidate, safe=_ANCHOR_SAFE)
    return ""


def html_fragment_text(fragment: str) -> str:
    """The visible text of a piece of HTML, one block per line."""
    root = _parse(fragment)
    return "" if root is None else "\n".join(block.text for block in _WholePage(None).read(root))


def _parse(page: str) -> lxml.html.HtmlElement | None:
    # a parser per call: lxml parsers must not be shared between threads
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(page.encode("utf-8", "replace"), parser=parser)
    except ParserError:  # nothing but whitespace
        return None


def _title(root: _Element) -> str | None:
    element = root.find("head/title")
    return (_collapse(element.text_content()) or None) if element is not None else None


def _is_main_content(main: list[TextBlock], whole: list[TextBlock], title: str | None) -> bool:
    main_chars = sum(len(block.text) for block in main)
    if main_chars < _MIN_MAIN_CHARS:
        return False
    # trafilatura's last resort dumps all of a page's text without its headings: the whole-page reader keeps them
    headless = {block.heading for block in main} <= {None, title} < {block.heading for block in whole}
    return not (headless and main_chars >= _DUMP_SHARE * sum(len(block.text) for block in whole))


def _main_content(path: Path, root: _Element, title: str | None, links: _SectionLinks) -> list[TextBlock] | None:
    """trafilatura's main content as blocks (None when it finds none), under the title until the first heading."""
    _flatten_inline_code(root)
    try:
        document = trafilatura.bare_extraction(
            root, include_comments=False, include_formatting=True, include_links=True, include_tables=True
        )
    except Exception:  # a heuristic extractor's bug must not cost a page the whole-page reader can read
        logger.warning("main-content extraction failed on %s; reading the whole page", path.name, exc_info=True)
        return None
    if document is None or document.body is None:
        return None
    blocks: list[TextBlock] = []
    heading = linked_heading(title, links.address)
    for element in _main_elements(document.body):
        if element.tag == "head":
            text = _inline_text(element)
            heading = linked_heading(text, links.titled(text)) if text else heading
        elif text := _main_element_text(element):
            blocks.append(TextBlock(page=1, text=text, heading=heading))
    return blocks or _title_only(title)


def _flatten_inline_code(root: _Element) -> None:
    """Inline code as plain text in its element, its formatting tags removed (their text kept in place), so that
    trafilatura keeps the text in order."""
    for code in list(root.iter(*_INLINE_CODE)):  # a list: stripping removes nested code from the tree
        strip_tags(code, *_INLINE_FORMATTING)


def _title_only(title: str | None) -> list[TextBlock]:
    """A page with no text but its title: the title is all there is to find it by. Otherwise the title only heads
    the text (the blocks' heading): a passage of its own would be quoted as the answer to anything it names."""
    return [TextBlock(page=1, text=title)] if title else []


# trafilatura's XML: <head> headings, <p>, <quote>, <code> (from <pre>), <list>/<item>, <table>/<row>/<cell>
_MAIN_BLOCKS = frozenset({"head", "p", "quote", "code", "list", "table"})


def _main_elements(container: _Element) -> Iterator[_Element]:
    for child in container:
        if child.tag in _MAIN_BLOCKS or len(child) == 0:
            yield child
        else:  # a wrapper <div>
            yield from _main_elements(child)


def _main_element_text(element: _Element) -> str:
    if element.tag == "code":
        return "".join(element.itertext()).strip("\n")  # code keeps its indentation
    if element.tag == "list":
        return "\n".join(_list_lines(element, depth=0))
    if element.tag == "table":
        rows = (" | ".join(_inline_text(cell) for cell in row.iter("cell")) for row in element.iter("row"))
        return "\n".join(row for row in rows if row.strip(" |"))
    return _inline_text(element)


def _list_lines(element: _Element, depth: int) -> Iterator[str]:
    ordered = element.get("rend") == "ol"
    for number, item in enumerate(element.iterfind("item"), start=1):
        marker = f"{number}." if ordered else "-"
        yield f"{'  ' * depth}{marker} {_inline_text(item)}"
        for nested in item.iterfind("list"):
            yield from _list_lines(nested, depth + 1)


def _inline_text(element: _Element) -> str:
    """Text with <lb/> as line breaks, spaces collapsed, nested lists left to _list_lines."""
    lines = "".join(_inline_parts(element)).split("\n")
    return "\n".join(line for line in map(_collapse, lines) if line)


def _inline_parts(element: _Element) -> Iterator[str]:
    yield element.text or ""
    for child in element:
        if child.tag == "lb":
            yield "\n"
        elif child.tag != "list" and not _is_permalink(child.get("target"), "".join(child.itertext())):
            yield from _inline_parts(child)
        yield child.tail or ""


def _is_permalink(target: str | None, text: str) -> bool:
    """A heading's own anchor link ('¶', '#', an icon): a marker, not part of the heading's text."""
    return bool(target and target.startswith("#")) and not any(char.isalnum() for char in text)


def _collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


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


class _WholePage:
    """All visible text of a parsed page: one block per block element, under the nearest heading."""

    def __init__(self, title: str | None, links: _SectionLinks | None = None) -> None:
        # the title heads the text until the first h1-h6
        self._title = title
        self.blocks: list[TextBlock] = []
        self._links = links
        self._heading = linked_heading(title, links.address if links else "")
        self._buffer: list[str] = []

    def read(self, root: _Element) -> list[TextBlock]:
        body = root.find("body")
        if body is not None:
            self._visit(body)
        self._flush()
        return self.blocks or _title_only(self._title)

    def _visit(self, element: _Element) -> None:
        tag = element.tag
        if tag in _HEADINGS:
            self._flush()
            title = _collapse("".join(_visible_text(element)))
            if title:
                self._heading = linked_heading(title, self._links.of(element) if self._links else "")
        elif tag == "pre":
            self._flush()
            self._add("".join(_visible_text(element)).strip("\n"))
        elif tag in _BLOCKS:
            self._flush()
            self._read_inside(element)
            self._flush()
        elif not _is_hidden(element):
            self._read_inside(element)
        self._buffer.append(element.tail or "")

    def _read_inside(self, element: _Element) -> None:
        self._buffer.append(element.text or "")
        for child in element:
            self._visit(child)

    def _flush(self) -> None:
        self._add(_collapse("".join(self._buffer)))
        self._buffer.clear()

    def _add(self, text: str) -> None:
        if text.strip():
            self.blocks.append(TextBlock(page=1, text=text, heading=self._heading))


def _visible_text(element: _Element) -> Iterator[str]:
    yield element.text or ""
    for child in element:
        if not _is_hidden(child):
            yield from _visible_text(child)
        yield child.tail or ""


def _is_hidden(element: _Element) -> bool:
    if not isinstance(element.tag, str):
        return True  # a comment or processing instruction
    return element.tag in _HIDDEN or (element.tag == "a" and _is_permalink(element.get("href"), element.text_content()))
