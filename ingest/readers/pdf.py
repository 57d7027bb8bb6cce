"""PDF reader (pypdf): the text layer page by page, embedded images, OCR for pages without text.

The text layer is cleaned of what a printed page adds to the text: running headers and footers (page numbers
among them), table-of-contents dot leaders, and words hyphenated across a line break. A heading on its own line
gets a blank line after it, so that it is not read as the start of the sentence below it.
"""

from __future__ import annotations

import io
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError
from pypdf.generic import DictionaryObject, EncodedStreamObject, StreamObject

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, ReadLimits, TextBlock
from ingest.readers._images import MIN_IMAGE_SIDE, ImageBudget, as_png, header_of, open_image

logger = logging.getLogger(__name__)

CACHE_PAGES = 32  # pages between flushes of pypdf's object cache

# pypdf logs every recoverable defect of a damaged file; the reader reports what matters as warnings
logging.getLogger("pypdf").setLevel(logging.ERROR)


def read_pdf(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits) -> ParsedFile:
    reader = _open(path, data)
    warnings: list[str] = []  # filled while the items are consumed
    items = _items(reader, ocr, warnings, ImageBudget(path, limits))
    return ParsedFile(path=path, kind="pdf", page_count=len(reader.pages), items=items, warnings=warnings)


def _open(path: Path, data: bytes) -> PdfReader:
    """Opens the document and touches the page tree, so broken files fail here and not mid-iteration."""
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise IngestError(path, "encrypted PDF (password required)")
        if len(reader.pages) == 0:
            raise IngestError(path, "corrupt or truncated PDF (no pages found)")
        if reader.is_encrypted:
            # decrypting one stream now: AES needs the optional 'cryptography' package (DependencyError)
            reader.pages[0].get_contents()
    except (IngestError, MemoryError):
        raise
    except DependencyError as exc:
        # AES-encrypted files need the optional 'cryptography' package even with an empty password
        raise IngestError(path, f"encrypted PDF (cannot decrypt: {exc})") from exc
    except FileNotDecryptedError as exc:
        raise IngestError(path, "encrypted PDF (password required)") from exc
    except Exception as exc:
        # pypdf surfaces damaged structure as many exception types, not only as its own PdfReadError
        raise IngestError(path, f"corrupt or truncated PDF ({_short(exc)})") from exc
    return reader


def _items(reader: PdfReader, ocr: OcrEngine | None, warnings: list[str], budget: ImageBudget) -> Iterator[Item]:
    for index, text in _without_running_lines(_page_texts(reader, warnings)):
        if text is None:
            continue  # the page does not open: warned
        number = index + 1
        page = reader.pages[index]
        images = list(_page_images(page, number, warnings, budget))  # encoded only: pixels are decoded one at a time
        if text:
            yield TextBlock(page=number, text=text)
        elif images:
            yield from _ocr_blocks(images, number, ocr, warnings)
        yield from (PageImage(page=number, data=data, name=name) for name, data in images)
        _release(reader, page, index)


def _release(reader: PdfReader, page: PageObject, index: int) -> None:
    """Drops pypdf's caches of pages already read, so memory stays flat on a 1,000-page file."""
    # pypdf keeps every parsed object (decoded content streams included) in resolved_objects, and
    # each page keeps its inline images; re-parsing shared fonts after a flush costs a few percent
    if hasattr(page, "_content_stream_images"):
        page._content_stream_images = None
    if index % CACHE_PAGES == CACHE_PAGES - 1:
        reader.resolved_objects.clear()


def _page_texts(reader: PdfReader, warnings: list[str]) -> Iterator[tuple[int, str | None]]:
    """Each page's text layer, by 0-based index; None for a page that does not open."""
    for index in range(len(reader.pages)):
        try:
            page = reader.pages[index]
        except Exception as exc:  # noqa: BLE001 - one broken page must not end the document
            _skip(warnings, f"page {index + 1}: could not read page", exc)
            yield index, None
            continue
        yield index, _page_text(page, index + 1, warnings)


def _page_text(page: PageObject, number: int, warnings: list[str]) -> str:
    try:
        return page.extract_text().strip()
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for one bad content stream
        _skip(warnings, f"page {number}: could not extract text", exc)
        return ""


