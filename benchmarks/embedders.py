"""Embedder throughput: chunks per second for each local backend on the same real chunks in the same run, next to
the raw encoder (SentenceTransformer.encode called directly), and how far each backend's vectors are from fp32.

The chunks are Disfl-QA paragraphs (SQuAD 2.0 Wikipedia text, each about one 200-token chunk), embedded as ingest
embeds them: through `embed()`, in batches of the ingest's size, taking turns at the compute gate. The backends
run in interleaved rounds, so that a change in the machine's load touches all of them alike; the median round
counts. Threads: torch and onnxruntime both get --threads.

Each run is timed twice: by the wall clock, and by this process's CPU time (every thread's), which a busy machine
(other processes taking turns on the cores) does not inflate. With --threads 1 the CPU time is the cleanest
measure of the work each backend does: with more, idle torch threads may spin (OpenMP), which counts as CPU time,
while onnxruntime's are set not to (rag.onnx_embedder).

    .venv/bin/python -m benchmarks.embedders [--chunks 500] [--rounds 3] [--threads 2] [--json]

nDCG@10 for each embedder comes from the eval command (docs/BENCHMARKS.md):
    .venv/bin/python -m rag eval --beir ../shared/data/disflqa --mode dense --embedder onnx-int8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rag.embedder import build_embedder  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402

DISFLQA = PROJECT_ROOT.parent / "shared" / "data" / "disflqa" / "corpus.jsonl"
BACKENDS = ("sbert", "onnx", "onnx-int8")
RAW = "raw encoder (SentenceTransformer.encode)"
WARM_UP = 32  # chunks each runner embeds before the timed rounds: first calls allocate


def read_chunks(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(count))]
    return [f"{r.get('title', '')}\n\n{r['text']}".strip() for r in records]


def measure(runners: dict[str, Callable[[list[str]], np.ndarray]], texts: list[str],
            rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Median chunks per second of each runner over interleaved rounds, by the wall clock ("wall") and by the
    process's CPU time ("cpu"); and each runner's vectors of the last round."""
    speeds: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, run in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            vectors[name] = run(texts)
            speeds[name]["cpu"].append(len(texts) / (time.process_time() - cpu))
            speeds[name]["wall"].append(len(texts) / (time.perf_counter() - wall))
            # as it goes: on a busy machine a run may take longer than its owner can wait
            print(f"round {len(speeds[name]['cpu'])} {name}: {speeds[name]['cpu'][-1]:.2f} chunks per CPU-second, "
                  f"{speeds[name]['wall'][-1]:.2f} chunks/s", file=sys.stderr, flush=True)
    medians = {name: {clock: statistics.median(values) for clock, values in clocks.items()}
               for name, clocks in speeds.items()}
    return medians, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated, from {', '.join(BACKENDS)}; sbert is always measured (the reference)")
    parser.add_argument("--no-raw", action="store_true", help="leave out the raw encoder (SentenceTransformer.encode)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    texts = read_chunks(DISFLQA, args.chunks)
    settings = Settings.load({"torch_threads": args.threads}, environ={})
    names = ["sbert", *(name for name in args.backends.split(",") if name in BACKENDS and name != "sbert")]
    embedders = {name: build_embedder(settings.with_(embedder=name)) for name in names}
    raw = embedders["sbert"].model  # the SentenceTransformer itself, called as a user of the library would
    batch = embedders["sbert"].batch_size
    load_before = os.getloadavg()
    runners: dict[str, Callable[[list[str]], np.ndarray]] = {} if args.no_raw else {
        RAW: lambda chunks: raw.encode(chunks, batch_size=batch, normalize_embeddings=True)}
    runners.update({name: embedder.embed for name, embedder in embedders.items()})
    for run in runners.values():  # warm-up: first calls allocate
        run(texts[:WARM_UP])
    speeds, vectors = measure(runners, texts, args.rounds)
    agreement = {}
    for name in embedders:
        cosines = (vectors[name] * vectors["sbert"]).sum(axis=1)
        agreement[name] = {"mean_cosine_to_fp32": round(float(cosines.mean()), 4),
                           "min_cosine_to_fp32": round(float(cosines.min()), 4)}
    result = {"chunks": len(texts), "rounds": args.rounds, "threads": args.threads, "batch": batch,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "backends": rows(speeds, agreement)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(texts)} Disfl-QA chunks, {args.threads} threads, batch {batch}, median of {args.rounds} rounds, "
          f"load average {load_before[0]:.1f} before, {result['load_average_after'][0]:.1f} after")
    print("| backend | chunks per CPU-second | vs sbert (CPU) | chunks/s (wall) | vs sbert (wall) | vs raw encoder "
          "(wall) | mean / min cosine to fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name, row in result["backends"].items():
        cos = (f"{row['mean_cosine_to_fp32']:.4f} / {row['min_cosine_to_fp32']:.4f}"
               if "mean_cosine_to_fp32" in row else "")
        vs_raw = "" if row["vs_raw"] is None else f"{row['vs_raw']:.2f}x"
        print(f"| {name} | {row['chunks_per_cpu_s']:.2f} | {row['vs_sbert_cpu']:.2f}x | {row['chunks_per_s']:.2f} | "
              f"{row['vs_sbert']:.2f}x | {vs_raw} | {cos} |")


def rows(speeds: dict[str, dict[str, float]],
         agreement: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Each backend's speeds by both clocks, as ratios to sbert's (and, by the wall clock, the raw encoder's)."""
    sbert, raw = speeds["sbert"], speeds.get(RAW)
    return {name: {"chunks_per_s": round(speed["wall"], 2), "chunks_per_cpu_s": round(speed["cpu"], 2),
                   "vs_raw": None if raw is None else round(speed["wall"] / raw["wall"], 2),
                   "vs_sbert": round(speed["wall"] / sbert["wall"], 2),
                   "vs_sbert_cpu": round(speed["cpu"] / sbert["cpu"], 2), **agreement.get(name, {})}
            for name, speed in speeds.items()}


if __name__ == "__main__":
    main()
