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
    if len(lines) < 2 or lines[0].strip() != "---" or not _YAML_KEY.match(lines[1]):
        return lines  # a thematic break or a setext underline, not front matter
    for index in range(2, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return lines[index + 1 :]
    return lines  # never closed: not front matter either


_YAML_KEY = re.compile(r"^[A-Za-z0-9_-]+\s*:")


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
