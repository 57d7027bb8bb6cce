"""PCA on a knowledge base's text vectors: what 64, 128 and 192 of MiniLM's 384 dimensions keep, and cost.

Reads the chunk vectors of the store `python -m rag eval --beir DIR` cached (nothing is re-embedded but the
queries), fits PCA on them, and for each size reports the explained variance, the FAISS flat index's size, the
search time of the sample's queries, and dense nDCG@10 / Recall@1 at the document level (a document ranks
where its best chunk ranks, as in the eval command). The store is only read.

    .venv/bin/python -m benchmarks.pca_dims [--beir DIR] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.catalog import Catalog  # noqa: E402
from rag.evaluation.beir import load_beir  # noqa: E402
from rag.evaluation.harness import IDS_FILE, store_folder  # noqa: E402
from rag.evaluation.metrics import ranking_metrics  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402
from rag.store import require_store  # noqa: E402

DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"
SIZES = (64, 128, 192)
CANDIDATES = 100  # chunks searched per query, as the eval command asks for


def store_vectors(folder: Path) -> tuple[np.ndarray, list[list[str]]]:
    """Every chunk vector of the store, and the corpus ids of each chunk's document."""
    catalog = Catalog.open(require_store(folder))
    try:
        dim = int(catalog.get_meta("text_dim") or 0)
        parts = list(catalog.iter_chunk_vectors(dim))
        ids = np.concatenate([p[0] for p in parts])
        documents = {i: r.document_id for i, r in catalog.chunks(ids.tolist()).items()}
    finally:
        catalog.close()
    corpus_ids = {int(k): v for k, v in json.loads((folder / IDS_FILE).read_text())["documents"].items()}
    return np.concatenate([p[1] for p in parts]), [corpus_ids.get(documents[int(i)], []) for i in ids]


def normalized(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def measure(chunks: np.ndarray, queries: np.ndarray, owners: list[list[str]], query_ids: list[str],
            qrels: dict) -> dict:
    import faiss

    index = faiss.IndexFlatIP(chunks.shape[1])
    index.add(chunks)
    start = time.perf_counter()
    _, found = index.search(queries, CANDIDATES)
    seconds = time.perf_counter() - start
    rankings = {q: [c for i in row if i >= 0 for c in owners[i]] for q, row in zip(query_ids, found)}
    metrics = ranking_metrics(rankings, {q: qrels[q] for q in query_ids})
    return {"index_bytes": len(faiss.serialize_index(index)), "ms_per_query": 1000 * seconds / len(query_ids),
            "ndcg@10": metrics["ndcg@10"], "recall@1": metrics["recall@1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--queries", type=int, default=1000, help="judged queries drawn with seed 0 (0: all)")
    args = parser.parse_args()
    from rag.text_embedder import TextEmbedder

    settings = Settings.load({"ocr": False})
    beir = load_beir(args.beir)
    chunks, owners = store_vectors(store_folder(beir, settings))
    query_ids = sorted(beir.qrels)
    if args.queries:
        query_ids = sorted(random.Random(0).sample(query_ids, min(args.queries, len(query_ids))))
    queries = TextEmbedder(settings.text_model, "cpu").embed([beir.queries[q] for q in query_ids])

    rows = {"384 (no PCA)": {"explained_variance": 1.0} | measure(chunks, queries, owners, query_ids, beir.qrels)}
    mean = chunks.mean(axis=0)
    _, singular, components = np.linalg.svd(chunks - mean, full_matrices=False)
    variance = singular ** 2 / np.sum(singular ** 2)
    for size in SIZES:
        project = components[:size].T
        rows[f"{size} (PCA)"] = {"explained_variance": float(variance[:size].sum())} | measure(
            normalized((chunks - mean) @ project), normalized((queries - mean) @ project), owners, query_ids,
            beir.qrels)
    print(f"{len(chunks):,} chunks, {len(query_ids):,} queries; a quarter of the dimensions ({len(variance) // 4}) "
          f"explains {variance[:len(variance) // 4].sum():.3f} of the variance; 90% takes "
          f"{int(np.searchsorted(np.cumsum(variance), 0.9)) + 1} dimensions")
    print("| dimensions | explained variance | index size | search ms/query | dense nDCG@10 | dense Recall@1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['explained_variance']:.3f} | {row['index_bytes'] / 1024:,.0f} KiB | "
              f"{row['ms_per_query']:.3f} | {row['ndcg@10']:.4f} | {row['recall@1']:.4f} |")


if __name__ == "__main__":
    main()