# Running headers and footers are found among a page's neighbours, not over the whole file: the text of a few
# pages ahead is all that is held (memory stays flat), and a book's headers change from chapter to chapter.
RUNNING_WINDOW = 4  # pages before and after a page that its top and bottom lines are compared with
EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be a header or footer
# Headers and footers are short; a full line of text that recurs is content (a form's, a repeated table row's),
# which costs more to lose than a header costs to keep.
MAX_RUNNING_CHARS = 80
_NUMBER = re.compile(r"\d+")
_ROMAN_FOLIO = re.compile(r"[ivxlc]{1,6}", re.IGNORECASE)
# four or more dots, spaced or not, then the page number(s) they lead to: a table of contents' or index's leader
_DOT_LEADER = re.compile(r"[ \t]*(?:\.[ \t]?){4,}[ \t]*(?:\d+(?:[ \t]*,[ \t]*\d+)*|[ivxlc]{1,6}\b)?[ \t]*")
# a lower-case word broken at a line end, its hyphen added by the typesetter ("iden-\ntifier")
_BROKEN_WORD = re.compile(r"\b([A-Za-z]?[a-z]+)-\n([a-z]+)")
# A heading on its own line ("Chapter 2", "2.4 Library Notes") is short, starts with no small letter and ends without
# punctuation, and the line after it starts a sentence (a capital) and is clearly longer. A line wrapped inside a
# paragraph is about as long as the next one, so it is not taken for a heading.
MAX_HEADING_CHARS = 60
HEADING_SHARE = 0.75  # a heading is at most this share of the next line's length
_HEADING_END = re.compile(r"[\w)\]]")  # a heading's last character: no , ; : - nor end punctuation


@dataclass(frozen=True)
class _EdgeLine:
    """A line at the top or bottom of a page, as compared with its neighbours' ("Chapter 2: Setup 14")."""

    text: str  # the line, its spaces collapsed
    key: str  # the line with each number as "#" ("Chapter #: Setup #"); a page number alone is "#"
    offsets: frozenset[int]  # the page's index minus each number in the line: a page number's is the same on all

    @classmethod
    def of(cls, line: str, index: int) -> _EdgeLine:
        line = " ".join(line.split())
        if _ROMAN_FOLIO.fullmatch(line):  # front matter's page numbers (i, ii, ...)
            return cls(line, "#", frozenset())
        return cls(line, _NUMBER.sub("#", line), frozenset(index - int(n) for n in _NUMBER.findall(line)))

    def repeats_in(self, others: list[_EdgeLine]) -> bool:
        """Whether neighbours repeat this line, as a running header or footer would."""
        if len(self.text) > MAX_RUNNING_CHARS:
            return False
        if self.key == "#":  # a page number alone: beside other page numbers, or headers counting the same way
            return any(other.key == "#" or self.offsets & other.offsets for other in others)
        # numbered the same way as the page is ("Chapter 2: Setup 14" then "... 15")
        if "#" in self.key and any(other.key == self.key and self.offsets & other.offsets for other in others):
            return True
        # the same words recur by chance on two pages (a "}" closing code): a header or footer recurs on several
        return sum(other.text == self.text for other in others) >= 2


@dataclass(frozen=True)
class _PageLines:
    index: int
    lines: list[str] | None  # None: the page does not open

    def top(self) -> list[_EdgeLine]:
        return [_EdgeLine.of(line, self.index) for line in (self.lines or [])[:EDGE_LINES]]

    def bottom(self) -> list[_EdgeLine]:
        return [_EdgeLine.of(line, self.index) for line in (self.lines or [])[-EDGE_LINES:][::-1]]


def _without_running_lines(pages: Iterable[tuple[int, str | None]]) -> Iterator[tuple[int, str | None]]:
    """Each page's text without the headers and footers its neighbours repeat, dot leaders or broken words."""
    window: deque[_PageLines] = deque(maxlen=2 * RUNNING_WINDOW + 1)
    for index, text in pages:
        window.append(_PageLines(index, None if text is None else text.split("\n")))
        if len(window) > RUNNING_WINDOW:  # the page RUNNING_WINDOW back now has all its neighbours
            page = window[-RUNNING_WINDOW - 1]
            yield page.index, _cleaned(page, list(window))
    for page in list(window)[-min(len(window), RUNNING_WINDOW):]:  # the last pages, not handed on yet
        yield page.index, _cleaned(page, list(window))


def _cleaned(page: _PageLines, window: list[_PageLines]) -> str | None:
    if page.lines is None:
        return None
    others = [other for other in window if other is not page]
    top = _running_count(page.top(), [edge for other in others for edge in other.top()])
    bottom = _running_count(page.bottom(), [edge for other in others for edge in other.bottom()])
    body = page.lines[top:len(page.lines) - bottom] if top + bottom < len(page.lines) else []
    return _joined_broken_words(_with_heading_breaks([_DOT_LEADER.sub(_leader_gap, line) for line in body])).strip()


