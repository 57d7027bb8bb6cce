"""A knowledge base at scale: search time, recall, and the cost of one document, on synthetic chunks.

    python -m benchmarks.scale --chunks 100000 [--backend folder|postgres] [--postgres-url URL] [--json]

Vectors for a million chunks can't be made with the real encoder here (about 7 hours), so the chunks are
synthetic, inserted through the store's own write path (KnowledgeBase.write: Writer.add_document/add_chunks,
BATCH_DOCUMENTS documents a transaction, inside the store's bulk_load(): the vector index is built once at the end,
and the BM25 index once after it):
- vectors: unit vectors around random cluster centres (one cluster per ~500 chunks), so that near neighbours
  exist and an approximate index is measured on the kind of neighbourhoods real embeddings have;
- texts: words drawn from a Zipf vocabulary (exponent 1.1, 30,000 words), so BM25's posting lists are as
  skewed as in real text; queries are four words of the middle of the vocabulary.

Measured (query embedding excluded: the queries' vectors are given, as the Retriever accepts them):
- search_ms: p50/p95 of Retriever.search(k=10) per mode, after one warm-up query (wall clock);
- cpu_ms: the same searches' CPU time in this thread (time.thread_time; FAISS runs a single query on this one
  thread): on a shared machine the wall clock counts other processes' turns on the cores, this does not. For the
  postgres backend it leaves out the server's work: server_cpu_ms is that, the CPU time of the server process
  that runs the store's searches (/proc/PID/schedstat, nanoseconds; only when the server runs on this machine);
- load_average: the machine's 1-minute load average at the start and at the end of the run;
- recall_at_10: the store's dense top 10 against exact search (a brute-force scan of the same vectors);
- add_document_s / delete_document_s: one 10-page document (30 chunks): the commit, flush() and the BM25
  index catching up, i.e. until a search sees it (the median of three);
- rss_mb: this process's resident memory at the end; disk_mb: the store's size on disk;
- server_memory_mb / server_peak_memory_mb (postgres, a server the benchmark started): the server's processes'
  proportional set size at the end / the highest seen, sampled each second (index builds included);
- ef_search_sweep (postgres, --ef-search): dense and hybrid search time and recall@10 with each hnsw.ef_search.

With --folder, the store is kept; a later run on the same folder and --chunks skips the fill and measures the
store as a new process opens it (the exact top 10 is then computed from the stored vectors). A fill stopped with
Ctrl-C keeps the batches committed so far (bulk_load() still builds the indexes on its way out); a later run with
the same --chunks measures that smaller store as it is, with the same queries.

The PostgreSQL server the postgres run starts itself (pgserver) is given SERVER_SETTINGS, the first changes a DBA
makes to a default configuration (128 MB of shared buffers, 1 GB of WAL between checkpoints) for a database of
gigabytes; a server given with --postgres-url is measured as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import PeakRss
from rag.records import ModelId, NewChunk, NewDocument
from rag.retrieval import Retriever
from rag.settings import ANN_KINDS
from rag.store import KnowledgeBase
from rag.store_api import KnowledgeBaseStore, lexical_index

if TYPE_CHECKING:
    import pgserver

logger = logging.getLogger("benchmarks.scale")

DIM = 384  # all-MiniLM-L6-v2's
MODEL = ModelId("synthetic-384", DIM)
CHUNKS_PER_DOCUMENT = 30  # a 10-page document
WORDS_PER_CHUNK = (90, 150)
VOCABULARY = 30_000
ZIPF_EXPONENT = 1.1
CHUNKS_PER_CLUSTER = 500
NOISE = 0.9  # the norm of a vector's offset from its cluster centre, before normalising
QUERIES = 200
K = 10
BATCH_DOCUMENTS = 1000  # documents per write transaction while filling the store (30,000 chunks)
SERVER_SETTINGS = {"shared_buffers": "2GB", "max_wal_size": "8GB"}  # the server the benchmark starts itself
EXACT_SCAN_IDS = 50_000  # chunk ids read at a time when the exact top 10 is computed from a kept store
SYLLABLES = ("ka", "lo", "mi", "ra", "tu", "ve", "sho", "nel", "dar", "fin", "gor", "pel", "quo", "sta", "vin",
             "zen", "bre", "cal", "dun", "har")


class SyntheticCorpus:
    """Reproducible chunks: clustered unit vectors and Zipf-distributed words."""

    def __init__(self, chunks: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        clusters = max(8, chunks // CHUNKS_PER_CLUSTER)
        self.centres = _unit(self.rng.standard_normal((clusters, DIM)).astype(np.float32))
        self.words = _vocabulary(VOCABULARY, self.rng)
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        self.word_p = ranks ** -ZIPF_EXPONENT / (ranks ** -ZIPF_EXPONENT).sum()

    def vectors(self, count: int) -> np.ndarray:
        centres = self.centres[self.rng.integers(0, len(self.centres), count)]
        noise = self.rng.standard_normal((count, DIM)).astype(np.float32) * (NOISE / np.sqrt(DIM))
        return _unit(centres + noise)

    def texts(self, count: int) -> list[str]:
        lengths = self.rng.integers(*WORDS_PER_CHUNK, count)
        drawn = self.rng.choice(len(self.words), size=int(lengths.sum()), p=self.word_p).tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        return [" ".join(map(self.words.__getitem__, drawn[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]

    def queries(self, count: int) -> list[str]:
        # Words of ranks 100-5,000: neither stop-word-like nor unseen, like the content words of a question.
        return [" ".join(map(self.words.__getitem__, self.rng.integers(100, 5000, 4).tolist())) for _ in range(count)]

    def documents(self, count: int, start: int = 0) -> Iterator[tuple[NewDocument, list[NewChunk], np.ndarray]]:
        for number in range(start, start + count):
            texts = self.texts(CHUNKS_PER_DOCUMENT)
            chunks = [NewChunk(page=1 + i // 3, text=text) for i, text in enumerate(texts)]
            name = f"synthetic-{number:07d}.pdf"
            yield (NewDocument(f"/synthetic/{name}", name, "pdf", f"sha-{number}", 1000, 10), chunks,
                   self.vectors(CHUNKS_PER_DOCUMENT))


class ExactSearch:
    """The true top k of each query over every vector added, kept as the store is filled (no second copy)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = queries
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = np.concatenate([self.scores, self.queries @ vectors.T], axis=1)
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1)
        keep = np.argsort(-scores, axis=1)[:, : self.k]
        self.scores = np.take_along_axis(scores, keep, axis=1)
        self.ids = np.take_along_axis(all_ids, keep, axis=1)

    def remove(self, ids: set[int]) -> None:
        if np.isin(self.ids, list(ids)).any():
            raise ValueError("a document in the exact top k was deleted; the benchmark deletes only its own")


