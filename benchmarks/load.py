"""Load: many people chatting at once plus one uploading, against the real app on 127.0.0.1.

Starts the real app (app.create_app + launch, the default generator: SmolLM2 from the packaged GGUF) on a
temporary knowledge base of Disfl-QA paragraphs, then, for each generation batch size, answer mode and number
of users, runs two phases, each with one PDF upload through HTTP /api/ingest at the same time:
- chat: N users ask at once through LoupeService.chat in threads, the code path the chat UI streams from,
  which gives the time to the first piece of answer text (TTFT) as well as the total time;
- http: N users ask at once through HTTP POST /api/ask (a whole answer per request: total time only).
Compare answer modes (generate: the model's text is the answer; answer-first: the quoted sentences come first,
then the model's checked line) or batch sizes (1 decodes one question at a time) in the same run. Bounded: N
requests per phase, each with a timeout, and traffic to 127.0.0.1 only.

    .venv/bin/python -m benchmarks.load [--users 10,25] [--modes generate,answer-first] [--batches 8]
                                        [--paragraphs 20] [--torch-threads 0]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

from benchmarks.common import make_pdf  # noqa: E402
from rag.components import Models, configure_hub  # noqa: E402
from rag.devices import apply_torch_threads  # noqa: E402
from rag.evaluation.beir import load_beir  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402

DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"
HOST = "127.0.0.1"


@dataclass
class Sample:
    total: float
    first: float | None = None  # seconds to the first piece of text (chat phase only)
    error: str = ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def corpus_and_questions(folder: Path, paragraphs: int) -> tuple[dict[str, str], list[str]]:
    """The first paragraphs of the set, and the questions whose gold paragraph is among them."""
    beir = load_beir(folder)
    corpus = {d.id: d.text for d in beir.corpus[:paragraphs]}
    questions = [text for q, text in beir.queries.items() if set(beir.qrels[q]) & set(corpus)]
    return corpus, questions


@contextlib.contextmanager
def serving(settings: Settings, shared: Models) -> Iterator[tuple[str, object]]:
    """The real app on a free port, sharing the text embedder; yields (url, service)."""
    from app import create_app, launch

    models = Models(settings, shared.text_embedder, None, shared.clip_status)
    generator = models.generator()  # this server's own, with its generation_batch
    demo, service = create_app(settings, models)
    url = launch(demo, service, quiet=True).rstrip("/")
    try:
        yield url, service
    finally:
        demo.close()
        service.close()
        generator.close()


def chat_user(service, question: str, mode: str) -> Sample:
    start = time.perf_counter()
    first = None
    try:
        for event in service.chat(None, question, mode=mode):
            if isinstance(event, str) and first is None:
                first = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - a failed request is a result here, counted and shown
        return Sample(time.perf_counter() - start, first, f"{type(error).__name__}: {error}")
    return Sample(time.perf_counter() - start, first)


def http_user(client, url: str, question: str, mode: str) -> Sample:
    start = time.perf_counter()
    try:
        response = client.post(f"{url}/api/ask", json={"question": question, "mode": mode})
        error = "" if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
    except Exception as error:  # noqa: BLE001 - a failed request is a result here
        return Sample(time.perf_counter() - start, None, f"{type(error).__name__}: {error}")
    return Sample(time.perf_counter() - start, None, error)


def upload(client, url: str, pdf: Path, name: str) -> Sample:
    start = time.perf_counter()
    response = client.post(f"{url}/api/ingest", files={"file": (name, pdf.read_bytes(), "application/pdf")})
    error = "" if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
    return Sample(time.perf_counter() - start, None, error)


def phase(kind: str, users: int, questions: list[str], url: str, service, pdf: Path, timeout_s: float,
          mode: str) -> dict:
    """`users` questions at once plus one upload of `pdf`; every request bounded by `timeout_s`."""
    import httpx

    with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(users + 1) as pool:
        uploading = pool.submit(upload, client, url, pdf, pdf.name)
        user = (lambda q: pool.submit(chat_user, service, q, mode)) if kind == "chat" else (
            lambda q: pool.submit(http_user, client, url, q, mode))
        asks = [user(questions[i % len(questions)]) for i in range(users)]
        done, late = wait([uploading, *asks], timeout=timeout_s)
        samples = [f.result() if f in done else Sample(timeout_s, None, "no answer in time") for f in asks]
        sent = uploading.result() if uploading in done else Sample(timeout_s, None, "no answer in time")
    return summary(kind, users, samples, sent)


def summary(kind: str, users: int, samples: list[Sample], sent: Sample) -> dict:
    def p(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 2) if values else None

    totals = [s.total for s in samples if not s.error]
    firsts = [s.first for s in samples if not s.error and s.first is not None]
    return {"phase": kind, "users": users, "failed": sum(bool(s.error) for s in samples),
            "errors": sorted({s.error for s in samples if s.error})[:3],
            "ttft_p50": p(firsts, 50), "ttft_p95": p(firsts, 95), "total_p50": p(totals, 50),
            "total_p95": p(totals, 95), "total_max": p(totals, 100),
            "upload_s": round(sent.total, 2), "upload_error": sent.error}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--users", default="10,25", help="comma-separated numbers of concurrent users")
    parser.add_argument("--batches", default="8", help="comma-separated generation_batch values to compare")
    parser.add_argument("--modes", default="generate,answer-first", help="comma-separated answer modes to compare")
    parser.add_argument("--paragraphs", type=int, default=20)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--phases", default="chat,http")
    parser.add_argument("--sentence-vectors", default="stored",
                        help="stored, none, or both (stored,none): 'none' clears the ones ingest stored, as in a "
                             "knowledge base made before them, so sentences are embedded for each question")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="bound on each request, seconds")
    args = parser.parse_args()
    configure_hub()
    with tempfile.TemporaryDirectory(prefix="loupe-load-") as tmp:
        base = Settings.load({"store": Path(tmp) / "kb", "ocr": False, "host": HOST,
                              "torch_threads": args.torch_threads})
        apply_torch_threads(base.torch_threads)
        shared = Models.load(base, with_images=False)
        corpus, questions = corpus_and_questions(args.beir, args.paragraphs)
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for doc_id, text in corpus.items():
            (docs / f"{doc_id}.txt").write_text(text)
        rows = []
        for batch in _ints(args.batches):
            settings = base.with_(generation_batch=batch, port=free_port(), max_waiting_questions=64)
            with serving(settings, shared) as (url, service):
                if not service.documents(None):
                    service.ingest(None, [(p.name, p) for p in sorted(docs.iterdir())])
                    # The "stored" rows measure answers from stored sentence vectors: wait for the upload's pass.
                    service.uploads.wait_for_sentences(None)
                service.ask(None, questions[0])  # warm-up, not measured: the first call loads the generator
                for vectors, mode, users, kind in itertools.product(
                        args.sentence_vectors.split(","), args.modes.split(","), _ints(args.users),
                        args.phases.split(",")):
                    if vectors == "none":
                        clear_sentence_vectors(settings.store)
                    # a new PDF each phase: the same bytes again would be recognised and skipped
                    pdf = make_pdf(Path(tmp) / f"upload-{len(rows)}.pdf", pages=3, seed=len(rows))
                    row = {"batch": batch, "mode": mode, "sentence_vectors": vectors,
                           **phase(kind, users, questions, url, service, pdf, args.request_timeout, mode)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print(f"\n{os.cpu_count()} cores, torch threads {args.torch_threads or 'default'}, {len(corpus)} paragraphs\n")
    print("| sentence vectors | answer mode | generation_batch | users | path | TTFT p50 s | TTFT p95 s | "
          "total p50 s | total p95 s | max s | failed | upload s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        path = "LoupeService.chat (stream)" if r["phase"] == "chat" else "HTTP /api/ask"
        print(f"| {r['sentence_vectors']} | {r['mode']} | {r['batch']} | {r['users']} | {path} | "
              f"{r['ttft_p50'] or '-'} | "
              f"{r['ttft_p95'] or '-'} | "
              f"{r['total_p50']} | {r['total_p95']} | {r['total_max']} | {r['failed']} | {r['upload_s']} |")


def clear_sentence_vectors(store: Path) -> None:
    """The baseline: a knowledge base as Loupe made it before sentence vectors were stored at ingest."""
    import sqlite3

    from rag.store import CATALOG_FILE

    with contextlib.closing(sqlite3.connect(store / CATALOG_FILE)) as conn, conn:
        conn.execute("UPDATE chunks SET sentence_vectors = NULL")


def _ints(values: str) -> list[int]:
    return [int(v) for v in values.split(",")]


if __name__ == "__main__":
    main()
