"""Ingest throughput against the raw encoder: chunks per second from files to searchable, on real text.

The corpus is Disfl-QA paragraphs (Wikipedia text), written as files as `rag eval` writes them, ingested into fresh
folder stores by the Ingestor. In each round, interleaved, so that a change in the machine's load touches all alike:
- raw encoder: `SentenceTransformer.encode` of the very texts that ingest embedded (each chunk's heading + text, read
  back from the store), batch size as ingest's, called directly as a user of the library would;
- ingest, sentences after (Loupe's default): ingest() until every file is committed and searchable, then the pass
  that fills the sentence vectors (timed apart, and in total);
- ingest, sentences inline (the way before, the baseline): the sentences embedded with the chunks, before each commit.
The median round counts. Wall time is what a user waits; CPU time of this process (the parse worker's is not
counted: a text file's parse is a small share) is the figure a loaded machine disturbs least.

    .venv/bin/python -m benchmarks.ingest_throughput [--documents 300] [--rounds 3] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.embedders import DISFLQA  # noqa: E402
from ingest.pipeline import SENTENCES_INLINE, SENTENCES_LATER, Ingestor  # noqa: E402
from rag.components import Models, configure_hub  # noqa: E402
from rag.evaluation.beir import Document  # noqa: E402
from rag.evaluation.harness import _write_corpus  # noqa: E402
from rag.records import indexed_text  # noqa: E402
from rag.settings import Settings  # noqa: E402


def read_corpus(count: int) -> list[Document]:
    with DISFLQA.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(count))]
    return [Document(r["_id"], r.get("title", ""), r["text"]) for r in records]


def ingest(models: Models, files: list[Path], store: Path, sentences: str) -> dict:
    """Seconds until every file is searchable, then the sentence pass's seconds (after, only)."""
    kb = models.open_store(store)
    ingestor = Ingestor(kb, models.settings.with_(store=store), models.text_embedder, sentences=sentences)
    start, cpu = time.perf_counter(), time.process_time()
    report = ingestor.ingest(files)
    searchable, searchable_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not report.failed, report.failed[0].message
    filled_at, cpu = time.perf_counter(), time.process_time()
    ingestor.fill_sentences(report.document_ids())
    row = {"chunks": report.totals()["chunks"], "searchable_s": searchable, "searchable_cpu_s": searchable_cpu,
           "sentences_s": time.perf_counter() - filled_at, "sentences_cpu_s": time.process_time() - cpu,
           "stages": dict(report.seconds),
           "texts": [indexed_text(heading, text) for _, heading, text in kb.chunk_texts()]}
    kb.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_hub()
    settings = Settings.load({"ocr": False, "torch_threads": args.threads}, environ={})
    models = Models.load(settings, with_images=False)
    raw, batch = models.text_embedder.model, settings.embed_batch_size or models.text_embedder.batch_size
    speeds: dict[str, list[float]] = {"raw": [], "searchable": [], "after_total": [], "inline": []}
    per_cpu: dict[str, list[float]] = {name: [] for name in speeds}  # chunks per CPU-second of this process
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "files").mkdir()
        files = list(_write_corpus(read_corpus(args.documents), tmp / "files"))
        ingest(models, files[:20], tmp / "warm", SENTENCES_INLINE)  # warm-up: first calls allocate, workers start
        for number in range(args.rounds + 1):
            after = ingest(models, files, tmp / f"after-{number}", SENTENCES_LATER)
            inline = ingest(models, files, tmp / f"inline-{number}", SENTENCES_INLINE)
            start, cpu = time.perf_counter(), time.process_time()
            raw.encode(after["texts"], batch_size=batch, normalize_embeddings=True)
            raw_s, raw_cpu = time.perf_counter() - start, time.process_time() - cpu
            if number == 0:
                continue  # a round of warm-up for every path: the first store's files were cold in the page cache
            chunks = after["chunks"]
            speeds["raw"].append(chunks / raw_s)
            speeds["searchable"].append(chunks / after["searchable_s"])
            speeds["after_total"].append(chunks / (after["searchable_s"] + after["sentences_s"]))
            speeds["inline"].append(chunks / inline["searchable_s"])
            per_cpu["raw"].append(chunks / raw_cpu)
            per_cpu["searchable"].append(chunks / after["searchable_cpu_s"])
            per_cpu["after_total"].append(chunks / (after["searchable_cpu_s"] + after["sentences_cpu_s"]))
            per_cpu["inline"].append(chunks / inline["searchable_cpu_s"])
    median = {name: statistics.median(values) for name, values in speeds.items()}
    median_cpu = {name: statistics.median(values) for name, values in per_cpu.items()}
    result = {"documents": args.documents, "chunks": chunks, "rounds": args.rounds, "threads": args.threads,
              "batch": batch, "load_average": os.getloadavg(),
              "chunks_per_s": {name: round(value, 1) for name, value in median.items()},
              "vs_raw": {name: round(value / median["raw"], 2) for name, value in median.items()},
              "chunks_per_cpu_s": {name: round(value, 1) for name, value in median_cpu.items()},
              "vs_raw_cpu": {name: round(value / median_cpu["raw"], 2) for name, value in median_cpu.items()},
              "last_round_stages": {"after": after["stages"], "inline": inline["stages"]}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.documents} Disfl-QA paragraphs, {chunks} chunks, {args.threads} threads, batch {batch}, median of "
          f"{args.rounds} rounds, load average {result['load_average'][0]:.1f}")
    print("| path | chunks/s | vs raw encoder | chunks per CPU-second | vs raw encoder |")
    print("|---|---|---|---|---|")
    labels = {"raw": "raw encoder (SentenceTransformer.encode)", "searchable": "ingest, sentences after: searchable",
              "after_total": "ingest, sentences after: with the sentence pass",
              "inline": "ingest, sentences inline (before)"}
    for name, label in labels.items():
        print(f"| {label} | {median[name]:.1f} | {median[name] / median['raw']:.2f}x | {median_cpu[name]:.1f} | "
              f"{median_cpu[name] / median_cpu['raw']:.2f}x |")


if __name__ == "__main__":
    main()