class NoEmbedder:
    """The benchmark gives every query's vector: the query embedding is not part of what it measures."""

    def embed(self, *_: object, **__: object) -> np.ndarray:
        raise AssertionError("the scale benchmark must not embed: it passes the query vectors")


def fill(kb: KnowledgeBaseStore, corpus: SyntheticCorpus, documents: int, exact: ExactSearch) -> None:
    """Store `documents` synthetic documents, BATCH_DOCUMENTS a transaction, inside the store's bulk_load()."""
    done = 0
    with kb.bulk_load():
        while done < documents:
            batch = min(BATCH_DOCUMENTS, documents - done)
            added = []
            with kb.write() as writer:
                for document, chunks, vectors in corpus.documents(batch, start=done):
                    document_id = writer.add_document(document)
                    writer.add_chunks(document_id, 0, chunks, vectors)
                    added.append((document_id, vectors))
            # the ids the store gave, in ordinal order (any backend)
            exact.add(np.array([c.id for document_id, _ in added for c in kb.chunks_of_document(document_id)],
                               np.int64), np.concatenate([vectors for _, vectors in added]))
            done += batch
            logger.info("%d chunks stored", done * CHUNKS_PER_DOCUMENT)
        logger.info("building the vector index")
    kb.flush()


def exact_from_store(kb: KnowledgeBaseStore, exact: ExactSearch) -> None:
    """The exact top 10 of a kept store, from its stored vectors (ids ascending from 1, as a fill leaves them)."""
    seen, first = 0, 1
    while seen < kb.text_index.size:
        vectors = kb.chunk_vectors(list(range(first, first + EXACT_SCAN_IDS)))
        if vectors:
            ids = np.fromiter(vectors, np.int64, len(vectors))
            exact.add(ids, np.stack([vectors[int(i)] for i in ids]))
            seen += len(vectors)
        first += EXACT_SCAN_IDS


