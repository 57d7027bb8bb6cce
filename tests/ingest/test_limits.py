"""Bounded reading of untrusted files: what is refused before it is read or decoded, and what it costs.

The files are real, built here: PDFs whose image dictionaries declare huge sizes (with Flate data that
really inflates to them), a DOCX zip bomb, PNG headers of gigapixel images, devices, pipes and links.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from PIL import Image
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

from ingest.parsed import IngestError, ParsedFile, ReadLimits
from ingest.readers import read_file
from tests.builders import png_header

REPO_ROOT = Path(__file__).resolve().parents[2]
MB = 2**20
Board = Callable[[int], Image.Image]


def reason_of(path: Path, limits: ReadLimits = ReadLimits()) -> str:
    with pytest.raises(IngestError) as caught:
        list(read_file(path, None, limits).items)
    assert caught.value.path == str(path)
    return caught.value.reason


def _image_xobject(width: int, height: int, gray: bool = True) -> DecodedStreamObject:
    """An uncompressed-then-flated image of zeros: a few KB in the file, width x height pixels decoded."""
    stream = DecodedStreamObject()
    stream.set_data(bytes(width * height * (1 if gray else 3)))
    stream.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
                   NameObject("/Width"): NumberObject(width), NameObject("/Height"): NumberObject(height),
                   NameObject("/BitsPerComponent"): NumberObject(8),
                   NameObject("/ColorSpace"): NameObject("/DeviceGray" if gray else "/DeviceRGB")})
    return stream.flate_encode()


def _pdf_of_images(path: Path, pages: list[list[tuple[int, int, bool]]]) -> Path:
    """One PDF page per entry, each drawing image XObjects of the given (width, height, gray)."""
    writer = PdfWriter()
    for images in pages:
        page = writer.add_blank_page(600, 800)
        names = [f"/Im{number}" for number in range(len(images))]
        xobjects = DictionaryObject({NameObject(name): writer._add_object(_image_xobject(*spec))
                                     for name, spec in zip(names, images)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): xobjects})
        content = DecodedStreamObject()
        content.set_data("".join(f"q 100 0 0 100 0 {100 * n} cm {name} Do Q\n" for n, name in enumerate(names))
                         .encode())
        page[NameObject("/Contents")] = writer._add_object(content)
    writer.write(path)
    return path


# --- PDF images ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eight_image_page(tmp_path_factory: pytest.TempPathFactory, checkerboard: Board) -> Path:
    """One page with 8 distinct 2500x2500 colour pictures (fpdf2): under 1 MB, 8 x 24 MB decoded."""
    pdf = FPDF()
    pdf.add_page()
    for number in range(8):
        picture = checkerboard(2500)
        picture.paste((20 * number, 30, 200), (0, 0, 40, 40))  # distinct, or fpdf2 stores one copy
        pdf.image(picture, x=10 + 45 * (number % 4), y=10 + 60 * (number // 4), w=40)
    path = tmp_path_factory.mktemp("eight") / "eight.pdf"
    pdf.output(str(path))
    return path


_READ_UNDER_CAP = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from ingest.readers import read_file
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]) * 2**20, resource.RLIM_INFINITY))
    parsed = read_file(Path(sys.argv[1]), None)
    items = list(parsed.items)
    print(json.dumps({"images": len(items), "warnings": parsed.warnings}))
""")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc to measure memory")
def test_page_of_eight_large_images_reads_within_a_small_memory_cap(eight_image_page: Path) -> None:
    """Decoded one at a time, not all of a page's pictures together (the old reader needed about 200 MB)."""
    cap_mb = 150  # one picture decoded, twice over; the eight together need 8 x 24 MB
    result = subprocess.run([sys.executable, "-c", _READ_UNDER_CAP, str(eight_image_page), str(cap_mb)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    # a reader that runs out of memory mid-page may also skip pictures with a warning: both count as failure
    assert json.loads(result.stdout) == {"images": 8, "warnings": ["page 1: no text layer and OCR is disabled"]}


def test_pdf_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _pdf_of_images(tmp_path / "bomb.pdf", [[(200, 200, True)], [(9000, 9000, True)]])
    assert path.stat().st_size < 200_000  # 81 MB of pixels in a small file
    assert reason_of(path) == ("page 2: an image of 9000x9000 pixels (81 megapixels) is over the 64 megapixel "
                               "limit (LOUPE_MAX_IMAGE_MEGAPIXELS)")


def test_pdf_page_over_the_per_page_cap(tmp_path: Path) -> None:
    path = _pdf_of_images(tmp_path / "page.pdf", [[(1000, 1000, False), (1000, 1000, False)]])
    limits = ReadLimits(max_page_image_bytes=6 * MB)  # two colour images of 3.8 MB each
    assert reason_of(path, limits) == ("page 1: images decode to 7.6 MB, over the 6 MB per-page limit "
                                       "(LOUPE_MAX_PAGE_IMAGE_MB)")


def test_pdf_file_over_the_per_file_cap(tmp_path: Path) -> None:
    path = _pdf_of_images(tmp_path / "file.pdf", [[(1000, 1000, False)], [(1000, 1000, True)],
                                                  [(1000, 1000, False)]])
    parsed = read_file(path, None, ReadLimits(max_file_image_bytes=8 * MB))
    items = iter(parsed.items)
    assert [item.page for item in (next(items), next(items))] == [1, 2]  # 3.8 MB, then 1 MB (grey)
    with pytest.raises(IngestError) as caught:
        next(items)
    assert caught.value.reason == ("page 3: the file's images decode to 8.6 MB, over the 8 MB per-file limit "
                                   "(LOUPE_MAX_FILE_IMAGE_MB)")


def test_inline_image_over_the_pixel_cap(tmp_path: Path) -> None:
    """An image written into the content stream (BI ... ID ... EI) is checked like an XObject."""
    data = zlib.compress(bytes(9000 * 9000))
    assert b"EI" not in data  # the content parser ends the image at the first 'EI'
    writer = PdfWriter()
    page = writer.add_blank_page(600, 800)
    content = DecodedStreamObject()
    content.set_data(b"q 100 0 0 100 0 0 cm BI /W 9000 /H 9000 /BPC 8 /CS /G /F /Fl ID " + data + b"\nEI Q\n")
    page[NameObject("/Contents")] = writer._add_object(content)
    path = tmp_path / "inline.pdf"
    writer.write(path)
    assert reason_of(path).startswith("page 1: an image of 9000x9000 pixels (81 megapixels) is over the 64 ")


# --- DOCX ---------------------------------------------------------------------------------------


def _docx_bytes(document: docx.document.Document) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _with_padded_body(data: bytes, padding: bytes) -> bytes:
    """The same DOCX with `padding` inserted into word/document.xml (XML whitespace is content-free)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "word/document.xml":
                body = body.replace(b"</w:body>", padding + b"</w:body>")
            target.writestr(info.filename, body)
    return buffer.getvalue()


def test_docx_zip_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("A short letter.")
    path = tmp_path / "bomb.docx"
    padding = (b" " * 1017 + b"<!---->") * (64 * 1024)  # 64 MB of valid XML that compresses 1000:1
    path.write_bytes(_with_padded_body(_docx_bytes(document), padding))
    assert path.stat().st_size < 300_000
    reason = reason_of(path)
    assert reason.startswith("part word/document.xml is compressed ")
    assert reason.endswith(":1, over the 200:1 limit (LOUPE_MAX_ZIP_RATIO)")


def test_docx_over_the_unzipped_cap(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("A long letter.")
    noise = os.urandom(3 * MB).hex().encode()  # 6 MB that barely compresses: no ratio alarm
    path = tmp_path / "big.docx"
    path.write_bytes(_with_padded_body(_docx_bytes(document), b"<!--" + noise + b"-->"))
    reason = reason_of(path, ReadLimits(max_unzipped_bytes=4 * MB))
    assert reason.startswith("unzips to 6.") and reason.endswith(" MB, over the 4 MB limit (LOUPE_MAX_UNZIPPED_MB)")


def test_docx_picture_over_the_pixel_cap(tmp_path: Path, checkerboard: Board, png_bytes: Callable) -> None:
    document = docx.Document()
    document.add_paragraph("See the picture.")
    document.add_picture(io.BytesIO(png_bytes(checkerboard(40))))
    data = _docx_bytes(document)
    # swap the picture's bytes for a PNG that declares 10,000 x 10,000 pixels
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            is_picture = info.filename.startswith("word/media/")
            target.writestr(info.filename, png_header(10_000, 10_000) if is_picture else source.read(info))
    path = tmp_path / "picture.docx"
    path.write_bytes(buffer.getvalue())
    assert reason_of(path) == ("page 1: an image of 10000x10000 pixels (100 megapixels) is over the 64 megapixel "
                               "limit (LOUPE_MAX_IMAGE_MEGAPIXELS)")


# --- image files --------------------------------------------------------------------------------


def test_image_file_header_over_the_pixel_cap(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(10_000, 10_000))  # 100 megapixels declared in 100 bytes
    assert reason_of(path) == ("an image of 10000x10000 pixels (100 megapixels) is over the 64 megapixel limit "
                               "(LOUPE_MAX_IMAGE_MEGAPIXELS)")


def test_image_file_is_checked_before_it_is_decoded(tmp_path: Path) -> None:
    """Below PIL's own alarm: only the setting refuses it, from the header (the data would not decode)."""
    path = tmp_path / "big.png"
    path.write_bytes(png_header(3000, 3000))
    assert reason_of(path, ReadLimits(max_image_pixels=4_000_000)) == (
        "an image of 3000x3000 pixels (9 megapixels) is over the 4 megapixel limit (LOUPE_MAX_IMAGE_MEGAPIXELS)")


def test_gigapixel_header_is_refused_by_pil_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "giga.png"
    path.write_bytes(png_header(50_000, 50_000))
    assert reason_of(path).startswith("image too large to decode safely (")


# --- what read_file opens -----------------------------------------------------------------------


def test_device_is_refused_before_reading(tmp_path: Path) -> None:
    assert reason_of(Path("/dev/zero")) == "not a regular file (a device)"
    link = tmp_path / "zero.txt"
    link.symlink_to("/dev/zero")
    assert reason_of(link) == "not a regular file (a symbolic link)"


def test_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "notes.txt"
    os.mkfifo(fifo)
    assert reason_of(fifo) == "not a regular file (a named pipe)"


def test_symbolic_link_to_a_server_file_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "hostname.txt"
    link.symlink_to("/etc/hostname")
    assert reason_of(link) == "not a regular file (a symbolic link)"


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.pdf"
    folder.mkdir()
    assert reason_of(folder) == "not a regular file (a directory)"


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.txt"
    with open(sparse, "wb") as handle:
        handle.truncate(64 * 2**30)  # 64 GB that take no disk: reading them would take the memory
    assert reason_of(sparse) == "file is 65536 MB, over the 200 MB limit (LOUPE_MAX_FILE_MB)"
    small = tmp_path / "notes.txt"
    small.write_bytes(b"word " * 600_000)
    assert reason_of(small, ReadLimits(max_file_bytes=2 * MB)) == (
        "file is 2.9 MB, over the 2 MB limit (LOUPE_MAX_FILE_MB)")


def test_sniffed_type_wins_and_is_reported(tmp_path: Path, text_pdf: Path) -> None:
    renamed = tmp_path / "report.txt"
    renamed.write_bytes(text_pdf.read_bytes())
    parsed: ParsedFile = read_file(renamed, None)
    assert parsed.kind == "pdf"
    assert parsed.warnings[0] == "named .txt but is a PDF; read as PDF"
    assert len(list(parsed.items)) == 4  # three pages of text, one picture
