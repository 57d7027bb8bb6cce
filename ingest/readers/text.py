"""Plain text and Markdown: encoding detection, paragraphs split on blank lines, Markdown headings."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import charset_normalizer
from charset_normalizer.md import mess_ratio

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, ParsedFile, TextBlock

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
    # charset_normalizer breaks ties between equally clean single-byte code pages arbitrarily (cp1250
    # turns "crème" into "crčme"); Windows-1252 is the commonest legacy encoding, so it wins unless
    # another code page reads as a detected language better
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and western.chaos <= best.chaos and western.coherence >= best.coherence:
        return str(western)
    if best.coherence == 0:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            return str(best)
        if mess_ratio(text, MAX_CHAOS) <= best.chaos:
            return text
    return str(best)


def read_text(path: Path, data: bytes, ocr: OcrEngine | None) -> ParsedFile:
    lines = _lines(decode_text(path, data))
    blocks = (TextBlock(page=1, text=paragraph) for paragraph in _paragraphs(lines))
    return ParsedFile(path=path, kind="text", page_count=1, items=blocks)


def read_markdown(path: Path, data: bytes, ocr: OcrEngine | None) -> ParsedFile:
    lines = _strip_front_matter(_lines(decode_text(path, data)))
    return ParsedFile(path=path, kind="markdown", page_count=1, items=_markdown_blocks(lines))


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
    if not lines or lines[0].strip() != "---":
        return lines
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return lines[index + 1 :]
    return lines  # no closing fence: it was a thematic break, not front matter


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")


def _markdown_blocks(lines: list[str]) -> Iterator[Item]:
    heading: str | None = None
    paragraph: list[str] = []
    fence: str | None = None  # the opening marker while inside a fenced code block

    def flush() -> Iterator[Item]:
        if paragraph:
            yield TextBlock(page=1, text="\n".join(paragraph), heading=heading)
            paragraph.clear()

    for line in lines:
        if fence is not None:
            # code: '#' lines are comments, blank lines do not end the block
            paragraph.append(line.rstrip())
            if line.strip().startswith(fence):
                fence = None
                yield from flush()
            continue
        opening = _FENCE.match(line)
        if opening:
            yield from flush()
            fence = opening.group(1)
            paragraph.append(line.rstrip())
        elif not line.strip():
            yield from flush()
        elif (atx := _ATX.match(line)) is not None:
            yield from flush()
            heading = (atx.group(2) or "").strip() or heading
        elif paragraph and _SETEXT.match(line):
            # the paragraph so far was the heading's text
            heading = " ".join(part.strip() for part in paragraph)
            paragraph.clear()
        elif _BREAK.match(line):
            yield from flush()
        else:
            paragraph.append(line.rstrip())
    yield from flush()
