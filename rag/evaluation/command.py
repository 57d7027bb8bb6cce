"""`python -m rag eval --beir DIR`: retrieval metrics (and, with --answers, answer metrics) on a BEIR folder;
`python -m rag eval --intrinsic`: the text embedder on the word sets gensim ships (rag.evaluation.intrinsic)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.settings import ANSWER_MODES, RETRIEVAL_MODES, Settings


def add_eval_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from rag.cli import add_generator_flags  # the CLI builds this parser, so rag.cli is loaded already

    parser = commands.add_parser(
        "eval", parents=[common], help="evaluate retrieval and answers on a BEIR folder, or the embedder alone",
        description="--beir: ingest the corpus of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) "
                    "through the normal ingest pipeline, rank every judged query, and report nDCG@k, "
                    "Recall@1/5/10/100, MRR@k, the time per query and the ingest's chunks per second. The ingested "
                    "store is cached under <cache dir>/eval. --intrinsic: Spearman correlation of the text "
                    "embedder's cosines with WordSim-353 and SimLex-999, and accuracy on the Google analogies.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--beir", type=Path, help="the BEIR folder")
    target.add_argument("--intrinsic", action="store_true", help="evaluate the text embedder on gensim's word sets")
    parser.add_argument("--mode", dest="retrieval_mode", choices=RETRIEVAL_MODES,
                        help="retrieval mode (default: the retrieval_mode setting, hybrid)")
    parser.add_argument("-k", dest="cutoff", type=int, default=10, help="cutoff of nDCG@k and MRR@k (default 10)")
    parser.add_argument("--split", default="test", help="qrels file qrels/<split>.tsv (default test)")
    parser.add_argument("--rebuild", action="store_true", help="ingest again instead of reusing the cached store")
    answers = parser.add_argument_group("answers (needs answers.jsonl)")
    answers.add_argument("--answers", action="store_true", help="also answer a sample of the questions")
    answers.add_argument("--limit", type=int, default=60, help="questions to answer (default 60; half unanswerable "
                                                               "when the set has them)")
    answers.add_argument("--seed", type=int, default=0, help="seed of the question sample (default 0)")
    answers.add_argument("--answer-mode", dest="answer_mode", choices=ANSWER_MODES,
                         help="generate or extractive (default: the answer_mode setting)")
    answers.add_argument("--passages", dest="top_k", type=int, help="passages per answer (default: top_k, 5)")
    add_generator_flags(answers.add_argument)
    answers.add_argument("--details", type=Path, help="write one JSON line per answered question to this file")
    answers.add_argument("--answers-only", action="store_true", help="skip ranking every query (with --answers)")


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    # ingest is imported here, not at the top: `rag` must import without `ingest` (the app and library
    # users of rag.retrieval never need the readers); this command is an entry point, like rag/cli.py.
    from ingest.pipeline import Ingestor
    from rag.components import Models
    from rag.evaluation.beir import BeirError, load_beir
    from rag.evaluation.harness import (
        evaluate_answers,
        evaluate_retrieval,
        prepare_store,
        reduce_store,
        sample_questions,
    )
    from rag.evaluation.harness import stderr_log as log
    from rag.store_factory import eval_store_location

    if args.intrinsic:
        return run_intrinsic(args, settings)
    if args.cutoff < 1 or args.limit < 1:
        print("error: -k and --limit must be at least 1", file=sys.stderr)
        return 2
    if args.answers_only and not args.answers:
        print("error: --answers-only needs --answers", file=sys.stderr)
        return 2
    try:
        beir = load_beir(args.beir, args.split, with_answers=args.answers)
    except BeirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    interactive = sys.stderr.isatty()
    full = settings.with_(embed_dims=0)  # --embed-dims N: the corpus is ingested at full size, then reduced
    models = Models.load(full, with_images=False)
    # with --store postgresql://..., the corpus is ingested into a knowledge base of that database instead
    store = prepare_store(beir, full, lambda folder: models.open_store(eval_store_location(settings.store, folder)),
                          lambda kb: Ingestor(kb, full, models.text_embedder),
                          rebuild=args.rebuild, log=log, show_progress=interactive)
    ingest = ingest_figures(store)
    if settings.embed_dims:
        store = reduce_store(store, beir, settings, lambda folder: models.open_store(folder, own_model=True),
                             models.text_embedder, args.rebuild, log)
    try:
        assistant = models.assistant(store.kb)  # with the store's own embedder: projected when reduced
        mode = settings.retrieval_mode
        result = {"dataset": beir.name, "split": args.split, "mode": mode, "documents": len(beir.corpus),
                  "queries": len(beir.queries)}
        if not args.answers_only:
            log(f"ranking {len(beir.queries):,} queries ({mode})")
            result |= evaluate_retrieval(assistant.retriever, beir, store, mode, args.cutoff,
                                         batch_size=settings.embed_batch_size, progress=_progress(interactive))
        result |= {"store": {"folder": str(store.folder), "cached": store.cached, "seconds": round(store.seconds, 1),
                             "failed_documents": len(store.failed)},
                   "skipped_queries": beir.skipped_queries,
                   "embedder": settings.embedder, "text_model": assistant.retriever.text_embedder.model_id.name,
                   "embed_dims": settings.embed_dims, "ingest": ingest}
        if args.answers:
            sample = sample_questions(beir, args.limit, args.seed)
            answer_mode = settings.answer_mode
            log(f"answering {len(sample.answerable) + len(sample.unanswerable)} questions ({answer_mode}, "
                f"seed {args.seed})")
            with _details_writer(args.details) as write:
                result["answers"] = evaluate_answers(assistant, beir, sample, answer_mode, settings.top_k,
                                                     details=write, progress=_progress(interactive))
            result["answers"]["passages"] = settings.top_k
            result["answers"]["seed"] = args.seed
    finally:
        store.kb.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result, args.cutoff))
    return 0


def run_intrinsic(args: argparse.Namespace, settings: Settings) -> int:
    from rag.components import Models
    from rag.evaluation.intrinsic import evaluate_intrinsic

    embedder = Models.load(settings, with_images=False).text_embedder
    result = {"embedder": settings.embedder} | evaluate_intrinsic(embedder, batch_size=settings.embed_batch_size)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']} ({result['embedder']}): WordSim-353 Spearman {result['wordsim353']:.4f}, "
              f"SimLex-999 Spearman {result['simlex999']:.4f}, Google analogies {100 * result['analogies']:.1f}% "
              f"({result['analogy_questions']:,} questions over {result['words_embedded']:,} words)")
    return 0


INGEST_FILE = "ingest.json"  # beside the cached store: the figures of the run that built it


def ingest_figures(store) -> dict:
    """Ingest time and chunks per second of the run that built the store, kept for the runs that reuse it (None
    for a store cached before they were recorded)."""
    saved = store.folder / INGEST_FILE
    if store.cached and saved.is_file():
        return json.loads(saved.read_text())
    chunks = sum(d.chunks for d in store.kb.documents())
    if store.cached:
        return {"chunks": chunks, "seconds": None, "chunks_per_second": None}
    figures = {"chunks": chunks, "seconds": round(store.seconds, 1),
               "chunks_per_second": round(chunks / max(store.seconds, 1e-9), 1)}
    saved.write_text(json.dumps(figures))
    return figures


def format_result(result: dict, k: int) -> str:
    store = result["store"]
    origin = "cached store" if store["cached"] else f"ingested in {store['seconds']:.0f}s"
    ingest = result["ingest"]
    speed = f", built at {ingest['chunks_per_second']:.1f} chunks/s" if ingest["chunks_per_second"] else ""
    lines = [f"{result['dataset']} ({result['split']}): {result['documents']:,} documents, {result['queries']:,} "
             f"queries; {origin} ({store['folder']}); {result['text_model']} ({result['embedder']}){speed}"]
    if f"ndcg@{k}" in result:
        lines.append(f"{result['mode']:>7}: nDCG@{k} {result[f'ndcg@{k}']:.4f}  "
                     + "  ".join(f"R@{n} {result[f'recall@{n}']:.4f}" for n in (1, 5, 10, 100))
                     + f"  MRR@{k} {result[f'mrr@{k}']:.4f}  {1000 * result['seconds_per_query']:.1f} ms/query")
    answers = result.get("answers")
    if answers:
        def pct(name: str) -> str:
            value = answers[name]
            return "n/a" if value is None else f"{100 * value:.1f}%"

        lines += [
            f"answers ({answers['answer_mode']}, {result['mode']} retrieval, {answers['questions']} questions: "
            f"{answers['answerable']} answerable, {answers['unanswerable']} unanswerable; "
            f"{answers['passages']} passages, seed {answers['seed']}):",
            f"  gold answer in the answer          {pct('answer_has_gold')}",
            f"  gold answer in the cited passages  {pct('cited_has_gold')}",
            f"  gold answer in the passages given  {pct('context_has_gold')}",
            f"  says 'the documents don't say' on unanswerable questions  {pct('abstained_unanswerable')}",
            f"  says it on answerable questions (wrongly)                 {pct('abstained_answerable')}",
            f"  answer sentences flagged as unsupported  {pct('unsupported_sentences')}",
            f"  degenerate answers shown (a sentence twice, a looping phrase)  {answers['degenerate_answers']}",
            f"  loops stopped before they were shown  {answers['loops_stopped']}",
            f"  model sentences withheld as unsupported (answer-first)  {answers['withheld_sentences']}",
            f"  {answers['seconds_per_answer']:.2f} s per answer; first text after {answers['first_text_p50_s']:.2f} s "
            f"(p50), {answers['first_text_p95_s']:.2f} s (p95)",
        ]
    return "\n".join(lines)


def _progress(enabled: bool):
    def report(done: int, total: int) -> None:
        if enabled:
            print(f"\r  {done:,}/{total:,}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return report


class _details_writer:
    """A context manager giving a function that appends a JSON line to `path` (or does nothing)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._handle = None

    def __enter__(self):
        if self._path is None:
            return lambda record: None
        self._handle = open(self._path, "w", encoding="utf-8")
        return lambda record: print(json.dumps(record, ensure_ascii=False), file=self._handle, flush=True)

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()
