"""read_file_bounded: real worker processes parsing real files, within a time and a memory limit."""

from __future__ import annotations

import dataclasses
import gc
import io
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image

from ingest.parse_worker import read_file_bounded
from ingest.parsed import IngestError, ParsedFile, ReadLimits, TextBlock
from ingest.readers import read_file

LIMITS = ReadLimits()
Board = Callable[[int], Image.Image]


def _result(parsed: ParsedFile) -> tuple:
    """Everything a consumer sees, warnings only once the items are consumed."""
    items = list(parsed.items)
    return parsed.kind, parsed.page_count, items, parsed.warnings


def _refusal(path: Path, limits: ReadLimits, ocr: bool = False) -> str:
    with pytest.raises(IngestError) as caught:
        list(read_file_bounded(path, ocr, limits).items)
    assert caught.value.path == str(path)
    return caught.value.reason


@pytest.fixture
def files(tmp_path: Path, text_pdf: Path, docx_file: Path, checkerboard: Board, png_bytes: Callable) -> list[Path]:
    """One file of each kind the readers take."""
    samples = {
        "board.png": png_bytes(checkerboard(48)),
        "notes.txt": b"First paragraph.\n\nSecond paragraph.\n",
        "guide.md": b"# Setup\n\nInstall it.\n\n## Use\n\nRun it.\n",
        "page.html": b"<html><body><h1>Title</h1><p>Some words in a page.</p></body></html>",
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    return [text_pdf, docx_file, *(tmp_path / name for name in samples)]


def test_each_kind_gives_the_same_items_as_read_file(files: list[Path]) -> None:
    for path in files:
        assert _result(read_file_bounded(path, False, LIMITS)) == _result(read_file(path, None, LIMITS)), path.name


def test_ocr_runs_in_the_worker_and_its_seconds_come_back(scanned_pdf: Path, invoice_text: str) -> None:
    parsed = read_file_bounded(scanned_pdf, True, LIMITS)
    texts = [item for item in parsed.items if isinstance(item, TextBlock)]
    assert len(texts) == 1 and texts[0].ocr and "4711" in texts[0].text
    assert parsed.ocr_seconds > 0  # the worker's own engine ran; the parent's never loaded
    assert parsed.warnings == []


def test_opening_errors_surface_from_the_call(encrypted_pdf: Path, tmp_path: Path) -> None:
    with pytest.raises(IngestError) as caught:
        read_file_bounded(encrypted_pdf, False, LIMITS)
    assert caught.value.reason == "encrypted PDF (password required)"
    link = tmp_path / "hostname.txt"
    link.symlink_to("/etc/hostname")
    with pytest.raises(IngestError) as caught:
        read_file_bounded(link, False, LIMITS)
    assert caught.value.reason == "not a regular file (a symbolic link)"


def test_caps_past_the_start_fail_the_file_while_it_is_consumed(tmp_path: Path, checkerboard: Board) -> None:
    path = tmp_path / "photo.pdf"
    checkerboard(400).save(path, format="PDF")
    assert _refusal(path, dataclasses.replace(LIMITS, max_image_pixels=100_000)) == (
        "page 1: an image of 400x400 pixels (0.2 megapixels) is over the 0.1 megapixel limit "
        "(LOUPE_MAX_IMAGE_MEGAPIXELS)")


# --- time ---------------------------------------------------------------------------------------


def test_slow_pdf_times_out_and_the_next_file_parses(pypdf_resources: Path, text_pdf: Path) -> None:
    """issue-604.pdf takes 15 s to read on 2 busy cores; 2 s is the product's own limit, set low."""
    slow = pypdf_resources / "issue-604.pdf"
    assert _refusal(slow, dataclasses.replace(LIMITS, parse_timeout_s=2)) == (
        "took longer than 2 s to parse (LOUPE_PARSE_TIMEOUT_S)")
    assert _result(read_file_bounded(text_pdf, False, LIMITS)) == _result(read_file(text_pdf, None))


def test_the_server_keeps_running_python_while_a_file_parses(pypdf_resources: Path) -> None:
    """The parse holds the worker's GIL, not ours: this thread's loop runs all along."""
    outcome: list[str] = []

    def parse() -> None:
        try:
            list(read_file_bounded(pypdf_resources / "issue-604.pdf", False,
                                   dataclasses.replace(LIMITS, parse_timeout_s=3)).items)
        except IngestError as exc:
            outcome.append(exc.reason)

    worker = threading.Thread(target=parse)
    worker.start()
    iterations = 0
    while worker.is_alive():
        iterations += sum(range(1000)) > 0  # CPU-bound Python, as a chat request's would be
    worker.join()
    assert outcome == ["took longer than 3 s to parse (LOUPE_PARSE_TIMEOUT_S)"]
    assert iterations > 0


# --- memory -------------------------------------------------------------------------------------


@pytest.fixture
def big_picture_pdf(tmp_path: Path) -> Path:
    """A small file whose one picture decodes to 36 MB (6000 x 6000 grey)."""
    path = tmp_path / "poster.pdf"
    Image.new("L", (6000, 6000), 128).save(path, format="PDF")
    assert path.stat().st_size < 1_000_000
    return path


def test_memory_hungry_file_fails_alone_and_the_worker_is_replaced(big_picture_pdf: Path, text_pdf: Path) -> None:
    kind, _, items, _ = _result(read_file_bounded(big_picture_pdf, False, LIMITS))
    assert kind == "pdf" and len(items) == 1  # it parses with the default budget
    small = dataclasses.replace(LIMITS, parse_memory_bytes=16 * 2**20)
    assert _refusal(big_picture_pdf, small) == "needs more than 16 MB to parse (LOUPE_PARSE_MEMORY_MB)"
    assert _result(read_file_bounded(text_pdf, False, LIMITS)) == _result(read_file(text_pdf, None))


# --- abandoned files and threads ----------------------------------------------------------------


@pytest.fixture
def long_text_pdf(tmp_path: Path) -> Path:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for number in range(1, 61):
        pdf.add_page()
        pdf.multi_cell(0, 5, f"Page {number}. " + "Lorem ipsum dolor sit amet. " * 30)
    path = tmp_path / "long.pdf"
    pdf.output(str(path))
    return path


def test_an_abandoned_file_does_not_leak_into_the_next(long_text_pdf: Path, text_pdf: Path) -> None:
    started = read_file_bounded(long_text_pdf, False, LIMITS)
    assert next(started.items).text.startswith("Page 1.")
    never_started = read_file_bounded(long_text_pdf, False, LIMITS)
    del started, never_started
    gc.collect()
    # a worker handed back mid-file would answer the next request with the old file's pages
    for _ in range(3):
        assert _result(read_file_bounded(text_pdf, False, LIMITS)) == _result(read_file(text_pdf, None))


def test_two_threads_parse_at_once_each_with_its_own_worker(long_text_pdf: Path, docx_file: Path) -> None:
    expected = {path: _result(read_file(path, None)) for path in (long_text_pdf, docx_file)}
    got: dict[Path, tuple] = {}

    def parse(path: Path) -> None:
        got[path] = _result(read_file_bounded(path, False, LIMITS))

    threads = [threading.Thread(target=parse, args=(path,)) for path in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_image_bytes_come_back_intact(tmp_path: Path, png_bytes: Callable) -> None:
    noise = Image.frombytes("L", (1000, 1000), random.Random(7).randbytes(1_000_000))
    data = png_bytes(noise)  # 1 MB that does not compress: more than a socket buffer holds
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    _, _, items, _ = _result(read_file_bounded(path, False, LIMITS))
    assert items[0].data == data
    with Image.open(io.BytesIO(items[0].data)) as image:
        assert image.size == (1000, 1000)



def test_ctrl_c_is_left_to_the_parent_so_a_worker_survives_it(files: list[Path]) -> None:
    """Ctrl-C in a terminal signals the whole process group: the worker ignores it (the app decides when workers
    stop) instead of dying with a KeyboardInterrupt traceback in the middle of the app's shutdown."""
    import os
    import signal
    import time

    from ingest.parse_worker import _Worker

    worker = _Worker()
    try:
        status = Path(f"/proc/{worker.process.pid}/status")
        ignored = 0
        for _ in range(600):  # until the worker has started up and set its signals (bit 1 of SigIgn: SIGINT)
            if not worker.alive():
                break
            ignored = int(next(line for line in status.read_text().splitlines() if line.startswith("SigIgn:"))
                          .split()[1], 16)
            if ignored & 1 << (signal.SIGINT - 1):
                break
            time.sleep(0.1)
        assert ignored & 1 << (signal.SIGINT - 1), "the worker does not ignore SIGINT"
        os.kill(worker.process.pid, signal.SIGINT)
        time.sleep(0.5)
        assert worker.alive()
    finally:
        worker.stop()
    assert _result(read_file_bounded(files[0], False, LIMITS)) == _result(read_file(files[0], None, LIMITS))
