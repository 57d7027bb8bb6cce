"""Ingest speed and memory: seconds per page and per chunk, stage split, and peak memory on big PDFs.

Baselines in the same run: the same PDF embedded with other batch sizes (1 is what a naive loop does);
peak memory for a PDF five times larger (it should stay flat: pages stream through); and a folder
of short notes ingested in one call (their chunks share model calls) against one call per file.

    .venv/bin/python -m benchmarks.ingest_speed [--pages 200] [--big-pages 1000] [--notes 200] [--batch-sizes 1,16,64]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import PeakRss, make_pdf, paragraph  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402
from rag.components import Models, configure_hub  # noqa: E402
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


def notes_folder(folder: Path, count: int) -> Path:
    rng = random.Random(3)
    folder.mkdir()
    for n in range(count):
        (folder / f"note-{n:04d}.txt").write_text(paragraph(rng, sentences=3))
    return folder


def ingest_notes(models: Models, folder: Path, store: Path, together: bool) -> float:
    ingestor = Ingestor(models.open_store(store), models.settings.with_(store=store), models.text_embedder)
    start = time.perf_counter()
    if together:
        ingestor.ingest([folder])
    else:
        for path in sorted(folder.iterdir()):
            ingestor.ingest([path])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--big-pages", type=int, default=1000)
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--batch-sizes", default="1,16,64", help="embedding batch sizes to compare")
    args = parser.parse_args()
    settings = Settings.load({"ocr": False})
    configure_hub()
    models = Models.load(settings, with_images=False)
    device = models.text_embedder.device
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pdf = make_pdf(tmp / "doc.pdf", args.pages)
        big = make_pdf(tmp / "big.pdf", args.big_pages, seed=1)
        ingest_once(models, make_pdf(tmp / "warm.pdf", 3, seed=2), tmp / "warm", 64)  # warm the model up
        sizes = [int(size) for size in args.batch_sizes.split(",")]
        by_size = {size: ingest_once(models, pdf, tmp / f"batch-{size}", size) for size in sizes}
        default = settings.embed_batch_size or models.text_embedder.batch_size
        large = ingest_once(models, big, tmp / "c", default)
        notes = notes_folder(tmp / "notes", args.notes)
        notes_together = ingest_notes(models, notes, tmp / "d", together=True)
        notes_apart = ingest_notes(models, notes, tmp / "e", together=False)
    print(f"device: {device}, cores: {os.cpu_count()}")
    print("| run | pages | chunks | total s | ms/page | ms/chunk | parse s | embed s | embed sentences s | index s | "
          "peak RSS growth MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [(f"batch {size}" + (" (Loupe's default)" if size == default else ""), row) for size, row in by_size.items()]
    for name, row in rows + [(f"{args.big_pages}-page PDF, batch {default}", large)]:
        stages = row["stages"]
        print(f"| {name} | {row['pages']} | {row['chunks']} | {row['seconds']:.1f} | {row['per_page_ms']:.0f} | "
              f"{row['per_chunk_ms']:.1f} | {stages.get('parse', 0):.1f} | {stages.get('embed', 0):.1f} | "
              f"{stages.get('embed sentences', 0):.1f} | {stages.get('index', 0):.2f} | {row['rss_growth_mb']:.0f} |")
    fastest = min(by_size, key=lambda size: by_size[size]["seconds"])
    print(f"\nfastest batch size: {fastest} ({by_size[sizes[0]]['seconds'] / by_size[fastest]['seconds']:.2f}x "
          f"batch {sizes[0]})")
    print(f"{args.notes} short notes: {notes_together:.1f}s in one ingest (shared model calls) vs "
          f"{notes_apart:.1f}s file by file: {notes_apart / notes_together:.2f}x")
    print(f"memory: {args.big_pages} pages grew RSS by {large['rss_growth_mb']:.0f} MB vs "
          f"{by_size[default]['rss_growth_mb']:.0f} MB for {args.pages} pages" if default in by_size else "")


if __name__ == "__main__":
    main()
