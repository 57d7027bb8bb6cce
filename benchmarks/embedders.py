"""Embedder throughput: chunks per second for each local backend on the same real chunks in the same run, next to
the raw encoder (SentenceTransformer.encode called directly), and how far each backend's vectors are from fp32.

The chunks are Disfl-QA paragraphs (SQuAD 2.0 Wikipedia text, each about one 200-token chunk), embedded as ingest
embeds them: through `embed()`, in batches of the ingest's size, taking turns at the compute gate. The backends
run in interleaved rounds, so that a change in the machine's load touches all of them alike; the median round
counts. Threads: torch and onnxruntime both get --threads.

    .venv/bin/python -m benchmarks.embedders [--chunks 400] [--rounds 3] [--threads 2] [--json]

nDCG@10 for each embedder comes from the eval command (docs/BENCHMARKS.md):
    .venv/bin/python -m rag eval --beir ../shared/data/disflqa --mode dense --embedder onnx-int8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rag.embedder import build_embedder  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402

DISFLQA = PROJECT_ROOT.parent / "shared" / "data" / "disflqa" / "corpus.jsonl"
BACKENDS = ("sbert", "onnx", "onnx-int8")


def read_chunks(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(count))]
    return [f"{r.get('title', '')}\n\n{r['text']}".strip() for r in records]


def measure(runners: dict[str, Callable[[], np.ndarray]], chunks: int, rounds: int) -> dict[str, float]:
    """Median chunks per second of each runner, over interleaved rounds."""
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            speeds[name].append(chunks / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in speeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    texts = read_chunks(DISFLQA, args.chunks)
    settings = Settings.load({"torch_threads": args.threads}, environ={})
    embedders = {name: build_embedder(settings.with_(embedder=name)) for name in BACKENDS}
    raw = embedders["sbert"].model  # the SentenceTransformer itself, called as a user of the library would
    batch = embedders["sbert"].batch_size
    runners: dict[str, Callable[[], np.ndarray]] = {
        "raw encoder (SentenceTransformer.encode)": lambda: raw.encode(texts, batch_size=batch,
                                                                      normalize_embeddings=True),
        **{name: (lambda e=e: e.embed(texts)) for name, e in embedders.items()},
    }
    for run in runners.values():  # warm-up: first calls allocate
        run()
    speeds = measure(runners, len(texts), args.rounds)
    reference = embedders["sbert"].embed(texts)
    agreement = {}
    for name, embedder in embedders.items():
        cosines = (embedder.embed(texts) * reference).sum(axis=1)
        agreement[name] = {"mean_cosine_to_fp32": round(float(cosines.mean()), 4),
                           "min_cosine_to_fp32": round(float(cosines.min()), 4)}
    baseline = speeds["raw encoder (SentenceTransformer.encode)"]
    rows = {name: {"chunks_per_s": round(speed, 1), "vs_raw": round(speed / baseline, 2),
                   "vs_sbert": round(speed / speeds["sbert"], 2), **agreement.get(name, {})}
            for name, speed in speeds.items()}
    result = {"chunks": len(texts), "rounds": args.rounds, "threads": args.threads, "batch": batch,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average": os.getloadavg(),
              "backends": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(texts)} Disfl-QA chunks, {args.threads} threads, batch {batch}, median of {args.rounds} rounds, "
          f"load average {result['load_average'][0]:.1f}")
    print("| backend | chunks/s | vs raw encoder | vs sbert | mean / min cosine to fp32 |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        cos = (f"{row['mean_cosine_to_fp32']:.4f} / {row['min_cosine_to_fp32']:.4f}"
               if "mean_cosine_to_fp32" in row else "")
        print(f"| {name} | {row['chunks_per_s']:.1f} | {row['vs_raw']:.2f}x | {row['vs_sbert']:.2f}x | {cos} |")


if __name__ == "__main__":
    main()
