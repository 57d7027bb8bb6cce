"""One table of every embedder: fp32, int8, PCA-128 and fine-tuned, each with its intrinsic scores, nDCG@10 on
Disfl-QA (dense and hybrid), its speed, its calibrated "documents don't say" cut-offs and, with --answers, its
refusals on answerable and unanswerable questions. It reuses the other benchmarks' parts:

- the stores: the Disfl-QA stores `python -m rag eval` caches (built here through the same harness when missing;
  that ingests the whole corpus, about 20 minutes per embedder on 2 busy cores); PCA-128 is the fp32 store copied
  and re-embedded with `reembed --embed-dims 128` (benchmarks.pca_dims);
- nDCG@10: Loupe's retriever on a sample of judged queries (benchmarks.pca_dims.measure, the eval's ranking);
- intrinsic: WordSim-353, SimLex-999 and the Google analogies (rag.evaluation.intrinsic, `rag eval --intrinsic`);
- speed: chunks per second through embed() on the same Disfl-QA paragraphs, every embedder in interleaved rounds in
  the same run, next to the raw encoder (benchmarks.embedders.measure);
- cut-offs: rag.calibration; refusals: the eval's answer metrics (rag.evaluation.harness.evaluate_answers), in
  extractive mode (no generator: the refusal is decided by the cut-offs, before any model writes).

    .venv/bin/python -m benchmarks.embedder_table [--queries 1000] [--chunks 64] [--answers 60]
        [--finetuned ~/.cache/loupe/finetuned/disflqa-e1] [--fixed-cutoffs] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.embedders import measure as measure_speed  # noqa: E402
from benchmarks.embedders import read_chunks  # noqa: E402
from benchmarks.pca_dims import DEFAULT_BEIR, MemoEmbedder, copy_store, sample  # noqa: E402
from benchmarks.pca_dims import measure as measure_ranking  # noqa: E402
from rag.settings import Settings  # noqa: E402

FINETUNED = Path.home() / ".cache" / "loupe" / "finetuned" / "disflqa-e1"
PCA_DIMS = 128
FIXED = {"passage": 0.25, "sentence": 0.3}  # the MiniLM constants every embedder used before calibration


def variants(finetuned: Path) -> dict[str, dict]:
    """Each embedder's settings; PCA marks the one built by reembed from the fp32 store."""
    rows = {"fp32 (sbert)": {}, "int8 (onnx-int8)": {"embedder": "onnx-int8"},
            f"PCA-{PCA_DIMS} (sbert)": {"embed_dims": PCA_DIMS}}
    if finetuned.is_dir():
        rows[f"fine-tuned ({finetuned.name})"] = {"text_model": str(finetuned)}
    return rows


def open_variant(name: str, changes: dict, settings: Settings, beir, work: Path, fp32) -> tuple[Path, object]:
    """(the variant's Disfl-QA store, its embedder)."""
    from ingest.pipeline import Ingestor
    from rag.components import Models
    from rag.embedder import build_embedder
    from rag.evaluation.harness import prepare_store, store_folder
    from rag.pca import ProjectedEmbedder, Projection
    from rag.reembed import reembed

    if changes.get("embed_dims"):
        copy = copy_store(store_folder(beir, settings), work / "pca" / "disflqa")
        reembed(copy, settings.with_(store=copy, **changes), embedder=fp32.base)  # document ids kept
        return copy, ProjectedEmbedder(fp32, Projection.load(copy))
    variant = settings.with_(**changes)
    embedder = fp32 if not changes else MemoEmbedder(build_embedder(variant, "cpu"))
    models = Models(variant, embedder, None, "no CLIP here")
    store = prepare_store(beir, variant, models.open_store, lambda kb: Ingestor(kb, variant, embedder))
    store.kb.close()
    return store.folder, embedder


def answer_metrics(folder: Path, embedder, settings: Settings, beir, questions: int) -> dict:
    """Refusals and gold answers of the extractive mode on a sample of answerable and unanswerable questions."""
    from rag.components import Models
    from rag.evaluation.harness import evaluate_answers, sample_questions
    from rag.store import KnowledgeBase

    kb = KnowledgeBase(folder, embedder.model_id, use_gpu=False)
    try:
        assistant = Models(settings, embedder, None, "no CLIP here").assistant(kb)
        result = evaluate_answers(assistant, beir, sample_questions(beir, questions, 0), "extractive", settings.top_k)
    finally:
        kb.close()
    return {k: result[k] for k in ("answerable", "unanswerable", "abstained_answerable", "abstained_unanswerable",
                                   "answer_has_gold") if k in result}


