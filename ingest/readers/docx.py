"""Word documents (python-docx): body paragraphs and table rows in order, headings, page breaks, images.

Physical pages are counted from explicit page breaks, page-starting section breaks and the
`w:lastRenderedPageBreak` marks Word leaves where it last broke pages while laying the document out.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import docx
from lxml import etree

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, Item, PageImage, ParsedFile, ReadLimits, TextBlock
from ingest.readers._images import ImageBudget, megabytes, open_image

logger = logging.getLogger(__name__)

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_BLIP = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
_VML_IMAGE = "{urn:schemas-microsoft-com:vml}imagedata"
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_CHARS = {_W + "tab": "\t", _W + "cr": "\n", _W + "noBreakHyphen": "-"}
# below this a part's compression ratio says nothing: a few KB of repeated XML compress 1000:1 and cost nothing
RATIO_CHECKED_FROM_BYTES = 2**20


def read_docx(path: Path, data: bytes, ocr: OcrEngine | None, limits: ReadLimits) -> ParsedFile:
    try:
        _check_zip(path, data, limits)  # python-docx inflates every part into memory when it opens the file
        document = docx.Document(io.BytesIO(data))
        body = document.element.body
        style_names = {style.style_id: str(style.name) for style in document.styles}
    except (IngestError, MemoryError):
        raise
    except Exception as exc:
        raise IngestError(path, f"corrupt DOCX ({type(exc).__name__}: {exc})") from exc
    walker = _Walker(body, document.part.related_parts, style_names, ImageBudget(path, limits))
    try:
        walker.container(body)
    except (IngestError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - keep what was read before the damage
        logger.info("%s: could not read the rest of the document", path.name, exc_info=True)
        walker.warnings.append(f"could not read the rest of the document: {type(exc).__name__}: {exc}")
    # the whole XML tree is in memory already, so collecting the items costs little
    return ParsedFile(
        path=path, kind="docx", page_count=walker.page, items=iter(walker.items), warnings=walker.warnings
    )


def _check_zip(path: Path, data: bytes, limits: ReadLimits) -> None:
    """Refuses a zip bomb from its directory, before a byte is inflated.

    zipfile stops inflating a part at the size its directory entry declares (and then fails the CRC), so
    the declared sizes bound what python-docx can allocate.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        parts = archive.infolist()
    total = sum(part.file_size for part in parts)
    if total > limits.max_unzipped_bytes:
        raise IngestError(path, f"unzips to {megabytes(total)} MB, over the {megabytes(limits.max_unzipped_bytes)} MB "
                                "limit (LOUPE_MAX_UNZIPPED_MB)")
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > RATIO_CHECKED_FROM_BYTES and ratio > limits.max_zip_ratio:
            raise IngestError(path, f"part {part.filename} is compressed {ratio:.0f}:1, over the "
                                    f"{limits.max_zip_ratio}:1 limit (LOUPE_MAX_ZIP_RATIO)")