def _with_heading_breaks(lines: list[str]) -> str:
    """The lines joined, with a blank line after each heading: sentence splitting (ingest.chunking, rag.sentences)
    ends a sentence at a blank line, and otherwise quotes "Chapter 2 The ASN.1 structure ..." as one sentence."""
    return "".join(line + ("\n\n" if _is_heading(line, following) else "\n")
                   for line, following in zip(lines, lines[1:])) + (lines[-1] if lines else "")


def _is_heading(line: str, following: str) -> bool:
    line, following = line.strip(), following.strip()
    return (0 < len(line) <= MAX_HEADING_CHARS and not line[0].islower() and bool(_HEADING_END.fullmatch(line[-1]))
            and following[:1].isupper() and len(line) <= HEADING_SHARE * len(following))


def _running_count(edge: list[_EdgeLine], neighbours: list[_EdgeLine]) -> int:
    """How many of a page's edge lines, from the outside in, are a running header (or footer)."""
    count = 0
    while count < len(edge) and edge[count].repeats_in(neighbours):
        count += 1
    return count


def _leader_gap(match: re.Match[str]) -> str:
    """A leader ends its line ("Setup . . . . 4"), or stands between an entry and the next on one line."""
    return "" if match.end() == len(match.string) or match.start() == 0 else " "


def _joined_broken_words(text: str) -> str:
    """"iden-\ntifier" as "identifier", unless the page writes the word with its hyphen elsewhere ("well-known")."""
    def join(match: re.Match[str]) -> str:
        head, tail = match.groups()
        return f"{head}-{tail}" if f"{head}-{tail}" in text else head + tail

    return _BROKEN_WORD.sub(join, text)


_Found = tuple[str, bytes]  # the image's name, bytes PIL can open
# the inline-image operator as a token: after a space or a delimiter that may end an operand, before a space or the
# first key's slash (text shown with "BI" in it, "(BIT STRING) Tj", is not one: its stream is then parsed in vain)
_INLINE_IMAGE = re.compile(rb"(?:^|[\s\])>}])BI(?=[\s/])")
_ImageKey = list[str]  # an image's name in the page's resources, through the form XObjects that hold it


def _page_images(page: PageObject, number: int, warnings: list[str], budget: ImageBudget) -> Iterator[_Found]:
    """Each image on the page big enough to matter; one that does not decode becomes a warning.

    Each image's size is charged to the budget from its dictionary before it is decoded (past a cap the
    file fails), and its pixels are dropped before the next one is decoded.
    """
    try:
        found = [*_xobject_images(page, [], set()), *_inline_images(page)]
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for one bad content stream
        _skip(warnings, f"page {number}: could not list images", exc)
        return
    for key, settings in list(_charged(found, number, warnings, budget)):  # all first: see _charged
        try:
            image = _image(page, key)
        except Exception as exc:  # noqa: BLE001 - pypdf and PIL raise many types for one bad image
            _skip(warnings, f"page {number}: skipped undecodable image {'/'.join(key)}", exc)
            continue
        finally:
            _forget_decoded(settings)
        if image is not None:
            yield image


def _charged(found: list[tuple[_ImageKey, Any]], number: int, warnings: list[str],
             budget: ImageBudget) -> Iterator[tuple[_ImageKey, Any]]:
    """The page's images, each charged to the budget from its dictionary (past a cap, IngestError).

    All of a page's images are charged before any is decoded: pypdf decodes a page's inline images together.
    """
    for key, settings in found:
        try:
            size = _decoded_size(settings)
        except Exception as exc:  # noqa: BLE001 - a damaged image dictionary
            _skip(warnings, f"page {number}: skipped undecodable image {'/'.join(key)}", exc)
            continue
        budget.charge(*size, page=number)
        yield key, settings


def _forget_decoded(settings: Any) -> None:
    """Drops pypdf's cached copy of an image stream's decoded bytes (and of its masks'), kept until a flush."""
    for stream in (settings, settings.get("/SMask"), settings.get("/Mask")):
        stream = stream.get_object() if stream is not None else None
        if isinstance(stream, EncodedStreamObject):
            stream.decoded_self = None


