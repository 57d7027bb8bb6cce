"""PCA through Loupe's own path: what 64, 128 and 192 of MiniLM's 384 dimensions keep, and what they cost.

For each size, the Disfl-QA store that `python -m rag eval --beir DIR` cached is copied and `reembed --embed-dims N`
runs on the copy (rag.reembed: PCA fitted on the copy's own chunk vectors and saved with it, the stored vectors
projected, no model run). The sample's queries are then ranked by Loupe's retriever, with the query vectors going
through the store's projection as the app's do (rag.pca.ProjectedEmbedder), in dense and hybrid mode. Reported: the
explained variance, the size of the FAISS index file, the retriever's time per query (query vectors computed
beforehand, so this is projection + search + fusion), and nDCG@10 at the document level as the eval command ranks.
The cached store itself is only read.

    .venv/bin/python -m benchmarks.pca_dims [--beir DIR] [--queries 1000] [--sizes 64,128,192] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.embedder import Embedder, EmbedderWrapper  # noqa: E402
from rag.evaluation.beir import BeirSet, load_beir  # noqa: E402
from rag.evaluation.harness import IDS_FILE, PreparedStore, evaluate_retrieval, store_folder  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402
from rag.store import CATALOG_FILE, require_store  # noqa: E402

DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"
SIZES = (64, 128, 192)
MODES = ("dense", "hybrid")


class MemoEmbedder(EmbedderWrapper):
    """An embedder that embeds each text once: the queries are the same for every size and mode."""

    def __init__(self, base: Embedder) -> None:
        super().__init__(base)
        self.known: dict[tuple[str, bool], np.ndarray] = {}

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if (t, query) not in self.known))
        if new:
            self.known |= {(t, query): v for t, v in zip(new, self.base.embed(new, batch_size, urgent, query))}
        return np.stack([self.known[(t, query)] for t in texts])


def sample(beir: BeirSet, count: int) -> BeirSet:
    """`count` judged queries drawn with seed 0 (the sample the other Disfl-QA figures use); 0 keeps all."""
    ids = sorted(beir.qrels)
    if count:
        ids = sorted(random.Random(0).sample(ids, min(count, len(ids))))
    return replace(beir, queries={q: beir.queries[q] for q in ids}, qrels={q: beir.qrels[q] for q in ids})


def copy_store(source: Path, target: Path) -> Path:
    """A copy of a knowledge base; the catalog through SQLite's backup, consistent even while another process
    has the source open."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(f"{CATALOG_FILE}*", "staging"))
    with sqlite3.connect(require_store(source)) as reader, sqlite3.connect(target / CATALOG_FILE) as writer:
        reader.backup(writer)
    return target


def variance_curve(folder: Path) -> np.ndarray:
    """The cumulative share of the variance of the store's chunk vectors that the first k components hold."""
    from rag.catalog import Catalog

    catalog = Catalog.open(require_store(folder))
    try:
        vectors = np.concatenate([v for _, v in catalog.iter_chunk_vectors(int(catalog.get_meta("text_dim")))])
    finally:
        catalog.close()
    singular = np.linalg.svd(vectors - vectors.mean(axis=0), compute_uv=False)
    return np.cumsum(singular ** 2) / np.sum(singular ** 2)


def index_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("text-*.faiss"))


def measure(folder: Path, embedder, beir: BeirSet, settings: Settings) -> dict:
    """nDCG@10 and time per query of each mode, through Loupe's retriever on the store at `folder`."""
    from rag.retrieval import Retriever
    from rag.store import KnowledgeBase

    ids = json.loads((folder / IDS_FILE).read_text())
    kb = KnowledgeBase(folder, embedder.model_id, use_gpu=settings.device != "cpu")
    try:
        store = PreparedStore(kb, folder, {int(k): v for k, v in ids["documents"].items()}, ids.get("failed", {}),
                              True, 0.0)
        row = {"index_bytes": index_bytes(folder)}
        for mode in MODES:
            # Recall at 1 and 10 only: ranking 100 deep makes the retriever's near-duplicate filter (quadratic in
            # the depth) take most of the time, for figures this benchmark does not report
            result = evaluate_retrieval(Retriever(kb, embedder, None, mode), beir, store, mode, 10, recall_at=(1, 10))
            row |= {f"{mode}_ndcg@10": result["ndcg@10"], f"{mode}_recall@1": result["recall@1"],
                    f"{mode}_ms_per_query": 1000 * result["seconds_per_query"]}
        return row
    finally:
        kb.close()


def run(beir_folder: Path, queries: int, sizes: Sequence[int]) -> dict:
    from rag.embedder import build_embedder
    from rag.pca import ProjectedEmbedder, Projection
    from rag.reembed import reembed

    settings = Settings.load({"ocr": False, "device": "cpu"})
    beir = sample(load_beir(beir_folder), queries)
    cached = store_folder(beir, settings)
    require_store(cached)
    embedder = MemoEmbedder(build_embedder(settings, "cpu"))
    embedder.embed(list(beir.queries.values()), query=True)  # once, before anything is timed
    rows = {"384 (no PCA)": {"explained_variance": 1.0} | measure(cached, embedder, beir, settings)}
    with tempfile.TemporaryDirectory(prefix="loupe-pca-") as work:
        for size in sizes:
            copy = copy_store(cached, Path(work) / f"pca{size}" / cached.name)
            report = reembed(copy, settings.with_(store=copy, embed_dims=size), embedder=embedder.base)
            projected = ProjectedEmbedder(embedder, Projection.load(copy))
            rows[f"{size} (PCA)"] = {"explained_variance": report.explained_variance,
                                     "reembed_s": report.seconds["total"]} | measure(copy, projected, beir, settings)
            shutil.rmtree(copy.parent)
    curve = variance_curve(cached)
    return {"chunks": report.chunks, "queries": len(beir.queries), "rows": rows,
            "quarter_explains": float(curve[len(curve) // 4 - 1]), "dims_for_90%": int(np.searchsorted(curve, 0.9)) + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--queries", type=int, default=1000, help="judged queries drawn with seed 0 (0: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="PCA sizes, comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.beir, args.queries, [int(s) for s in args.sizes.split(",")])
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['chunks']:,} chunks, {result['queries']:,} queries; a quarter of the dimensions explains "
          f"{result['quarter_explains']:.3f} of the variance, 90% takes {result['dims_for_90%']}")
    print("| dimensions | explained variance | index size | dense nDCG@10 | hybrid nDCG@10 | dense ms/query | "
          "hybrid ms/query |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['explained_variance']:.3f} | {row['index_bytes'] / 1024:,.0f} KiB | "
              f"{row['dense_ndcg@10']:.4f} | {row['hybrid_ndcg@10']:.4f} | {row['dense_ms_per_query']:.2f} | "
              f"{row['hybrid_ms_per_query']:.2f} |")


if __name__ == "__main__":
    main()
