"""A knowledge base in PostgreSQL with pgvector: several app servers share it, the database keeps it safe.

It has the public methods of the folder store (rag.store.KnowledgeBase, see rag.store_api), so retrieval,
answering, ingest and the service use it unchanged. What differs:
- One knowledge base is one schema (rag.pg_connect); one database holds any number of them.
- A document arrives in one transaction with all its chunks, vectors, BM25 postings and image bytes; so a process
  killed mid-ingest leaves each document whole or absent, by the database's own guarantee. Writers serialise on the
  `state` row, which also carries the generation number other processes watch. Its chunks' sentence vectors follow
  in short transactions of their own (set_sentence_vectors, rag.sentence_vectors.fill_missing).
- Dense search: `vector(dim)` with an HNSW index on inner product, the score FAISS's IndexFlatIP gives.
- Lexical search: BM25 computed inside PostgreSQL from a postings table (`terms`), with Loupe's own tokenizer
  (rag.lexical_index.tokenize) and bm25s's formula (Lucene idf, k1 1.5, b 0.75), so rankings match the folder
  backend's. PostgreSQL's own ts_rank has no idf and ranked worse; see docs/DEPLOY.md.
- Images live in the database (`blobs`); `image_path` copies one to the local working folder when asked.
- Documents are staged on local disk while they are parsed and embedded (rag.store.StagedDocument), as on the
  folder backend: transient files of one process, removed after the commit.
- The server may restart under a running app: while it is down every call is DatabaseUnreachable (503); once it is
  back, the next call opens a new connection (_Link). A read is tried once more on it; a write is not (its
  transaction was rolled back, its caller hears it).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from rag.catalog import BUSY_TIMEOUT_S
from rag.pg_connect import (
    DatabaseMissing,
    Location,
    connect,
    connection_lost,
    create_tables,
    knowledge_base_names,
    lock_timeout_error,
    use_schema,
)
from rag.records import ChunkRecord, DocumentInfo, ImageRecord, ModelId, NewChunk, NewDocument, indexed_text
from rag.sentence_vectors import pack, unpack
from rag.store import (
    DocumentNotFound,
    ModelMismatch,
    StagedDocument,
    _image_extension,
    commit_staged,
    only_match,
    staging_folder,
)

logger = logging.getLogger(__name__)

BM25_K1 = 1.5  # bm25s's defaults, so the two backends rank alike
BM25_B = 0.75
STAGING_DIR = "staging"
BULK_LOAD_INDEXES = ("chunks_embedding", "terms_postings", "terms_chunk")  # dropped during bulk_load()
IMAGES_DIR = "images"

_CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, d.name, d.path, c.page, c.heading, c.text"
_IMAGE_COLUMNS = "i.id, i.document_id, d.name, i.page, i.name, i.file, i.embedding IS NOT NULL"
_DOCUMENT_QUERY = """
    SELECT d.id, d.name, d.path, d.kind, d.sha256, d.size_bytes, d.page_count,
           (SELECT count(*) FROM chunks c WHERE c.document_id = d.id),
           (SELECT count(*) FROM images i WHERE i.document_id = d.id),
           (SELECT count(*) FROM images i WHERE i.document_id = d.id AND i.embedding IS NULL),
           d.added_at
    FROM documents d {where} ORDER BY d.id"""
# BM25 in one statement (one snapshot): N and the total length from `state` (read once: InitPlans); each query term's
# df counted first, then its postings read, both from the postings index alone (terms_postings holds tf and the
# chunk's length: no table page is read). Float constants throughout: an integer column times 0.75 is numeric
# arithmetic, several times slower. A term repeated in the query counts again, as in bm25s. Each of the ~80
# postings a chunk has is one index entry, so a query reads every posting of its terms: about 2,000 at 100k chunks.
_BM25_QUERY = f"""
    WITH st AS (SELECT chunks::float8 AS n, greatest(tokens::float8 / greatest(chunks, 1), 1e-9) AS avgdl FROM state),
    q AS (SELECT term, count(*)::float8 AS qtf FROM unnest(%(terms)s::text[]) AS term GROUP BY term),
    w AS MATERIALIZED (SELECT q.term, q.qtf * ln(1 + ((SELECT n FROM st) - d.df + 0.5) / (d.df + 0.5)) AS idf
                       FROM q CROSS JOIN LATERAL (SELECT count(*)::float8 AS df FROM terms t WHERE t.term = q.term) d)
    SELECT t.chunk_id, sum(w.idf * t.tf / (t.tf + {BM25_K1}::float8 * (1 - {BM25_B}::float8 + {BM25_B}::float8
                                                                       * t.tokens / (SELECT avgdl FROM st)))) AS score
    FROM w JOIN terms t ON t.term = w.term
    GROUP BY t.chunk_id ORDER BY score DESC, t.chunk_id LIMIT %(k)s"""


class _Count:
    """The chunk count in the shape of a VectorIndex's `size` (the fusion's pool size)."""

    def __init__(self, kb: PgKnowledgeBase) -> None:
        self._kb = kb

    @property
    def size(self) -> int:
        return self._kb.chunk_count()


class _Link:
    """One of a store's connections, opened again after the server dropped it (a restart, a network cut): connect()
    gives the new one pgvector's types and the HNSW settings, use_schema its search path. The store's lock for this
    connection is held around every use."""

    def __init__(self, location: Location) -> None:
        self._location = location
        self._shut = False  # closed by the store: never reopened
        self._conn = self._open()

    def _open(self) -> psycopg.Connection:
        conn = connect(self._location)  # DatabaseUnreachable while the server is down
        try:
            use_schema(conn, self._location.kb)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def lost(self) -> bool:
        return self._conn.closed and not self._shut

    @property
    def connection(self) -> psycopg.Connection:
        """The open connection; a new one in place of a lost one."""
        if self.lost:
            self._conn = self._open()
            logger.info("reconnected to %s", self._location.label)
        return self._conn

    def checked(self) -> psycopg.Connection:
        """The connection after a round trip that proves it open: a transaction must not begin on one the server
        dropped while it sat idle (a read finds out by failing and tries again; a write cannot)."""
        try:
            self.connection.execute("SELECT 1")
        except psycopg.OperationalError as error:
            if not self.lost:
                raise
            logger.info("the connection to %s was lost while idle (%s); opening a new one", self._location.label,
                        type(error).__name__)
        return self.connection

    @contextmanager
    def guard(self) -> Iterator[None]:
        """An error from this connection that the server dropped is DatabaseUnreachable (503, names the server)."""
        try:
            yield
        except psycopg.OperationalError:
            if not self.lost:
                raise  # e.g. LockNotAvailable, a query cancelled: the connection is fine
            logger.warning("lost the connection to %s", self._location.label, exc_info=True)
            raise connection_lost(self._location) from None

    def rows(self, query: str, params: Sequence | dict) -> list[tuple]:
        """A read's rows, tried once more on a new connection when the server dropped this one: a read changes
        nothing, so repeating it is safe."""
        try:
            return self.connection.execute(query, params).fetchall()
        except psycopg.OperationalError as error:
            if not self.lost:
                raise
            logger.info("lost the connection to %s (%s); reading again on a new one", self._location.label,
                        type(error).__name__)
        with self.guard():
            return self.connection.execute(query, params).fetchall()

    def close(self) -> None:
        self._shut = True
        self._conn.close()


class PgKnowledgeBase:
    def __init__(self, location: Location, text_model: ModelId, image_model: ModelId | None = None, *,
                 work_folder: Path, busy_timeout_s: float = BUSY_TIMEOUT_S, create: bool = True) -> None:
        self.location = location
        self.name = location.kb
        self.text_model = text_model
        self.image_model = image_model
        self.folder = Path(work_folder)  # local and disposable: upload staging, display copies of images
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()  # guards the reader connection
        self._write_lock = threading.Lock()  # one writer of this process at a time; the state row serialises all
        self._reading = _Link(location)
        try:
            self._writing = _Link(location)
        except BaseException:
            self._reading.close()
            raise
        try:
            self._open_schema(create)
        except BaseException:
            self._reading.close()
            self._writing.close()
            raise
        self.folder.mkdir(parents=True, exist_ok=True)
        self.text_index = _Count(self)
        self._lexical = PgLexicalIndex(self)
        self._remove_leftovers()

    def __repr__(self) -> str:
        return f"PgKnowledgeBase({self.location.label})"

    # --- schema and models --------------------------------------------------------------------
    def _open_schema(self, create: bool) -> None:
        with self._lock:
            exists = self.location.kb in knowledge_base_names(self._reading.connection)
        if not exists and not create:
            raise DatabaseMissing(f"no knowledge base '{self.location.kb}' in PostgreSQL at "
                                  f"{self.location.server}: run `python -m rag ingest PATH --store URL` first")
        recorded = self._meta("text_dim") if exists else None
        if not self.text_model.dim and recorded is None:
            raise DatabaseMissing(f"the knowledge base '{self.location.kb}' at {self.location.server} holds no "
                                  "documents yet")
        if not self.text_model.dim:  # opened without models (list, delete): take the recorded one
            self.text_model = ModelId(self._meta("text_model") or self.text_model.name, int(recorded))
        with self._writer() as conn:
            create_tables(conn, self.location.kb, int(recorded or self.text_model.dim))
        self._check_models()

    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def _check_models(self) -> None:
        roles = [("text", self.text_model)] + ([("image", self.image_model)] if self.image_model else [])
        with self._writer() as conn, conn.transaction():
            conn.execute("LOCK TABLE meta IN SHARE ROW EXCLUSIVE MODE")  # two first opens record once
            for role, model in roles:
                row = conn.execute("SELECT value FROM meta WHERE key = %s", (f"{role}_model",)).fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s), (%s, %s)",
                                 (f"{role}_model", model.name, f"{role}_dim", str(model.dim)))
                    continue
                dim = conn.execute("SELECT value FROM meta WHERE key = %s", (f"{role}_dim",)).fetchone()
                if row[0] != model.name or int(dim[0]) != model.dim:
                    raise ModelMismatch(
                        f"{self.location.kb}: this knowledge base was built with the {role} model '{row[0]}' "
                        f"({dim[0]}-d), but Loupe is set to use '{model.name}' ({model.dim}-d). Vectors from "
                        f"different models cannot be mixed: set the {role} model back to '{row[0]}', or use "
                        "another knowledge base.")

    # --- state --------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return int(self._rows("SELECT generation FROM state")[0][0])

    def chunk_count(self) -> int:
        return int(self._rows("SELECT chunks FROM state")[0][0])

    def search_backend_pid(self) -> int:
        """The server process that runs this store's searches (benchmarks.scale reads its CPU time); another one
        after a reconnect."""
        with self._lock:
            return int(self._reading.connection.info.backend_pid)

    def lexical_index(self) -> PgLexicalIndex:
        """BM25 inside the database (rag.store_api.lexical_index picks it)."""
        return self._lexical

    def _remove_leftovers(self) -> None:
        """Staging folders of dead processes on this machine (the database has nothing to clean up)."""
        from rag.store import _children, _process_alive

        for folder in _children(self.folder / STAGING_DIR):
            pid = folder.name.split("-", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    # --- reads --------------------------------------------------------------------------------
    def _rows(self, query: str, params: Sequence | dict = ()) -> list[tuple]:
        with self._lock:
            return self._reading.rows(query, params)

    @contextmanager
    def _writer(self) -> Iterator[psycopg.Connection]:
        """The writer connection, checked open, under the write lock. An error from a connection lost meanwhile is
        DatabaseUnreachable and is not retried: the server rolled the transaction back, its caller must know."""
        with self._write_lock, self._writing.guard():
            yield self._writing.checked()

    def documents(self, where: str = "", params: Sequence = ()) -> list[DocumentInfo]:
        return [DocumentInfo(*row) for row in self._rows(_DOCUMENT_QUERY.format(where=where), params)]

    def document_by_sha(self, sha256: str) -> DocumentInfo | None:
        return next(iter(self.documents("WHERE d.sha256 = %s", (sha256,))), None)

    def documents_by_path(self, path: str) -> list[DocumentInfo]:
        return self.documents("WHERE d.path = %s", (path,))

    def resolve(self, reference: str) -> DocumentInfo:
        """A document by id, by path, or by file name when that name is unique."""
        if reference.isdigit():
            matches = self.documents("WHERE d.id = %s", (int(reference),))
        else:
            absolute = str(Path(reference).expanduser().resolve())
            matches = self.documents_by_path(absolute) or self.documents("WHERE d.name = %s", (reference,))
        return only_match(matches, reference, self.location.kb)

    def search_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[ChunkRecord, float]]:
        """The k chunks nearest the query by inner product (HNSW), best first."""
        vector = np.asarray(query_vector, np.float32).reshape(-1)[: self.text_model.dim]
        rows = self._rows(
            f"WITH hits AS (SELECT id, embedding <#> %(q)s AS distance FROM chunks "
            f"ORDER BY embedding <#> %(q)s LIMIT %(k)s) "
            f"SELECT {_CHUNK_COLUMNS}, -h.distance FROM hits h JOIN chunks c ON c.id = h.id "
            f"JOIN documents d ON d.id = c.document_id ORDER BY h.distance, c.id",
            {"q": vector, "k": max(1, k)})
        return [(ChunkRecord(*row[:8]), float(row[8])) for row in rows]

    def search_chunk_ids(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest chunks' (id, inner product), best first, without reading them."""
        vector = np.asarray(query_vector, np.float32).reshape(-1)[: self.text_model.dim]
        # Ordered by the distance alone inside (what the HNSW index gives); ties by id outside, as search_chunks.
        rows = self._rows("WITH hits AS (SELECT id, embedding <#> %(q)s AS distance FROM chunks "
                          "ORDER BY embedding <#> %(q)s LIMIT %(k)s) SELECT id, -distance FROM hits "
                          "ORDER BY distance, id", {"q": vector, "k": max(1, k)})
        return [(int(chunk_id), float(score)) for chunk_id, score in rows]

    def search_images(self, query_vector: np.ndarray, k: int) -> list[tuple[ImageRecord, float]]:
        """The k images nearest the query (exact: images are few beside chunks)."""
        if self.image_model is None and self._meta("image_dim") is None:
            return []
        vector = np.asarray(query_vector, np.float32).reshape(-1)
        rows = self._rows(
            f"SELECT {_IMAGE_COLUMNS}, -(i.embedding <#> %(q)s) FROM images i JOIN documents d "
            f"ON d.id = i.document_id WHERE i.embedding IS NOT NULL ORDER BY i.embedding <#> %(q)s, i.id "
            f"LIMIT %(k)s", {"q": vector, "k": max(1, k)})
        return [(_image(row), float(row[7])) for row in rows]

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRecord]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self._rows(f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id "
                          "WHERE c.id = ANY(%s)", (ids,))
        return {row[0]: ChunkRecord(*row) for row in rows}

    def chunks_of_document(self, document_id: int, first: int = 0, last: int | None = None) -> list[ChunkRecord]:
        last = (1 << 31) - 1 if last is None else last
        rows = self._rows(f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id "
                          "WHERE c.document_id = %s AND c.ordinal BETWEEN %s AND %s ORDER BY c.ordinal",
                          (document_id, first, last))
        return [ChunkRecord(*row) for row in rows]

    def chunk_vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The vectors ingest stored for these chunks (heading + text, as indexed)."""
        rows = self._rows("SELECT id, embedding FROM chunks WHERE id = ANY(%s)", ([int(i) for i in ids],))
        return {chunk_id: np.asarray(vector.to_numpy(), np.float32) for chunk_id, vector in rows}

    def image_vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The CLIP vectors of these images, by id: those embedded."""
        rows = self._rows("SELECT id, embedding FROM images WHERE embedding IS NOT NULL AND id = ANY(%s)",
                          ([int(i) for i in ids],))
        return {image_id: np.asarray(vector.to_numpy(), np.float32) for image_id, vector in rows}

    def sentence_vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The sentence vectors ingest stored for these chunks (rag.sentence_vectors); absent for some chunks."""
        rows = self._rows("SELECT id, sentence_vectors, text FROM chunks WHERE sentence_vectors IS NOT NULL "
                          "AND id = ANY(%s)", ([int(i) for i in ids],))
        unpacked = {chunk_id: unpack(bytes(blob), text, self.text_model.dim) for chunk_id, blob, text in rows}
        return {chunk_id: vectors for chunk_id, vectors in unpacked.items() if vectors is not None}

    def chunks_without_sentence_vectors(self, document_ids: Sequence[int] | None, limit: int,
                                        after_id: int = 0) -> list[tuple[int, str]]:
        """(id, text) of up to `limit` chunks without sentence vectors, of these documents (all: None), with ids above
        `after_id`, in id order (rag.store_api)."""
        where, params = "sentence_vectors IS NULL AND id > %s", [after_id]
        if document_ids is not None:
            where += " AND document_id = ANY(%s)"
            params.append([int(i) for i in document_ids])
        return [tuple(row) for row in self._rows(f"SELECT id, text FROM chunks WHERE {where} ORDER BY id LIMIT %s",
                                                 [*params, limit])]

    def set_sentence_vectors(self, blobs: dict[int, bytes]) -> int:
        """Store packed sentence vectors where a chunk has none yet, in one short transaction that leaves the
        generation alone: no index holds them (rag.store_api)."""
        with self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany("UPDATE chunks SET sentence_vectors = %s WHERE id = %s AND sentence_vectors IS NULL",
                               [(blob, chunk_id) for chunk_id, blob in blobs.items()])
            return max(cursor.rowcount, 0)

    def chunk_texts(self) -> list[tuple[int, str | None, str]]:
        """(id, heading, text) of every chunk, in one snapshot."""
        return [tuple(row) for row in self._rows("SELECT id, heading, text FROM chunks ORDER BY id")]

    def images_on_pages(self, document_id: int, pages: list[int] | None = None) -> list[ImageRecord]:
        where, params = "i.document_id = %s", [document_id]
        if pages is not None:
            where += " AND i.page = ANY(%s)"
            params.append(list(pages))
        rows = self._rows(f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id "
                          f"WHERE {where} ORDER BY i.id", params)
        return [_image(row) for row in rows]

    def images_waiting(self) -> list[ImageRecord]:
        rows = self._rows(f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id "
                          "WHERE i.embedding IS NULL ORDER BY i.id")
        return [_image(row) for row in rows]

    def image_bytes(self, image: ImageRecord) -> bytes | None:
        """The stored image, or None once no document holds it."""
        row = self._rows("SELECT data FROM blobs WHERE file = %s", (image.image_path,))
        return bytes(row[0][0]) if row else None

    def image_path(self, image: ImageRecord) -> Path:
        """A local copy of a stored image (content-named, so a copy never goes stale); a path that does not exist
        once the image is gone from the database."""
        path = self.folder / IMAGES_DIR / Path(image.image_path).name
        data = self.image_bytes(image)
        if data is None:
            path.unlink(missing_ok=True)
        elif not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            partial.write_bytes(data)
            os.replace(partial, path)
        return path

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[StagedDocument]:
        """A private local folder for one document on its way in, removed afterwards."""
        with staging_folder(self.folder, self.text_model.dim) as staged:
            yield staged

    def commit(self, document: NewDocument, staged: StagedDocument) -> tuple[int, list[DocumentInfo]]:
        """Add a staged document in one transaction, deleting the documents from the same path it replaces;
        DuplicateDocument when the same bytes are stored already (perhaps by another process meanwhile)."""
        return commit_staged(self, document, staged)

    @contextmanager
    def write(self) -> Iterator[PgWriter]:
        """One transaction: everything done through the writer lands together, or nothing does. Writers of every
        process queue on the state row; past the busy timeout the caller gets Busy."""
        with self._transaction() as conn:
            conn.execute("SELECT 1 FROM state FOR UPDATE")
            writer = PgWriter(self, conn)
            yield writer
            conn.execute("UPDATE state SET generation = generation + 1, chunks = chunks + %s, tokens = tokens + %s",
                         (writer.chunk_delta, writer.token_delta))

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction on the writer connection whose waits for a lock end after the busy timeout, as Busy."""
        with self._writer() as conn:
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {int(self.busy_timeout_s * 1000)}")
                    yield conn
            except psycopg.errors.LockNotAvailable:
                raise lock_timeout_error(self.location) from None

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Fill an empty or large knowledge base faster: the HNSW index and the postings' indexes are dropped
        meanwhile and built once at the end (a sort, and pgvector's in-memory graph build, instead of tens of millions
        of single insertions into indexes far larger than the cache), then the tables are vacuumed and analysed (so
        that BM25 reads its postings from the index alone, and the planner knows the sizes). Every write is still
        its own transaction that other processes see; searches are slow meanwhile (no index). A process killed
        meanwhile leaves the indexes to the next open (create_tables builds what is missing)."""
        with self._writer() as conn:
            for index in BULK_LOAD_INDEXES:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
        try:
            yield
        finally:
            with self._writer() as conn:
                self._build_indexes(conn)

    def _build_indexes(self, conn: psycopg.Connection) -> None:
        create_tables(conn, self.location.kb, self.text_model.dim)  # CREATE INDEX IF NOT EXISTS
        conn.execute("VACUUM (ANALYZE) chunks, terms")

    def delete(self, document_id: int) -> DocumentInfo:
        with self.write() as writer:
            return writer.delete_document(document_id)

    def flush(self) -> None:
        """Nothing to save: every write is in the database when write() returns."""

    def close(self) -> None:
        with self._write_lock, self._lock:
            self._reading.close()
            self._writing.close()


class PgWriter:
    """Adds and removes documents inside one PgKnowledgeBase.write() transaction."""

    def __init__(self, kb: PgKnowledgeBase, conn: psycopg.Connection) -> None:
        self._kb = kb
        self._conn = conn
        self.chunk_delta = 0
        self.token_delta = 0

    def document_by_sha(self, sha256: str) -> DocumentInfo | None:
        return next(iter(self._documents("WHERE d.sha256 = %s", (sha256,))), None)

    def documents_by_path(self, path: str) -> list[DocumentInfo]:
        return self._documents("WHERE d.path = %s", (path,))

    def _documents(self, where: str, params: Sequence) -> list[DocumentInfo]:
        rows = self._conn.execute(_DOCUMENT_QUERY.format(where=where), params).fetchall()
        return [DocumentInfo(*row) for row in rows]

    def add_document(self, document: NewDocument) -> int:
        (document_id,) = self._conn.execute(
            "INSERT INTO documents (path, name, kind, sha256, size_bytes, page_count) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING id",
            (document.path, document.name, document.kind, document.sha256, document.size_bytes, document.pages),
        ).fetchone()
        return int(document_id)

    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk], vectors: np.ndarray,
                   sentence_vectors: Sequence[np.ndarray | None] | None = None) -> None:
        """Insert chunks with their vectors, sentence vectors and BM25 postings (COPY: one round trip a table)."""
        if not chunks:
            return
        from rag.lexical_index import tokenize
        from rag.store import _checked_vectors

        vectors = _checked_vectors(chunks, vectors, self._kb.text_model.dim)
        sentence_vectors = sentence_vectors if sentence_vectors is not None else [None] * len(chunks)
        ids = [row[0] for row in self._conn.execute(
            "SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, %s)", (len(chunks),))]
        tokens = tokenize([indexed_text(c.heading, c.text) for c in chunks])
        with self._conn.cursor() as cursor:
            with cursor.copy("COPY chunks (id, document_id, ordinal, page, heading, text, ocr, tokens, embedding, "
                             "sentence_vectors) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "int4", "int4", "text", "text", "bool", "int4", "vector", "bytea"])
                for offset, (chunk_id, chunk, vector, sentences, words) in enumerate(
                        zip(ids, chunks, vectors, sentence_vectors, tokens, strict=True)):
                    copy.write_row((chunk_id, document_id, first_ordinal + offset, chunk.page, chunk.heading,
                                    chunk.text, bool(chunk.ocr), len(words), vector,
                                    None if sentences is None else pack(chunk.text, sentences)))
            with cursor.copy("COPY terms (term, chunk_id, tf, tokens) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int8", "int4", "int4"])
                for chunk_id, words in zip(ids, tokens):
                    for term, tf in Counter(words).items():
                        copy.write_row((term, chunk_id, tf, len(words)))
        self.chunk_delta += len(chunks)
        self.token_delta += sum(len(words) for words in tokens)

    def add_image(self, document_id: int, page: int, name: str, data: bytes, vector: np.ndarray | None) -> int:
        """Store an image's bytes (once per content) and its record; vector None = embed later."""
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        file_name = f"{sha}.{_image_extension(data)}"
        self._conn.execute("INSERT INTO blobs (file, data) VALUES (%s, %s) ON CONFLICT (file) DO NOTHING",
                           (file_name, data))
        return self._insert_image(document_id, page, name, sha, file_name, vector)

    def _insert_image(self, document_id: int, page: int, name: str, sha: str, file_name: str,
                      vector: np.ndarray | None) -> int:
        (image_id,) = self._conn.execute(
            "INSERT INTO images (document_id, page, name, sha256, file, embedding) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING id",
            (document_id, page, name, sha, file_name, None if vector is None else self._image_vector(vector)),
        ).fetchone()
        return int(image_id)

    def add_staged(self, document_id: int, staged: StagedDocument) -> None:
        """Record a staged document's chunks and images; the image bytes go into the database."""
        ordinal = 0
        for chunks, vectors, sentence_vectors in staged.chunk_batches():
            self.add_chunks(document_id, ordinal, chunks, vectors, sentence_vectors)
            ordinal += len(chunks)
        for image in staged.images:
            data = (staged.folder / image.file_name).read_bytes()
            self._conn.execute("INSERT INTO blobs (file, data) VALUES (%s, %s) ON CONFLICT (file) DO NOTHING",
                               (image.file_name, data))
            self._insert_image(document_id, image.page, image.name, image.sha256, image.file_name, image.vector)

    def _image_vector(self, vector: np.ndarray) -> np.ndarray:
        model = self._kb.image_model
        vector = np.asarray(vector, np.float32).reshape(-1)
        if model is None or vector.shape[-1] != model.dim:
            raise ValueError("image vectors need the image model the store was opened with")
        return vector

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        self._conn.execute("UPDATE images SET embedding = %s WHERE id = %s", (self._image_vector(vector), image_id))

    def delete_document(self, document_id: int) -> DocumentInfo:
        info = next(iter(self._documents("WHERE d.id = %s", (document_id,))), None)
        if info is None:
            raise DocumentNotFound(f"no document with id {document_id}")
        chunks, tokens = self._conn.execute("SELECT count(*), coalesce(sum(tokens), 0) FROM chunks "
                                            "WHERE document_id = %s", (document_id,)).fetchone()
        files = [row[0] for row in self._conn.execute("SELECT DISTINCT file FROM images WHERE document_id = %s",
                                                      (document_id,))]
        self._conn.execute("DELETE FROM terms WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id = %s)",
                           (document_id,))
        self._conn.execute("DELETE FROM documents WHERE id = %s", (document_id,))
        # An image another document also holds stays; the write lock means no one adds a reference meanwhile.
        self._conn.execute("DELETE FROM blobs b WHERE b.file = ANY(%s) AND NOT EXISTS "
                           "(SELECT 1 FROM images i WHERE i.file = b.file)", (files,))
        self.chunk_delta -= int(chunks)
        self.token_delta -= int(tokens)
        return info


