"""Which reader must read an upload: taken from its bytes, not from the name the client sent.

A client names its file: a PDF called `notes.txt`, or a ZIP called `report.docx`, must not reach the wrong
reader. Binary signatures outrank the name; without one the claimed suffix stands and its reader checks the
bytes (and explains what is wrong with a damaged file). Pure functions on bytes: no I/O.
"""

from __future__ import annotations

import codecs
import io
import zipfile
from dataclasses import dataclass


@dataclass(frozen=True)
class _Kind:
    label: str  # for messages: "named .txt but is a PDF"
    name: str  # for messages: "read as PDF"
    suffixes: tuple[str, ...]  # the reader's suffixes; the first is used when the name claims another


_PDF = _Kind("a PDF", "PDF", (".pdf",))
_PNG = _Kind("a PNG image", "PNG", (".png",))
_JPEG = _Kind("a JPEG image", "JPEG", (".jpg", ".jpeg"))
_GIF = _Kind("a GIF image", "GIF", (".gif",))
_WEBP = _Kind("a WebP image", "WebP", (".webp",))
_BMP = _Kind("a BMP image", "BMP", (".bmp",))
_DOCX = _Kind("a Word document", "DOCX", (".docx",))

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
_BINARY_KINDS = (_PDF, _PNG, _JPEG, _GIF, _WEBP, _BMP, _DOCX)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {suffix for kind in _BINARY_KINDS for suffix in kind.suffixes}

_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", _PNG), (b"\xff\xd8\xff", _JPEG), (b"GIF87a", _GIF), (b"GIF89a", _GIF))
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; the end record of an empty archive
_FOREIGN_MAGIC = (
    (b"\x7fELF", "an executable program (ELF)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (.doc, .xls, .ppt): save it as .docx or PDF"),
)
_OFFICE_PARTS = (("xl/workbook.xml", "an Excel workbook"), ("ppt/presentation.xml", "a PowerPoint presentation"))
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})  # the DIB header versions
_PDF_HEADER_WINDOW = 1024  # readers accept junk before '%PDF-' within the first KB, as Acrobat does
_BINARY_WINDOW = 8192  # NUL bytes in the first 8 KB mark binary data (as git decides)
_MAX_ZIP_ENTRIES = 10_000  # a real DOCX has tens to hundreds; listing millions would cost gigabytes
_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)  # UTF-32 LE: as 16


def detect_suffix(data: bytes, claimed_suffix: str) -> tuple[str, str | None]:
    """The suffix whose reader must read `data`, and a note for the user.

    ("", reason) means refuse the file; (suffix, note) with a note means the name was wrong.
    """
    claimed = claimed_suffix.lower()
    kind = _binary_kind(data, claimed)
    if kind is not None:
        return _read_as(kind, claimed)
    if data.startswith(_ZIP_MAGIC):
        return _zip_verdict(data, claimed)
    foreign = next((label for magic, label in _FOREIGN_MAGIC if data.startswith(magic)), None)
    if foreign is not None:
        return "", f"not a supported document: looks like {foreign}"
    if claimed not in SUPPORTED_SUFFIXES:
        supported = " ".join(sorted(SUPPORTED_SUFFIXES))
        return "", f"unsupported file type '{claimed or 'without a suffix'}' (supported: {supported})"
    if claimed in TEXT_SUFFIXES and _is_binary(data):
        return "", "not a supported document: looks like binary data, not text"
    return claimed, None  # no signature contradicts the name: its reader checks the bytes


def _binary_kind(data: bytes, claimed: str) -> _Kind | None:
    # '%PDF-' in the first KB of a text file is more likely prose about PDFs than a PDF
    if data.startswith(b"%PDF-") or (claimed not in TEXT_SUFFIXES and b"%PDF-" in data[:_PDF_HEADER_WINDOW]):
        return _PDF
    image = next((kind for magic, kind in _IMAGE_MAGIC if data.startswith(magic)), None)
    if image is not None:
        return image
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _WEBP
    # 'BM' alone could start a text file: the DIB header size behind it has NUL bytes no text has
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return _BMP
    return None


def _read_as(kind: _Kind, claimed: str) -> tuple[str, str | None]:
    if claimed in kind.suffixes:
        return claimed, None
    return kind.suffixes[0], f"named {claimed or 'without a suffix'} but is {kind.label}; read as {kind.name}"


def _zip_verdict(data: bytes, claimed: str) -> tuple[str, str | None]:
    entries = _zip_entry_count(data)
    if entries is not None and entries > _MAX_ZIP_ENTRIES:
        return "", f"not a supported document: a ZIP archive with more than {_MAX_ZIP_ENTRIES:,} entries"
    if claimed == ".docx":
        return claimed, None  # the DOCX reader explains a damaged or hollow one
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError):
        return "", "not a supported document: looks like a damaged ZIP archive"
    if "word/document.xml" in names:
        return _read_as(_DOCX, claimed)
    label = next((label for part, label in _OFFICE_PARTS if part in names), "a ZIP archive")
    return "", f"not a supported document: looks like {label}"


def _zip_entry_count(data: bytes) -> int | None:
    """The entry count in the archive's end record (22 bytes plus a comment of up to 64 KB), if found."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + 22 > len(data):
        return None
    return int.from_bytes(data[end + 10 : end + 12], "little")  # 0xFFFF (ZIP64) counts as too many


def _is_binary(data: bytes) -> bool:
    # UTF-16 and UTF-32 text has NUL bytes, and a byte order mark that says so
    return not data.startswith(_TEXT_BOMS) and b"\x00" in data[:_BINARY_WINDOW]