def timed_percentiles(run: Callable[[int], object], count: int,
                      server_clock: Callable[[], float] | None = None) -> list[dict[str, float] | None]:
    """p50/p95 of the wall-clock, of this thread's CPU and of the server's CPU (server_clock, seconds; None when
    there is none) milliseconds of run(0..count-1), after a warm-up."""
    run(0)  # warm-up: the first query loads what later ones reuse
    clocks = [time.perf_counter, time.thread_time, server_clock]
    spent: list[list[float]] = [[], [], []]
    for i in range(count):
        starts = [clock() if clock else 0.0 for clock in clocks]
        run(i)
        for times, clock, start in zip(spent, clocks, starts):
            times.append((clock() - start) * 1000 if clock else 0.0)
    return [_percentiles(times) if clock else None for times, clock in zip(spent, clocks)]


def server_cpu_clock(kb: KnowledgeBaseStore) -> Callable[[], float] | None:
    """The CPU seconds of the server process that runs a PostgreSQL store's searches, when it runs on this machine
    (schedstat counts nanoseconds; /proc/PID/stat only 10 ms ticks)."""
    pid = getattr(kb, "search_backend_pid", lambda: None)()
    stat = Path(f"/proc/{pid}/schedstat")
    if pid is None or not stat.is_file():
        return None
    return lambda: int(stat.read_text().split()[0]) / 1e9