def run(args: argparse.Namespace) -> dict:
    from rag import calibration
    from rag.embedder import build_embedder
    from rag.evaluation.beir import load_beir
    from rag.evaluation.intrinsic import evaluate_intrinsic

    settings = Settings.load({"ocr": False, "device": "cpu", "retrieval_mode": "hybrid"})
    beir = sample(load_beir(args.beir, with_answers=bool(args.answers)), args.queries)
    fp32 = MemoEmbedder(build_embedder(settings, "cpu"))
    rows, embedders = {}, {}
    with tempfile.TemporaryDirectory(prefix="loupe-embedders-") as work:
        for name, changes in variants(args.finetuned).items():
            folder, embedder = open_variant(name, changes, settings, beir, Path(work), fp32)
            embedder.embed(list(beir.queries.values()), query=True)  # query vectors first: not part of search time
            embedders[name] = embedder
            if args.fixed_cutoffs:  # the old behaviour, for comparison: MiniLM's constants for every embedder
                calibration._cache[calibration._key(embedder)] = calibration.Cutoffs(**FIXED)
            cutoffs = calibration.cutoffs_for(embedder, settings.cache_dir)
            rows[name] = {"model": embedder.model_id.name, "cutoffs": asdict(cutoffs),
                          "intrinsic": evaluate_intrinsic(embedder)}
            rows[name] |= measure_ranking(folder, embedder, beir, settings)
            if args.answers:
                rows[name]["answers"] = answer_metrics(folder, embedder, settings, beir, args.answers)
            print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)  # each row as soon as it is known
        texts = read_chunks(DEFAULT_BEIR / "corpus.jsonl", args.chunks)
        runners = {"raw encoder": lambda: fp32.base.model.encode(texts, batch_size=16, normalize_embeddings=True)}
        runners |= {name: (lambda e=e: _unmemoized(e).embed(texts)) for name, e in embedders.items()}
        speeds = measure_speed(runners, len(texts), args.rounds)
    for name in rows:
        rows[name] |= {"chunks_per_s": round(speeds[name], 2), "vs_raw": round(speeds[name] / speeds["raw encoder"], 2)}
    return {"queries": len(beir.queries), "chunks_timed": len(texts), "rounds": args.rounds,
            "load_average": os.getloadavg(), "fixed_cutoffs": args.fixed_cutoffs, "rows": rows}


def _unmemoized(embedder):
    """The embedder without the query memo (speed is measured on new texts every round)."""
    from rag.pca import ProjectedEmbedder

    if isinstance(embedder, ProjectedEmbedder):
        return ProjectedEmbedder(_unmemoized(embedder.base), embedder.projection)
    return embedder.base if isinstance(embedder, MemoEmbedder) else embedder


def markdown(result: dict) -> str:
    lines = ["| embedder | WordSim-353 | SimLex-999 | analogies | dense nDCG@10 | hybrid nDCG@10 | chunks/s | "
             "vs raw encoder | cut-offs (passage / sentence) |" + (" refused: answerable / unanswerable |"
                                                                      if _has_answers(result) else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if _has_answers(result) else "")]
    for name, row in result["rows"].items():
        intrinsic = row["intrinsic"]
        line = (f"| {name} | {intrinsic['wordsim353']:.4f} | {intrinsic['simlex999']:.4f} | "
                f"{100 * intrinsic['analogies']:.1f}% | {row['dense_ndcg@10']:.4f} | {row['hybrid_ndcg@10']:.4f} | "
                f"{row['chunks_per_s']:.1f} | {row['vs_raw']:.2f}x | {row['cutoffs']['passage']:.3f} / "
                f"{row['cutoffs']['sentence']:.3f} |")
        if "answers" in row:
            a = row["answers"]
            line += f" {100 * a['abstained_answerable']:.0f}% / {100 * a['abstained_unanswerable']:.0f}% |"
        lines.append(line)
    return "\n".join(lines)


def _has_answers(result: dict) -> bool:
    return any("answers" in row for row in result["rows"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--queries", type=int, default=1000, help="judged queries drawn with seed 0 (0: all)")
    parser.add_argument("--chunks", type=int, default=64, help="Disfl-QA paragraphs timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--answers", type=int, default=0, help="questions answered per embedder (0: none)")
    parser.add_argument("--finetuned", type=Path, default=FINETUNED, help="a fine-tuned model folder (rag finetune)")
    parser.add_argument("--fixed-cutoffs", action="store_true",
                        help="use MiniLM's constant cut-offs (0.25 / 0.3) for every embedder, as before calibration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    main()
