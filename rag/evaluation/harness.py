"""Run a BEIR data set through Loupe: ingest its corpus as files, rank every query, answer a sample.

The corpus goes through the same Ingestor a user's files do (each record written as a file, its title as
the Markdown heading), so the numbers measure the chunking, embedding and indexes users get. The
ingested store is cached per corpus and ingest settings, so repeated runs skip the embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.answering import Answer, final_answer
from rag.embedder import Embedder
from rag.evaluation.beir import BeirSet, Document
from rag.evaluation.metrics import contains_answer, ranking_metrics
from rag.grounding import split_sentences
from rag.settings import Settings
from rag.store import KnowledgeBase
from rag.store_api import lexical_index

CACHE_FORMAT = 1  # bump when the way a corpus becomes files changes
IDS_FILE = "beir-ids.json"
RECALL_AT = (1, 5, 10, 100)
QUERY_BATCH = 256
_CITATION = re.compile(r"\s*\[\d+\]")
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class PreparedStore:
    kb: KnowledgeBase
    folder: Path
    doc_ids: dict[int, list[str]]  # store document id -> corpus ids (identical records share a document)
    failed: dict[str, str]  # corpus id -> why ingest refused it (e.g. an empty text)
    cached: bool
    seconds: float

    def corpus_ids(self, document_id: int) -> list[str]:
        return self.doc_ids.get(document_id, [])


# --- the store -------------------------------------------------------------------------------------
def store_folder(beir: BeirSet, settings: Settings) -> Path:
    """Where the ingested corpus is cached: one folder per corpus content and ingest settings, and per embedder
    (int8 vectors must not be read as fp32 ones). The default embedder adds nothing to the key, so stores cached
    before embedders could be chosen stay valid."""
    fields = {"corpus": beir.corpus_sha256, "text_model": settings.text_model, "format": CACHE_FORMAT,
              "chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap}
    if settings.embedder != "sbert":
        fields["embedder"] = settings.embedder
    if settings.embed_dims:  # reduce_store's copy, fitted on the full-size store's vectors
        fields["embed_dims"] = settings.embed_dims
    key = json.dumps(fields, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(settings.cache_dir) / "eval" / f"{_SLUG.sub('_', beir.name) or 'beir'}-{digest}"


def prepare_store(beir: BeirSet, settings: Settings, open_store: Callable[[Path], KnowledgeBase],
                  make_ingestor: Callable[[KnowledgeBase], object], rebuild: bool = False,
                  log: Callable[[str], None] = lambda _: None, show_progress: bool = False) -> PreparedStore:
    """Open the cached store for this corpus, or ingest the corpus into a new one.

    The store is built in a partial folder and renamed when complete, so a killed run leaves no cache
    that looks finished. `make_ingestor(kb)` returns an ingest.pipeline.Ingestor for that store.
    """
    folder = store_folder(beir, settings)
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    if (folder / IDS_FILE).is_file():
        start = time.perf_counter()
        kb = open_store(folder)
        doc_ids, failed = _read_ids(folder / IDS_FILE)
        log(f"store: reusing the cached ingest of {beir.name} in {folder} (delete it or pass --rebuild to "
            "ingest again)")
        return PreparedStore(kb, folder, doc_ids, failed, True, time.perf_counter() - start)

    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"store: ingesting {len(beir.corpus):,} documents of {beir.name} into {folder} (cached for later runs)")
    start = time.perf_counter()
    kb = open_store(partial)
    try:
        with tempfile.TemporaryDirectory(prefix="loupe-beir-") as work:
            paths = _write_corpus(beir.corpus, Path(work))
            report = make_ingestor(kb).ingest(list(paths), show_progress=show_progress,
                                               names={p: doc.id for p, doc in paths.items()})
            # Map documents back to corpus ids by content: identical records are one document in the store
            # (the ingest keeps one copy), and each of their ids must still count when it is retrieved.
            by_sha = {d.sha256: d.id for d in kb.documents()}
            messages = {o.path: o.message for o in report.outcomes}
            doc_ids: dict[int, list[str]] = {}
            failed: dict[str, str] = {}
            for path, doc in paths.items():
                document_id = by_sha.get(hashlib.sha256(path.read_bytes()).hexdigest())
                if document_id is None:
                    failed[doc.id] = messages.get(str(path), "not ingested")
                else:
                    doc_ids.setdefault(document_id, []).append(doc.id)
        lexical_index(kb).refresh()  # build and save BM25 with the cache
        (partial / IDS_FILE).write_text(json.dumps({"documents": {str(k): v for k, v in doc_ids.items()},
                                                    "failed": failed}))
    finally:
        kb.close()
    seconds = time.perf_counter() - start
    try:
        os.replace(partial, folder)
    except OSError:  # another run finished the same cache first
        shutil.rmtree(partial, ignore_errors=True)
    if failed:
        log(f"store: {len(failed)} documents could not be ingested (e.g. {next(iter(failed.values()))})")
    return PreparedStore(open_store(folder), folder, doc_ids, failed, False, seconds)


def reduce_store(full: PreparedStore, beir: BeirSet, settings: Settings, open_store: Callable[[Path], KnowledgeBase],
                 embedder: Embedder, rebuild: bool = False,
                 log: Callable[[str], None] = lambda _: None) -> PreparedStore:
    """The full-size store `full` with its vectors reduced to settings.embed_dims by PCA fitted on its own chunks, as
    `python -m rag reembed --embed-dims N` reduces a knowledge base: a copy of the full store's cache, re-embedded
    (the stored vectors are projected; `embedder`, the full-size one, runs only for sentences stored without
    vectors) and cached under its own key. Closes `full`. Document ids survive the reembed, and so the id map."""
    from rag.reembed import reembed  # it imports the stores and the fine-tuning module: only when asked

    folder = store_folder(beir, settings)
    full.kb.close()
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    cached = (folder / IDS_FILE).is_file()
    start = time.perf_counter()
    if not cached:
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(full.folder, partial)
        log(f"store: reducing the cached ingest of {beir.name} to {settings.embed_dims} dimensions by PCA, into "
            f"{folder}")
        reembed(partial, settings.with_(store=partial), embedder=embedder)
        try:
            os.replace(partial, folder)
        except OSError:  # another run finished the same cache first
            shutil.rmtree(partial, ignore_errors=True)
    doc_ids, failed = _read_ids(folder / IDS_FILE)
    return PreparedStore(open_store(folder), folder, doc_ids, failed, cached, time.perf_counter() - start)


def _write_corpus(corpus: Sequence[Document], work: Path) -> dict[Path, Document]:
    """One file per record. With a title: Markdown, the title as heading and the text indented by four
    spaces, so that no line of it reads as Markdown syntax (the reader strips the indent). Without: text."""
    paths: dict[Path, Document] = {}
    for number, doc in enumerate(corpus):
        title = " ".join(doc.title.split())
        if title:
            body = "\n".join(f"    {line}" if line.strip() else "" for line in doc.text.splitlines())
            path, content = work / f"{number:08d}.md", f"# {title}\n\n{body}\n"
        else:
            path, content = work / f"{number:08d}.txt", doc.text
        path.write_text(content, encoding="utf-8")
        paths[path.resolve()] = doc
    return paths


def _read_ids(path: Path) -> tuple[dict[int, list[str]], dict[str, str]]:
    data = json.loads(path.read_text())
    return {int(k): v for k, v in data["documents"].items()}, data.get("failed", {})


# --- retrieval -------------------------------------------------------------------------------------
def evaluate_retrieval(retriever, beir: BeirSet, store: PreparedStore, mode: str, k: int = 10,
                       recall_at: Sequence[int] = RECALL_AT, batch_size: int = 0,
                       progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Rank the corpus for every judged query; a document ranks where its best chunk does."""
    depth = max(max(recall_at), k)
    chunk_depth = 2 * depth  # a document can own several chunks: ask for more chunks than documents
    query_ids = list(beir.queries)
    rankings: dict[str, list[str]] = {}
    start = time.perf_counter()
    for first in range(0, len(query_ids), QUERY_BATCH):
        part = query_ids[first:first + QUERY_BATCH]
        results = retriever.search_many([beir.queries[q] for q in part], chunk_depth, mode, batch_size,
                                         with_dense_scores=False)
        for query_id, passages in zip(part, results):
            ranking = dict.fromkeys(c for p in passages for c in store.corpus_ids(p.chunk.document_id))
            rankings[query_id] = list(ranking)[:depth]
        progress(min(first + QUERY_BATCH, len(query_ids)), len(query_ids))
    seconds = time.perf_counter() - start
    metrics = ranking_metrics(rankings, beir.qrels, k, recall_at)
    return {**metrics, "seconds_per_query": seconds / len(query_ids), "queries": len(query_ids)}


