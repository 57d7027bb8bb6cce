"""Helpers shared by the benchmark scripts: synthetic documents and an RSS sampler."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

WORDS = ("harbour lighthouse keeper ledger cargo vessel tide storm winter engine valve pressure survey station "
         "glacier sediment river delta basalt granite orchard harvest ledger archive treaty council bridge tunnel "
         "railway signal copper cable turbine reactor pump filter membrane enzyme protein cell tissue").split()


def paragraph(rng: random.Random, sentences: int = 4) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 18))]
        out.append(" ".join(words).capitalize() + f" in {rng.randint(1800, 2030)}.")
    return " ".join(out)


def make_pdf(path: Path, pages: int, seed: int = 0) -> Path:
    from fpdf import FPDF

    rng = random.Random(seed)
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for _ in range(pages):
        pdf.add_page()
        for _ in range(4):
            pdf.multi_cell(0, 5, paragraph(rng))
            pdf.ln(2)
    pdf.output(str(path))
    return path


class PeakRss:
    """Samples this process's resident memory every 20 ms (or what `read` returns, in bytes, every `interval_s`);
    `peak` is the highest seen."""

    def __init__(self, read: Callable[[], int] | None = None, interval_s: float = 0.02) -> None:
        self.read = read or self.current
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.start = self.read()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20