def server_memory(data: Path) -> Callable[[], int]:
    """A reader of the memory of the PostgreSQL server whose data folder is `data`, in bytes: the proportional set
    size (PSS) of the postmaster and its children, so that the shared buffers every process maps count once."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])

    def read() -> int:
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # after the name: state, then ppid
                if postmaster not in (int(stat.parent.name), parent):
                    continue
                pss = next(line for line in (stat.parent / "smaps_rollup").read_text().splitlines()
                           if line.startswith("Pss:"))
                total += int(pss.split()[1]) * 1024
            except (OSError, ValueError, IndexError, StopIteration):
                continue  # a process that ended meanwhile, or one this user may not read
        return total

    return read


def _percentiles(milliseconds: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(milliseconds, 50)), 2),
            "p95": round(float(np.percentile(milliseconds, 95)), 2)}


def one_document_costs(kb: KnowledgeBaseStore, corpus: SyntheticCorpus, first_number: int,
                       repeats: int = 3) -> tuple[float, float]:
    """Seconds to add, then delete, one 10-page document until a search sees the change (medians): the commit,
    flush(), and a BM25 search (which brings the lexical index up to date) and a dense one."""
    lexical = lexical_index(kb)
    adds, deletes = [], []
    for document, chunks, vectors in corpus.documents(repeats, start=first_number):
        word = chunks[0].text.split()[0]
        start = time.perf_counter()
        with kb.write() as writer:
            document_id = writer.add_document(document)
            writer.add_chunks(document_id, 0, chunks, vectors)
        kb.flush()
        lexical.search(word, K)
        kb.search_chunks(vectors[:1], K)
        adds.append(time.perf_counter() - start)
        start = time.perf_counter()
        kb.delete(document_id)
        lexical.search(word, K)
        kb.search_chunks(vectors[:1], K)
        deletes.append(time.perf_counter() - start)
    return round(statistics.median(adds), 3), round(statistics.median(deletes), 3)


def recall(kb: KnowledgeBaseStore, exact: ExactSearch) -> float:
    """The share of the exact top 10 that the store's dense search returns, over the benchmark's queries."""
    found = [[chunk.id for chunk, _ in kb.search_chunks(query[None], K)] for query in exact.queries]
    hits = sum(len(set(row) & set(truth)) for row, truth in zip(found, exact.ids.tolist()))
    return round(hits / exact.ids.size, 4)


@contextmanager
def open_backend(backend: str, postgres_url: str | None, folder: Path,
                 ann: str) -> Iterator[tuple[KnowledgeBaseStore, Path]]:
    """The store to fill, and the folder whose size is its disk use (the server's data folder for postgres)."""
    if backend == "folder":
        yield KnowledgeBase(folder, MODEL, use_gpu=False, ann=ann), folder
        return
    from rag.store_factory import open_store  # the PostgreSQL backend (issue 11 §2)

    if postgres_url is not None:
        yield open_store(postgres_url, MODEL, kb="scale", cache_dir=folder / "cache"), folder
        return
    data = folder / "pgdata"
    data.mkdir(parents=True, exist_ok=True)  # an existing one is a kept store (--folder)
    server = _start_server(data)
    try:
        yield open_store(server.get_uri(), MODEL, kb="scale", cache_dir=folder / "cache"), data
    finally:
        server.cleanup()


def _start_server(data: Path) -> pgserver.PostgresServer:
    """A pgserver PostgreSQL in `data`, restarted once with SERVER_SETTINGS when it lacks them."""
    import pgserver
    import psycopg

    server = pgserver.get_server(str(data), cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        current = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}
        if current == SERVER_SETTINGS:
            return server
        for name, value in SERVER_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    server.cleanup()  # stops it (cleanup_mode "stop"); shared_buffers needs a restart
    return pgserver.get_server(str(data), cleanup_mode="stop")


def ef_search_sweep(kb: KnowledgeBaseStore, values: list[int], query_vectors: np.ndarray, query_texts: list[str],
                    exact: ExactSearch, cache_dir: Path) -> list[dict]:
    """Dense and hybrid search time and recall@10 of a PostgreSQL store opened again with each `ef_search` (the
    URL parameter): the HNSW search's candidate list, traded between recall and server time."""
    from rag.store_factory import open_store

    rows = []
    for value in values:
        store = open_store(replace(kb.location, ef_search=value).with_kb(kb.location.kb), MODEL, cache_dir=cache_dir)
        try:
            timings = time_searches(store, ("dense", "hybrid"), query_texts, query_vectors)
            rows.append({"ef_search": value, "recall_at_10": recall(store, exact),
                         "search_ms": by_clock(timings, 0), "server_cpu_ms": by_clock(timings, 2)})
            logger.info("ef_search %d: %s", value, rows[-1])
        finally:
            store.close()
    return rows


def run(chunks: int, backend: str, postgres_url: str | None, folder: Path, ann: str = "auto",
        ef_search: list[int] | None = None) -> dict:
    load_at_start = os.getloadavg()[0]
    corpus = SyntheticCorpus(chunks)
    query_vectors = corpus.vectors(QUERIES)
    query_texts = corpus.queries(QUERIES)
    exact = ExactSearch(query_vectors, K)
    with PeakRss() as peak, open_backend(backend, postgres_url, folder, ann) as (kb, disk_folder):
        # the server's memory, when the benchmark started it (a server given by URL may be on another machine)
        server = server_memory(disk_folder) if backend == "postgres" and postgres_url is None else None
        with PeakRss(server, interval_s=1.0) if server else nullcontext() as server_peak:
            result = measure(kb, corpus, chunks, query_vectors, query_texts, exact)
        if server:
            result["server_memory_mb"] = round(server() / 2**20, 1)
            result["server_peak_memory_mb"] = round(server_peak.peak / 2**20, 1)
        result["backend"] = backend
        result["rss_mb"] = round(PeakRss.current() / 2**20, 1)
        if ef_search:
            result["ef_search_sweep"] = ef_search_sweep(kb, ef_search, query_vectors, query_texts, exact,
                                                        folder / "cache")
        kb.close()
        result["disk_mb"] = round(sum(p.stat().st_size for p in disk_folder.rglob("*") if p.is_file()) / 2**20, 1)
    result["peak_rss_mb"] = round(peak.peak / 2**20, 1)
    result["load_average"] = {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}
    return {key: result[key] for key in ("chunks", "backend", "search_ms", "cpu_ms", "server_cpu_ms", "recall_at_10",
                                         "add_document_s", "delete_document_s", "rss_mb", "peak_rss_mb",
                                         "server_memory_mb", "server_peak_memory_mb", "disk_mb",
                                         "fill_s", "bm25_build_s", "load_average", "ef_search_sweep")
            if key in result}


def measure(kb: KnowledgeBaseStore, corpus: SyntheticCorpus, chunks: int, query_vectors: np.ndarray,
            query_texts: list[str], exact: ExactSearch) -> dict:
    documents = max(1, chunks // CHUNKS_PER_DOCUMENT)
    start = time.perf_counter()
    stored = kb.text_index.size
    if stored:  # a kept store (--folder) filled by an earlier run, perhaps interrupted: measured as it is
        logger.info("the store holds %d chunks already: computing the exact top 10 from it", stored)
        exact_from_store(kb, exact)
        fill_s = None
        documents = stored // CHUNKS_PER_DOCUMENT
    else:
        fill(kb, corpus, documents, exact)
        fill_s = round(time.perf_counter() - start, 1)
        logger.info("stored %d chunks in %.1f s", documents * CHUNKS_PER_DOCUMENT, fill_s)
    start = time.perf_counter()
    lexical_index(kb).search(query_texts[0], K)
    bm25_build_s = round(time.perf_counter() - start, 1)
    logger.info("BM25 index ready in %.1f s", bm25_build_s)
    timings = time_searches(kb, ("dense", "bm25", "hybrid"), query_texts, query_vectors)
    add_s, delete_s = one_document_costs(kb, corpus, max(documents, chunks // CHUNKS_PER_DOCUMENT))  # new numbers
    return {"chunks": documents * CHUNKS_PER_DOCUMENT, "search_ms": by_clock(timings, 0),
            "cpu_ms": by_clock(timings, 1), "server_cpu_ms": by_clock(timings, 2),
            "recall_at_10": recall(kb, exact), "add_document_s": add_s, "delete_document_s": delete_s,
            "fill_s": fill_s, "bm25_build_s": bm25_build_s}


def time_searches(kb: KnowledgeBaseStore, modes: tuple[str, ...], query_texts: list[str],
                  query_vectors: np.ndarray) -> dict[str, list[dict[str, float] | None]]:
    """timed_percentiles of Retriever.search(k=10) in each mode, with the server's CPU clock where there is one."""
    retriever = Retriever(kb, NoEmbedder(), mode="hybrid")  # type: ignore[arg-type]
    server_clock = server_cpu_clock(kb)
    return {mode: timed_percentiles(lambda i, mode=mode: retriever.search(query_texts[i], K, mode, query_vectors[i]),
                                    QUERIES, server_clock) for mode in modes}


def by_clock(timings: dict[str, list[dict[str, float] | None]], clock: int) -> dict[str, dict[str, float]] | None:
    """One clock's percentiles per mode (0 wall, 1 this thread's CPU, 2 the server's CPU); None without that clock."""
    figures = {mode: clocks[clock] for mode, clocks in timings.items()}
    return None if None in figures.values() else figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, required=True, help="chunks in the knowledge base (30 per document)")
    parser.add_argument("--backend", choices=("folder", "postgres"), default="folder")
    parser.add_argument("--postgres-url", default=None, help="an existing server; default: start one (pgserver)")
    parser.add_argument("--folder", type=Path, default=None, help="where to build the store (default: a temp folder)")
    parser.add_argument("--ann", choices=ANN_KINDS, default="auto", help="the folder store's vector index")
    parser.add_argument("--ef-search", default="",
                        help="postgres: also measure dense and hybrid search and recall with each of these "
                             "comma-separated hnsw.ef_search values (e.g. 40,100,200)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    ef_search = [int(value) for value in args.ef_search.split(",") if value.strip()]
    if ef_search and args.backend != "postgres":
        parser.error("--ef-search is pgvector's setting: it needs --backend postgres")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="loupe-scale-") as temp:
        folder = args.folder or Path(temp) / "kb"
        result = run(args.chunks, args.backend, args.postgres_url, folder, args.ann, ef_search)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """`size` distinct made-up words of two to four syllables (no stop words, so BM25 keeps them)."""
    words: dict[str, None] = {}
    while len(words) < size:
        count = int(rng.integers(2, 5))
        words["".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), count))] = None
    return list(words)


if __name__ == "__main__":
    main()
