"""Plain text and Markdown: encoding detection, paragraphs split on blank lines, Markdown parsed by markdown-it-py."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import charset_normalizer
from charset_normalizer.md import mess_ratio
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, ParsedFile, ReadLimits, TextBlock

# UTF-32 first: its little-endian BOM starts with the UTF-16 one
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
MAX_CHAOS = 0.15  # charset_normalizer's mess ratio (it drops matches above 0.2); above this: no guess
_WIDE_CODECS = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]
# code pages that modern files rarely use, though charset_normalizer likes them for short Western text
_UNLIKELY_CODECS = ("mac_", "cp037", "cp273", "cp500", "cp875", "cp1006", "cp1026", "cp1125", "cp1140",
                    "hp_roman8", "ptcp154", "kz1048")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(path: Path, data: bytes) -> str:
    """Decodes text bytes: BOM, then UTF-8, then a confident charset guess; raises IngestError."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise IngestError(path, f"unknown text encoding (invalid {codec} after its BOM)") from exc
    # NUL never occurs in 8-bit or UTF-8 text; without a BOM it marks a binary file (or BOM-less UTF-16)
    if b"\x00" in data:
        raise IngestError(path, "binary content, not text")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        decoded = _guess_decode(data)
        if decoded is None:
            raise IngestError(path, "unknown text encoding") from None
    if len(_CONTROL.findall(decoded)) > len(decoded) / 100:
        raise IngestError(path, "binary content, not text")
    return decoded


def _guess_decode(data: bytes) -> str | None:
    """A legacy 8-bit encoding, when charset_normalizer is confident; None otherwise."""
    # without a BOM the NUL check already rules UTF-16/32 out; short inputs get guessed as them
    matches = charset_normalizer.from_bytes(data, cp_exclusion=_WIDE_CODECS)
    best = matches.best()
    if best is None or best.chaos > MAX_CHAOS:
        return None
    # On short text charset_normalizer often ranks equally clean code pages arbitrarily (cp1250 turns
    # "crème" into "crčme", Mac Roman wins German). Windows-1252 is the commonest legacy encoding: it
    # wins when it reads as cleanly and the guess has no better language evidence or is exotic.
    western = _clean_cp1252(data, best.chaos)
    if western is not None:
        tied = any(
            match.encoding == "cp1252" and match.chaos <= best.chaos and match.coherence >= best.coherence
            for match in matches
        )
        if tied or best.coherence == 0 or best.encoding.startswith(_UNLIKELY_CODECS):
            return western
    return str(best)


def _clean_cp1252(data: bytes, max_chaos: float) -> str | None:
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return text if mess_ratio(text, MAX_CHAOS) <= max_chaos else None


def read_text(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits | None = None) -> ParsedFile:
    lines = _lines(decode_text(path, data))
    blocks = (TextBlock(page=1, text=paragraph) for paragraph in _paragraphs(lines))
    return ParsedFile(path=path, kind="text", page_count=1, items=blocks)


def read_markdown(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits | None = None) -> ParsedFile:
    source = "\n".join(_strip_front_matter(_lines(decode_text(path, data))))
    return ParsedFile(path=path, kind="markdown", page_count=1, items=iter(_markdown_blocks(source)))


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line.rstrip())
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def _strip_front_matter(lines: list[str]) -> list[str]:
    """Drops a leading YAML block between '---' lines (metadata, not content)."""
    if len(lines) < 2 or lines[0].strip() != "---" or not _YAML_KEY.match(lines[1]):
        return lines  # a thematic break or a setext underline, not front matter
    for index in range(2, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return lines[index + 1 :]
    return lines  # never closed: not front matter either


_YAML_KEY = re.compile(r"[A-Za-z0-9_-]+\s*:")

# CommonMark (a maintained, linear-time parser) plus the GitHub table and strikethrough extensions.
# Its nesting cap (20) bounds how deep a hostile file can make the token tree; text nested deeper is dropped.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_LIST_INDENT = "  "


def _markdown_blocks(source: str) -> list[TextBlock]:
    """One block per top-level Markdown block (paragraph, list, table, quote, code), under its nearest heading.

    Lists, tables and quotes become plain readable lines; fenced code keeps its fences (its '#' lines are
    code, not headings); a heading with no text keeps the previous one.
    """
    blocks: list[TextBlock] = []
    heading: str | None = None
    lines: list[str] = []
    writer = _BlockLines(lines)
    in_heading = False
    for token in _MARKDOWN.parse(source):
        if token.type == "heading_open" and token.level == 0:
            in_heading = True
        elif token.type == "inline" and in_heading:
            heading = _inline_text(token).strip() or heading
            in_heading = False
        else:
            writer.take(token)
        if token.level == 0 and token.nesting <= 0 and lines:  # a top-level block just ended
            blocks.append(TextBlock(page=1, text="\n".join(lines), heading=heading))
            lines.clear()
    return blocks


class _BlockLines:
    """Turns the tokens of one top-level block into readable lines: '- item', 'cell | cell', code as written."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self._depth = 0  # how many lists are open around the current item
        self._prefix = ""  # what the next line starts with: a list marker, then the item's indent
        self._cells: list[str] | None = None  # the cells of the table row being read

    def take(self, token: Token) -> None:
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            self._depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            self._depth -= 1
            self._prefix = _LIST_INDENT * self._depth  # back under the enclosing item, if any
        elif kind == "list_item_open":
            marker = f"{token.info}{token.markup}"  # '-', or '3.' (info holds an ordered item's number)
            self._prefix = _LIST_INDENT * (self._depth - 1) + marker + " "
        elif kind == "tr_open":
            self._cells = []
        elif kind == "tr_close" and self._cells is not None:
            self._add(" | ".join(self._cells))
            self._cells = None
        elif kind == "inline":
            text = _inline_text(token)
            if self._cells is not None:
                self._cells.append(text.replace("\n", " "))
            else:
                self._add(text)
        elif kind == "fence":
            self._add(f"{token.markup}{token.info}\n{token.content}{token.markup}")
        elif kind == "code_block":
            self._add(token.content.rstrip("\n"))
        elif kind == "html_block":
            self._add(_html_text(token.content))

    def _add(self, text: str) -> None:
        if not text.strip():
            return
        indent = " " * len(self._prefix)
        for index, line in enumerate(text.split("\n")):
            self.lines.append((self._prefix if index == 0 else indent) + line.rstrip())
        self._prefix = indent  # an item's later paragraphs line up under its first


def _inline_text(token: Token) -> str:
    """The text a reader sees: markup and raw HTML tags dropped, images as their alt text, `code` kept."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "image"):
            parts.append(child.content)
        elif child.type == "code_inline":
            parts.append(f"{child.markup}{child.content}{child.markup}")
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return "".join(parts)


def _html_text(fragment: str) -> str:
    """The visible text of raw HTML inside Markdown (a centred logo, a <details> block, an HTML table)."""
    from ingest.readers.html import html_fragment_text  # imported here: the HTML reader imports decode_text

    return html_fragment_text(fragment)