class PgLexicalIndex:
    """BM25 over a PostgreSQL knowledge base's postings; nothing to build or keep in memory."""

    def __init__(self, kb: PgKnowledgeBase) -> None:
        self._kb = weakref.ref(kb)  # weak: the store holds this index; no cycle

    @property
    def kb(self) -> PgKnowledgeBase:
        kb = self._kb()
        if kb is None:
            raise RuntimeError("the knowledge base of this BM25 index was closed and collected")
        return kb

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """The best k (chunk id, BM25 score) per query, best first; chunks sharing no term are left out."""
        from rag.lexical_index import tokenize

        if k < 1 or not queries:
            return [[] for _ in queries]
        results = []
        for words in tokenize(list(queries)):
            rows = self.kb._rows(_BM25_QUERY, {"terms": list(words), "k": k}) if words else []
            results.append([(int(chunk_id), float(score)) for chunk_id, score in rows if score > 0])
        return results

    def coverage(self, terms: Sequence[str], chunk_ids: Iterable[int]) -> dict[int, float]:
        """The share of the distinct `terms` (tokenize()'s) that each of these chunks holds, from the postings;
        chunks not in the knowledge base are left out."""
        distinct, ids = sorted(set(terms)), sorted({int(i) for i in chunk_ids})
        if not ids:
            return {}
        rows = self.kb._rows("SELECT c.id, count(t.term) FROM chunks c LEFT JOIN terms t ON t.chunk_id = c.id "
                             "AND t.term = ANY(%(terms)s) WHERE c.id = ANY(%(ids)s) GROUP BY c.id",
                             {"terms": distinct, "ids": ids})
        return {int(chunk_id): held / max(1, len(distinct)) for chunk_id, held in rows}

    @property
    def generation(self) -> int:
        return self.kb.generation

    def refresh(self) -> PgLexicalIndex:
        """Nothing to rebuild: the postings are written with the chunks."""
        return self


def _image(row: Sequence) -> ImageRecord:
    return ImageRecord(*row[:6], embedded=bool(row[6]))
