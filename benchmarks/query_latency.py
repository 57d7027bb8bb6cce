"""Query latency: a question's time split into retrieve and generate, and time to first token.

Builds a knowledge base from the first N paragraphs of a BEIR folder (default: Disfl-QA in
../shared/data/disflqa) through the normal ingest pipeline, then asks the questions whose gold paragraph
is among them. The baseline in the same run is the extractive mode, which answers without the generator.

    .venv/bin/python -m benchmarks.query_latency [--paragraphs 300] [--questions 10]
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

from ingest.pipeline import Ingestor  # noqa: E402
from rag.components import Models, configure_hub  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402

DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--paragraphs", type=int, default=300)
    parser.add_argument("--questions", type=int, default=10)
    args = parser.parse_args()
    settings = Settings.load({"ocr": False})
    configure_hub()
    models = Models.load(settings, with_images=False)
    corpus = read_jsonl(args.beir / "corpus.jsonl")[: args.paragraphs]
    kept = {doc["_id"] for doc in corpus}
    gold = {}
    for line in (args.beir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query, doc, _ = line.split("\t")
        gold.setdefault(query, doc)
    questions = [q["text"] for q in read_jsonl(args.beir / "queries.jsonl") if gold.get(q["_id"]) in kept]
    questions = questions[: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for doc in corpus:
            (folder / f"{doc['_id']}.txt").write_text(doc["text"])
        kb = models.open_store(Path(tmp) / "kb")
        start = time.perf_counter()
        report = Ingestor(kb, settings, models.text_embedder).ingest([folder])
        print(f"ingested {report.totals()['files']} paragraphs, {report.totals()['chunks']} chunks in "
              f"{time.perf_counter() - start:.1f}s")
        assistant = models.assistant(kb)
        load = time.perf_counter()
        models.generator()
        print(f"generator load: {time.perf_counter() - load:.1f}s (once per process)")
        rows = {"generate": [], "extractive": []}
        for mode in rows:
            for question in questions:
                start = time.perf_counter()
                first = None
                answer = None
                for event in assistant.stream(question, mode=mode):
                    if isinstance(event, str) and first is None:
                        first = time.perf_counter() - start
                    elif not isinstance(event, str):
                        answer = event
                rows[mode].append((answer.seconds["retrieve"], answer.seconds["generate"], first or 0.0,
                                   time.perf_counter() - start))
    print(f"\n{len(questions)} questions, {settings.retrieval_mode} retrieval, top-{settings.top_k}, "
          f"device {models.text_embedder.device}, {os.cpu_count()} cores (medians)")
    print("| mode | retrieve ms | generate s | first token s | total s |")
    print("|---|---|---|---|---|")
    for mode, values in rows.items():
        retrieve, generate, first, total = (statistics.median(column) for column in zip(*values))
        print(f"| {mode} | {1000 * retrieve:.0f} | {generate:.2f} | {first:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
