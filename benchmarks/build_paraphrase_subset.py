"""A paraphrase-heavy variant of a BEIR folder: the judged queries that share the fewest words with their
relevant documents, with the same corpus.

Word overlap is what BM25 feeds on, so on such a subset a lexical method loses much of its edge and a
dense one should win: the kind of collection where an equal-weight fusion can drag the better method down.
The subset is chosen by a property of the query and its judged text only (never by any system's results):
the share of the query's BM25 tokens (stop words dropped, Snowball stems) that occur in its relevant
documents; the `--keep` queries with the smallest share are kept (ties broken by query id).

    .venv/bin/python -m benchmarks.build_paraphrase_subset ../shared/data/disflqa /tmp/disflqa-paraphrase
    .venv/bin/python -m rag eval --beir /tmp/disflqa-paraphrase --mode dense

The corpus file is copied unchanged, so `python -m rag eval` reuses the store it cached for the full set.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rag.evaluation.beir import BeirSet, load_beir
from rag.lexical_index import tokenize


def overlap(beir: BeirSet) -> dict[str, float]:
    """Query id -> share of its tokens found in its relevant documents (1.0 for a query without tokens)."""
    texts = {doc.id: f"{doc.title} {doc.text}" for doc in beir.corpus}
    query_ids = list(beir.queries)
    query_tokens = tokenize([beir.queries[q] for q in query_ids])
    relevant = [[d for d, grade in beir.qrels[q].items() if grade > 0] for q in query_ids]
    doc_tokens = tokenize([" ".join(texts[d] for d in docs) for docs in relevant])
    return {q: (len(set(tokens) & set(words)) / len(set(tokens)) if tokens else 1.0)
            for q, tokens, words in zip(query_ids, query_tokens, doc_tokens)}


def write_subset(source: Path, target: Path, keep: int) -> tuple[int, float]:
    """Write the subset folder; returns (queries kept, their largest overlap)."""
    beir = load_beir(source, with_answers=(source / "answers.jsonl").is_file())
    shares = overlap(beir)
    chosen = sorted(shares, key=lambda q: (shares[q], q))[:keep]
    kept = set(chosen)
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "corpus.jsonl", target / "corpus.jsonl")
    with open(target / "queries.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": q, "text": beir.queries[q]}) + "\n" for q in beir.queries if q in kept)
    with open(target / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t{grade}\n" for q in beir.queries if q in kept
                          for d, grade in beir.qrels[q].items())
    if beir.answers is not None:
        with open(target / "answers.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"_id": q, "answers": beir.answers[q]}) + "\n"
                              for q in beir.queries if q in kept and q in beir.answers)
    return len(chosen), max(shares[q] for q in chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a BEIR folder")
    parser.add_argument("target", type=Path, help="the folder to write")
    parser.add_argument("--keep", type=int, default=1000, help="queries to keep (default 1000)")
    args = parser.parse_args()
    kept, largest = write_subset(args.source, args.target, args.keep)
    print(f"{kept} queries, each sharing at most {100 * largest:.0f}% of its words with its relevant documents")


if __name__ == "__main__":
    main()
