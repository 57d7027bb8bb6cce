"""Readers turn one file into a ParsedFile: lazily yielded text blocks and images, in page order.

`read_file` opens the file eagerly, so an unreadable file raises IngestError there, before any item
is consumed; problems confined to one page or one image become entries in ParsedFile.warnings,
which fill up while the items are consumed. A file over a decompression cap (ReadLimits) raises
IngestError while its items are consumed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ingest.ocr import OcrEngine
from ingest.parsed import IngestError, ParsedFile, ReadLimits
from ingest.readers import docx, html, image, pdf, text
from ingest.readers._images import megabytes
from ingest.sniff import detect_suffix

Reader = Callable[[Path, bytes, OcrEngine | None, ReadLimits], ParsedFile]

_READERS: dict[str, Reader] = {
    ".pdf": pdf.read_pdf,
    ".txt": text.read_text,
    ".md": text.read_markdown,
    ".markdown": text.read_markdown,
    ".html": html.read_html,
    ".htm": html.read_html,
    ".docx": docx.read_docx,
    **{suffix: image.read_image for suffix in image.IMAGE_SUFFIXES},
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_READERS)

_NOT_REGULAR = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket",
                stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}

__all__ = ["SUPPORTED_SUFFIXES", "open_regular_file", "read_file"]


def read_file(path: Path, ocr: OcrEngine | None, limits: ReadLimits = ReadLimits()) -> ParsedFile:
    """Opens `path` with the reader its bytes call for; `ocr=None` turns OCR off."""
    path = Path(path)
    data = _read_regular_file(path, limits.max_file_bytes)
    if not data:
        raise IngestError(path, "empty file")
    suffix, note = detect_suffix(data, path.suffix.lower())
    if not suffix:
        raise IngestError(path, note or "unsupported file type")
    parsed = _READERS[suffix](path, data, ocr, limits)
    if note:
        parsed.warnings.insert(0, note)
    return parsed


def open_regular_file(path: Path, max_bytes: int) -> BinaryIO:
    """Opens `path` for reading, refusing (IngestError) anything but a regular file of at most `max_bytes`.

    Nothing is read before the checks. A symbolic link is refused rather than followed (it could point at
    /dev/zero or a server file); a pipe or device would block or never end. The checks run on the open
    descriptor, so the path cannot be swapped between check and read.
    """
    # O_NONBLOCK: opening a named pipe must not wait for a writer; it has no effect on a regular file
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IngestError(path, "not a regular file (a symbolic link)") from exc
        raise IngestError(path, f"cannot read file ({exc.strerror or exc})") from exc
    try:
        _check_regular_file(path, os.fstat(descriptor), max_bytes)
    except IngestError:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes: no more than its size + 1, so a file growing meanwhile cannot slip past the limit."""
    with open_regular_file(path, max_bytes) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            data = handle.read(size + 1)  # not max_bytes + 1: read() allocates its whole buffer up front
        except OSError as exc:
            raise IngestError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if len(data) > size:
        raise IngestError(path, "file changed while being read")
    return data


def _check_regular_file(path: Path, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise IngestError(path, f"not a regular file ({_NOT_REGULAR.get(stat.S_IFMT(info.st_mode), 'special')})")
    if info.st_size > max_bytes:
        raise IngestError(path, f"file is {megabytes(info.st_size)} MB, over the {megabytes(max_bytes)} MB limit "
                                "(LOUPE_MAX_FILE_MB)")