class _Walker:
    """Walks the body XML in document order, tracking the page, the heading and the open block."""

    def __init__(self, body: etree._Element, related_parts: dict, style_names: dict[str, str],
                 budget: ImageBudget) -> None:
        self.related_parts = related_parts
        self.budget = budget
        self.style_names = style_names
        self._section_starts = [_section_start(section) for section in _sections(body)]
        self._section = 0
        self.page = 1
        self.heading: str | None = None
        self.items: list[Item] = []
        self.warnings: list[str] = []
        self._text: list[str] = []
        self._images: list[PageImage] = []
        self._seen_images: set[str] = set()
        self._in_heading = False
        self._just_broke = False  # an explicit break not yet followed by text
        self._started = False  # any text or picture seen yet

    def container(self, element: etree._Element) -> None:
        for child in element:
            if child.tag == _W + "p":
                self.paragraph(child)
            elif child.tag == _W + "tbl":
                self.table(child)
            elif child.tag != _W + "sectPr" and isinstance(child.tag, str):
                self.container(child)  # w:sdt, w:customXml, ... wrap paragraphs and tables

    def paragraph(self, p: etree._Element) -> None:
        props = p.find(_W + "pPr")
        style = props.find(_W + "pStyle") if props is not None else None
        name = self.style_names.get(style.get(_W + "val", "")) if style is not None else None
        self._in_heading = bool(name) and name.lower().startswith(("heading", "title"))
        if props is not None and _on(props.find(_W + "pageBreakBefore")) and self._started:
            self.page_break(explicit=True)  # Word ignores it on the document's first paragraph
        self.inline(p)
        if self._in_heading:
            self.heading = " ".join("".join(self._text).split()) or self.heading
            self._text.clear()
            self._in_heading = False
        self.end_block()
        if props is not None and props.find(_W + "sectPr") is not None:
            # this paragraph ends a section; the *next* section's w:type says how that one starts
            self._section += 1
            if self._section_starts[self._section : self._section + 1] == ["newPage"]:
                self.page_break(explicit=True)

    def table(self, tbl: etree._Element) -> None:
        """One block per row, cells separated by ' | '."""
        for row in _children(tbl, _W + "tr"):
            cells = []
            for cell in _children(row, _W + "tc"):
                self.cell(cell)
                cells.append(" ".join("".join(self._text).split()))
                self._text.clear()
            self._text.append(" | ".join(cells))
            self.end_block()

    def cell(self, element: etree._Element) -> None:
        # a nested table flattens into the text of the cell holding it
        for child in element:
            if child.tag == _W + "p":
                self.inline(child)
                self._text.append(" ")
            elif child.tag in (_W + "tbl", _W + "tr", _W + "tc", _W + "sdt", _W + "sdtContent"):
                self.cell(child)

    def inline(self, element: etree._Element) -> None:
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or tag == _FALLBACK:
                continue  # comments; mc:Fallback repeats the mc:Choice content in an older format
            if tag == _W + "t":
                self.text(child.text or "")
            elif tag in _CHARS:
                self.text(_CHARS[tag])
            elif tag == _W + "br":
                if child.get(_W + "type") == "page":
                    self.page_break(explicit=True)
                else:
                    self.text("\n")  # a line or column break
            elif tag == _W + "lastRenderedPageBreak":
                self.page_break(explicit=False)
            elif tag in (_BLIP, _VML_IMAGE):
                self.image(child.get(_R + "embed") or child.get(_R + "id"))
            elif tag == _W + "p":
                self.text("\n")  # a text box paragraph inside this paragraph
                self.inline(child)
            elif tag != _W + "tbl":
                self.inline(child)

    def text(self, text: str) -> None:
        self._text.append(text)
        if text.strip():
            self._just_broke = False
            self._started = True

    def page_break(self, explicit: bool) -> None:
        if not explicit and self._just_broke:
            self._just_broke = False  # Word's mark for the page an explicit break already started
            return
        if not self._in_heading:
            self.end_block()  # text before the break stays on the earlier page
        self.page += 1
        self._just_broke = explicit

    def image(self, rel_id: str | None) -> None:
        part = self.related_parts.get(rel_id) if rel_id else None
        if part is None or not str(part.content_type).startswith("image/"):
            return  # a linked (external) picture or a broken reference
        name = PurePosixPath(str(part.partname)).name
        if name in self._seen_images:
            return
        self._seen_images.add(name)
        try:
            self.budget.charge_encoded(part.blob, self.page)  # from the header, before decoding a pixel
            open_image(part.blob)
        except (IngestError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - EMF/WMF and damaged pictures
            logger.info("page %d: image %s does not decode", self.page, name, exc_info=True)
            self.warnings.append(f"page {self.page}: skipped image {name} that does not decode: {exc}")
            return
        self._images.append(PageImage(page=self.page, data=part.blob, name=name))
        self._started = True

    def end_block(self) -> None:
        text = "".join(self._text).strip()
        self._text.clear()
        if text:
            self.items.append(TextBlock(page=self.page, text=text, heading=self.heading))
        self.items.extend(self._images)
        self._images.clear()


def _on(flag: etree._Element | None) -> bool:
    return flag is not None and flag.get(_W + "val", "true") not in ("0", "false", "off")


def _sections(body: etree._Element) -> Iterator[etree._Element]:
    """Section properties in document order: one per paragraph ending a section, then the body's."""
    for section in body.iter(_W + "sectPr"):
        if section.getparent().tag != _W + "sectPrChange":  # a tracked change's old properties
            yield section


def _section_start(section: etree._Element) -> str:
    kind = section.find(_W + "type")
    value = kind.get(_W + "val") if kind is not None else None
    # absent means nextPage; continuous and nextColumn stay on the page
    return "newPage" if value in (None, "nextPage", "oddPage", "evenPage") else "samePage"


def _children(element: etree._Element, tag: str) -> Iterator[etree._Element]:
    """Children with `tag`, looking through content-control and custom-XML wrappers."""
    for child in element:
        if child.tag == tag:
            yield child
        elif child.tag in (_W + "sdt", _W + "sdtContent", _W + "customXml"):
            yield from _children(child, tag)