def _xobject_images(owner: DictionaryObject, prefix: _ImageKey, seen: set[int]) -> Iterator[tuple[_ImageKey, Any]]:
    """Image XObjects of a page and of the forms it draws, found from the resources without decoding any."""
    resources = owner.get("/Resources")
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if isinstance(resources, DictionaryObject) else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not isinstance(xobjects, DictionaryObject):
        return
    for name in xobjects:
        entry = xobjects[name]
        if not isinstance(entry, StreamObject):
            continue
        if entry.get("/Subtype") == "/Image":
            yield [*prefix, str(name)], entry
        elif id(entry) not in seen:  # a form: forms may draw each other, in a cycle
            seen.add(id(entry))
            yield from _xobject_images(entry, [*prefix, str(name)], seen)


def _inline_images(page: PageObject) -> Iterator[tuple[_ImageKey, Any]]:
    """Images written into the content stream itself, with their settings (pypdf names them ~0~, ~1~, ...).

    A stream without the inline-image operator BI is not parsed: text extraction has parsed it once already, and a
    second parse of every page is wasted on the few that hold inline images."""
    contents = page.get_contents()
    if contents is None or not _INLINE_IMAGE.search(contents.get_data()):  # the decoded bytes, cached: no parse
        return
    inline = (operands["settings"] for operands, operator in contents.operations if operator == b"INLINE IMAGE")
    for number, settings in enumerate(inline):
        yield [f"~{number}~"], settings


def _decoded_size(settings: Any) -> tuple[int, int, str]:
    """Width, height and the PIL mode pypdf decodes into, from the image's dictionary (and JPEG header)."""
    width, height = int(_entry(settings, "/Width", "/W") or 0), int(_entry(settings, "/Height", "/H") or 0)
    filters = _entry(settings, "/Filter", "/F")
    last_filter = filters[-1] if isinstance(filters, list) and filters else filters
    if isinstance(settings, StreamObject) and last_filter in ("/DCTDecode", "/JPXDecode"):
        # the codestream's own header rules what PIL decodes, whatever the dictionary declares
        header_width, header_height, _ = header_of(settings.get_data())
        width, height = max(width, header_width), max(height, header_height)
    return width, height, "L" if _single_channel(settings) else "RGBA"


def _single_channel(settings: Any) -> bool:
    """Grey, bilevel and one-ink images decode to one byte a pixel; colour, palettes and masked ones to four."""
    if _entry(settings, "/ImageMask", "/IM"):
        return True
    if "/SMask" in settings:
        return False
    space = _entry(settings, "/ColorSpace", "/CS")
    if isinstance(space, list) and space:
        family = space[0]
        if family == "/ICCBased" and len(space) > 1:
            return space[1].get_object().get("/N") == 1
        return family == "/Separation" or (family == "/DeviceN" and len(space) > 1 and len(space[1]) == 1)
    return space in ("/DeviceGray", "/G", "/CalGray")


def _entry(settings: Any, *keys: str) -> Any:
    """The first of `keys` present in the dictionary, resolved (inline images use abbreviated keys)."""
    for key in keys:
        if key in settings:
            return settings[key]
    return None


def _image(page: PageObject, key: _ImageKey) -> _Found | None:
    image_file = page.images[key]
    decoded = image_file.image
    if decoded is None or min(decoded.size) < MIN_IMAGE_SIDE:
        return None
    data = image_file.data
    try:
        open_image(data)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a raw stream PIL cannot open: re-encode what pypdf decoded
        data = as_png(decoded)
    return image_file.name, data


def _ocr_blocks(images: list[_Found], number: int, ocr: OcrEngine | None, warnings: list[str]) -> Iterator[TextBlock]:
    """OCR of a page without a text layer, decoding its images again one at a time."""
    if ocr is None:
        warnings.append(f"page {number}: no text layer and OCR is disabled")
        return
    for name, data in images:
        try:
            text = ocr.text_of(open_image(data), page=number).strip()
        except Exception as exc:  # noqa: BLE001 - a failed OCR loses one image's text, not the file
            _skip(warnings, f"page {number}: OCR failed on image {name}", exc)
            continue
        if text:
            yield TextBlock(page=number, text=text, ocr=True)


def _skip(warnings: list[str], what: str, exc: Exception) -> None:
    """A damaged part of the file: the user sees a warning, the log keeps the traceback."""
    if isinstance(exc, MemoryError):
        raise exc  # the parse worker's memory limit: the file fails, not one image of it
    warnings.append(f"{what}: {_short(exc)}")
    logger.info("%s", what, exc_info=True)


def _short(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message if len(message) <= 120 else message[:117] + "..."
