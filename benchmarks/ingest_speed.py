"""Ingest speed and memory: seconds per page and per chunk, stage split, and peak memory on big PDFs.

Baselines in the same run: the same PDF embedded one chunk at a time (batch size 1, what a naive loop
does), and peak memory for a PDF ten times larger (it should stay flat: pages stream through).

    .venv/bin/python -m benchmarks.ingest_speed [--pages 200] [--big-pages 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import PeakRss, make_pdf  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402
from rag.components import Models  # noqa: E402
from rag.settings import Settings  # noqa: E402


def ingest_once(models: Models, pdf: Path, store: Path, batch: int) -> dict:
    settings = models.settings.with_(store=store, embed_batch_size=batch)
    kb = models.open_store(store)
    ingestor = Ingestor(kb, settings, models.text_embedder)
    with PeakRss() as rss:
        start = time.perf_counter()
        report = ingestor.ingest([pdf])
        seconds = time.perf_counter() - start
    totals = report.totals()
    assert not report.failed, report.failed
    kb.close()
    return {"pages": totals["pages"], "chunks": totals["chunks"], "seconds": seconds,
            "per_page_ms": 1000 * seconds / totals["pages"], "per_chunk_ms": 1000 * seconds / totals["chunks"],
            "stages": dict(report.seconds), "rss_growth_mb": rss.growth_mb}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--big-pages", type=int, default=1000)
    args = parser.parse_args()
    settings = Settings.load({"ocr": False})
    models = Models.load(settings, with_images=False)
    device = models.text_embedder.device
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pdf = make_pdf(tmp / "doc.pdf", args.pages)
        big = make_pdf(tmp / "big.pdf", args.big_pages, seed=1)
        ingest_once(models, make_pdf(tmp / "warm.pdf", 3, seed=2), tmp / "warm", 64)  # warm the model up
        batched = ingest_once(models, pdf, tmp / "a", settings.embed_batch_size)
        single = ingest_once(models, pdf, tmp / "b", 1)
        large = ingest_once(models, big, tmp / "c", settings.embed_batch_size)
    print(f"device: {device}, cores: {os.cpu_count()}")
    print("| run | pages | chunks | total s | ms/page | ms/chunk | parse s | embed s | index s | peak RSS growth MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in ((f"Loupe (batch {settings.embed_batch_size})", batched), ("baseline: batch 1", single),
                      (f"Loupe, {args.big_pages}-page PDF", large)):
        stages = row["stages"]
        print(f"| {name} | {row['pages']} | {row['chunks']} | {row['seconds']:.1f} | {row['per_page_ms']:.0f} | "
              f"{row['per_chunk_ms']:.1f} | {stages.get('parse', 0):.1f} | {stages.get('embed', 0):.1f} | "
              f"{stages.get('index', 0):.2f} | {row['rss_growth_mb']:.0f} |")
    print(f"\nspeed-up of batching over batch 1: {single['seconds'] / batched['seconds']:.2f}x")
    print(f"memory: {args.big_pages} pages grew RSS by {large['rss_growth_mb']:.0f} MB vs "
          f"{batched['rss_growth_mb']:.0f} MB for {args.pages} pages")


if __name__ == "__main__":
    main()