# --- answers ---------------------------------------------------------------------------------------
@dataclass
class AnswerSample:
    answerable: list[str] = field(default_factory=list)
    unanswerable: list[str] = field(default_factory=list)


def sample_questions(beir: BeirSet, limit: int, seed: int) -> AnswerSample:
    """Up to `limit` judged questions with answers.jsonl entries: half unanswerable where the set has them."""
    assert beir.answers is not None
    answerable = [q for q in beir.queries if beir.answers.get(q)]
    unanswerable = [q for q in beir.queries if q in beir.answers and not beir.answers[q]]
    rng = random.Random(seed)
    n_unanswerable = min(len(unanswerable), limit // 2)
    n_answerable = min(len(answerable), limit - n_unanswerable)
    n_unanswerable = min(len(unanswerable), limit - n_answerable)
    return AnswerSample(rng.sample(answerable, n_answerable), rng.sample(unanswerable, n_unanswerable))


def evaluate_answers(assistant, beir: BeirSet, sample: AnswerSample, answer_mode: str, k: int,
                     details: Callable[[dict], None] = lambda record: None,
                     progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Ask each sampled question, streaming as the chat does; count gold answers in the answer and in its cited
    passages, abstentions, answer sentences no passage supports, degenerate answers shown (a sentence said twice,
    a phrase looping), loops the repeat guard stopped, and the time to the first piece of text."""
    assert beir.answers is not None
    counts = dict.fromkeys(("answer_has_gold", "cited_has_gold", "context_has_gold", "abstained_answerable",
                            "abstained_unanswerable", "sentences", "unsupported_sentences", "degenerate",
                            "looped", "withheld"), 0)
    seconds, firsts = 0.0, []
    questions = [(q, True) for q in sample.answerable] + [(q, False) for q in sample.unanswerable]
    for done, (query_id, answerable) in enumerate(questions, start=1):
        question, golds = beir.queries[query_id], beir.answers[query_id]
        start = time.perf_counter()
        answer, first = _streamed(assistant.stream(question, k, answer_mode), start)
        seconds += time.perf_counter() - start
        firsts.append(first)
        text = _CITATION.sub("", answer.text)
        record = {"id": query_id, "question": question, "golds": golds, "answer": answer.text,
                  "grounded": answer.grounded, "unsupported": answer.unsupported, "withheld": answer.withheld,
                  "looped": answer.looped, "first_text_s": round(first, 3), "degenerate": is_degenerate(answer.text)}
        sentences = len(split_sentences(text)) if answer.grounded else 0
        counts["sentences"] += sentences
        counts["unsupported_sentences"] += len(answer.unsupported) if answer.grounded else 0
        counts["degenerate"] += record["degenerate"]
        counts["looped"] += answer.looped
        counts["withheld"] += len(answer.withheld)
        if answerable:
            context = assistant.retriever.search(question, k)
            record |= {"answer_has_gold": contains_answer(text, golds),
                       "cited_has_gold": any(contains_answer(s.text, golds) for s in answer.sources if s.cited),
                       "context_has_gold": any(contains_answer(p.chunk.text, golds) for p in context)}
            for name in ("answer_has_gold", "cited_has_gold", "context_has_gold"):
                counts[name] += record[name]
            counts["abstained_answerable"] += not answer.grounded
        else:
            counts["abstained_unanswerable"] += not answer.grounded
        details(record)
        progress(done, len(questions))
    n_answerable, n_unanswerable = len(sample.answerable), len(sample.unanswerable)

    def share(count: int, total: int) -> float | None:
        return count / total if total else None

    return {
        "answer_mode": answer_mode,
        "questions": len(questions),
        "answerable": n_answerable,
        "unanswerable": n_unanswerable,
        "answer_has_gold": share(counts["answer_has_gold"], n_answerable),
        "cited_has_gold": share(counts["cited_has_gold"], n_answerable),
        "context_has_gold": share(counts["context_has_gold"], n_answerable),
        "abstained_answerable": share(counts["abstained_answerable"], n_answerable),
        "abstained_unanswerable": share(counts["abstained_unanswerable"], n_unanswerable),
        "unsupported_sentences": share(counts["unsupported_sentences"], counts["sentences"]),
        "degenerate_answers": counts["degenerate"],
        "loops_stopped": counts["looped"],
        "withheld_sentences": counts["withheld"],
        "seconds_per_answer": seconds / len(questions) if questions else None,
        "first_text_p50_s": float(np.percentile(firsts, 50)) if firsts else None,
        "first_text_p95_s": float(np.percentile(firsts, 95)) if firsts else None,
    }


def _streamed(events: Iterable[object], start: float) -> tuple[Answer, float]:
    """The finished Answer of a stream, and the seconds from `start` to its first piece of text."""
    first: float | None = None

    def timed() -> Iterator[object]:
        nonlocal first
        for event in events:
            if first is None and isinstance(event, str) and event:
                first = time.perf_counter() - start
            yield event

    answer = final_answer(timed())
    return answer, first if first is not None else time.perf_counter() - start


def is_degenerate(text: str) -> bool:
    """An answer a reader would call broken: a sentence said twice, or a phrase of 8 words said three times.
    (Measured independently of rag.repeats, which should have stopped both.)"""
    plain = _CITATION.sub("", text)
    # sentences of three words or fewer are left out: "St." or "Fig." split off as sentences of their own
    sentences = [" ".join(s.lower().split()) for s in split_sentences(plain) if len(s.split()) > 3]
    words = plain.lower().split()
    phrases = Counter(tuple(words[i:i + 8]) for i in range(len(words) - 7))
    return len(set(sentences)) < len(sentences) or any(n >= 3 for n in phrases.values())


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
