"""Fine-tuning on a BEIR corpus, measured: dense and hybrid nDCG@10 before and after.

The model trains on the corpus only (the chunks of the store `python -m rag eval` ingests), never on the
queries. Every step is the user's own command, run as a separate process:

    python -m rag eval --beir DIR --mode dense|hybrid --json                       (before)
    python -m rag finetune --store <that eval store> --out OUT --json
    python -m rag eval --beir DIR --mode dense|hybrid --text-model OUT --json      (after; ingests again)

    .venv/bin/python -m benchmarks.finetune [--beir DIR] [--out DIR] [--epochs 1] [--batch-size 32] [--queries N]

`--queries N` ranks a sample of N judged queries (seed 0) instead of all: the sample is a BEIR folder of the
same name with the same corpus, so it shares the eval's cached stores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from rag.settings import PROJECT_ROOT

DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"
MODES = ("dense", "hybrid")


def rag(*args: str) -> dict:
    """Run `python -m rag ARGS --json` and return its JSON; stderr (progress, warnings) passes through."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "rag", *args, "--json"], cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


def sample_queries(beir: Path, count: int, into: Path) -> Path:
    """A BEIR folder named like `beir`, with its corpus and `count` of its judged queries drawn with seed 0."""
    folder = into / beir.name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").symlink_to(beir.resolve() / "corpus.jsonl")
    header, *judgements = (beir / "qrels" / "test.tsv").read_text().splitlines()
    judged = sorted({line.split("\t")[0] for line in judgements})
    chosen = set(random.Random(0).sample(judged, min(count, len(judged))))
    (folder / "qrels" / "test.tsv").write_text("\n".join([header] + [line for line in judgements
                                                                     if line.split("\t")[0] in chosen]) + "\n")
    queries = [line for line in (beir / "queries.jsonl").read_text().splitlines()
               if line.strip() and json.loads(line)["_id"] in chosen]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "loupe" / "finetuned" / "disflqa",
                        help="the tuned model's folder (must not exist yet)")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--queries", type=int, default=0, help="rank a sample of this many queries (0: all)")
    args = parser.parse_args()
    if args.queries:
        args.beir = sample_queries(args.beir, args.queries, Path(tempfile.mkdtemp(prefix="loupe-finetune-")))

    before = {mode: rag("eval", "--beir", str(args.beir), "--mode", mode) for mode in MODES}
    store = before["dense"]["store"]["folder"]
    tuned = rag("finetune", "--store", store, "--out", str(args.out), "--epochs", args.epochs,
                "--batch-size", args.batch_size, "--quiet")
    after = {mode: rag("eval", "--beir", str(args.beir), "--mode", mode, "--text-model", str(args.out))
             for mode in MODES}

    print(f"pairs {tuned['pairs']}, {tuned['options']['epochs']} epoch(s), batch {tuned['options']['batch_size']}, "
          f"training {tuned['seconds']['training']:.0f} s; held-back MRR {tuned['before']['mrr']:.4f} -> "
          f"{tuned['after']['mrr']:.4f}")
    print("| mode | nDCG@10 before | nDCG@10 after | change | Recall@1 before | Recall@1 after |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        b, a = before[mode], after[mode]
        print(f"| {mode} | {b['ndcg@10']:.4f} | {a['ndcg@10']:.4f} | {a['ndcg@10'] - b['ndcg@10']:+.4f} | "
              f"{b['recall@1']:.4f} | {a['recall@1']:.4f} |")


if __name__ == "__main__":
    main()
