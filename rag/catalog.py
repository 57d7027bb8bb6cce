"""The SQLite catalog: documents, chunks, images, their vectors, and the models that made them.

SQLite's transactions are what make a store crash-safe: a document and all its chunks and images
arrive in one commit or not at all. The FAISS indexes are rebuilt from the vectors kept here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rag.errors import Busy, LoupeError
from rag.records import ChunkRecord, DocumentInfo, ImageRecord, NewChunk, NewDocument
from rag.sentence_vectors import pack, unpack

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
# How long a writer waits for another process's write transaction. Those are short (a parsed and embedded
# document is committed in one go; a 1,000-page PDF takes about a second), so ten seconds means "stuck",
# and the caller gets Busy rather than an endless wait.
BUSY_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL,
    page_count INTEGER NOT NULL,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS documents_path ON documents (path);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    page INTEGER NOT NULL,
    heading TEXT,
    text TEXT NOT NULL,
    ocr INTEGER NOT NULL DEFAULT 0,
    vector BLOB NOT NULL,
    sentence_vectors BLOB
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, ordinal);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page INTEGER NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    file TEXT NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS images_document ON images (document_id);
CREATE INDEX IF NOT EXISTS images_sha ON images (sha256);
"""
# The change log: which chunk and image vectors each write added or removed (kind 'chunk' or 'image'). The indexes
# (FAISS, BM25) are saved whole only now and then, and catch up from their saved generation by reading what
# changed since, instead of the whole catalog: so a write costs in proportion to itself, not to the store. The
# log is complete for every generation above the meta value 'changes_from'; older rows are pruned.
CHANGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER NOT NULL,
    kind TEXT NOT NULL,
    item INTEGER NOT NULL,
    added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_generation ON changes (generation);
"""

_IDS_PER_QUERY = 10_000
_CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, d.name, d.path, c.page, c.heading, c.text"
_IMAGE_COLUMNS = "i.id, i.document_id, d.name, i.page, i.name, i.file, i.vector IS NOT NULL"


class Changes(NamedTuple):
    """What the writes after one generation did to the vectors of one kind, as a net effect: ids that existed
    then and are gone now, and ids added since that still exist (ids are never reused, so nothing is both)."""

    removed: list[int]
    added: list[int]


class Removed(NamedTuple):
    """What deleting a document took away: ids for the vector indexes (images with a vector only), file names for
    the image sweep."""

    chunk_ids: list[int]
    image_ids: list[int]
    image_files: set[str]


def is_busy(error: sqlite3.Error) -> bool:
    """SQLite gave up waiting for another connection's lock."""
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Catalog:
    """Queries over one SQLite connection. Callers serialise access to a Catalog."""

    def __init__(self, conn: sqlite3.Connection, name: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.conn = conn
        self.name = name  # the knowledge base's folder name, for messages (never the full path)
        self.busy_timeout_s = busy_timeout_s

    @classmethod
    def open(cls, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Catalog:
        """Open a catalog, creating its tables on first use. Opening an existing one only reads: a process
        that lists or searches never waits for (or blocks) one that writes."""
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in transaction().
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        catalog = cls(conn, Path(path).parent.name, busy_timeout_s)
        try:
            with catalog._busy_as_error(None):  # a new file turns to WAL under a lock another opener may hold
                conn.execute("PRAGMA journal_mode=WAL")  # readers go on while an ingest writes
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if catalog._schema_version() is None:
                with catalog.transaction():
                    if catalog._schema_version() is None:  # another process may have created it meanwhile
                        catalog._create_schema()
            version = catalog._schema_version()
            if version != SCHEMA_VERSION:
                raise LoupeError(f"the knowledge base '{catalog.name}' has catalog schema {version}, which this "
                                 f"version of Loupe cannot read (it reads schema {SCHEMA_VERSION})")
            catalog._add_missing_columns()
        except BaseException:
            catalog.close()
            raise
        return catalog

    def _schema_version(self) -> str | None:
        has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return self.get_meta("schema_version") if has_meta else None

    def _create_schema(self) -> None:
        self._execute_script(SCHEMA + CHANGES_SCHEMA)
        self.set_meta("schema_version", SCHEMA_VERSION)
        self.set_meta("changes_from", "0")

    def _add_missing_columns(self) -> None:
        """Columns and tables added since schema 1, each optional, so that older stores open and older Loupes
        still read newer ones (they name their columns)."""
        if "sentence_vectors" not in self._columns("chunks"):
            with self.transaction():
                if "sentence_vectors" not in self._columns("chunks"):  # another process may have added it
                    self.conn.execute("ALTER TABLE chunks ADD COLUMN sentence_vectors BLOB")
        if self.get_meta("changes_from") is None:
            with self.transaction():
                if self.get_meta("changes_from") is None:
                    self._execute_script(CHANGES_SCHEMA)
                    # an older store logged nothing: its log starts now
                    self.set_meta("changes_from", str(self.generation()))

    def _execute_script(self, script: str) -> None:
        # Statement by statement: executescript() would COMMIT the surrounding transaction first.
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def transaction(self, busy_timeout_s: float | None = None) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back when it raises. Waits up to
        `busy_timeout_s` (default: the catalog's) for another process's write, then raises Busy."""
        with self._busy_as_error(busy_timeout_s):
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            with self._busy_as_error(None):
                self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query in the block sees the same committed state, and takes no lock
        that a writer waits for (WAL)."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    @contextmanager
    def _busy_as_error(self, busy_timeout_s: float | None) -> Iterator[None]:
        wait = self.busy_timeout_s if busy_timeout_s is None else busy_timeout_s
        if wait != self.busy_timeout_s:
            self.conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            yield
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            raise Busy(f"the knowledge base '{self.name}' is busy: another process is writing to it; "
                       "try again in a moment") from error
        finally:
            if wait != self.busy_timeout_s:
                self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")

    def close(self) -> None:
        self.conn.close()

    # --- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # --- change log ---------------------------------------------------------------------------
    def log_changes(self, generation: int, kind: str, ids: Sequence[int], added: bool) -> None:
        self.conn.executemany("INSERT INTO changes (generation, kind, item, added) VALUES (?, ?, ?, ?)",
                              ((generation, kind, int(i), int(added)) for i in ids))

    def changes_since(self, generation: int, kind: str) -> Changes | None:
        """The net change to `kind`'s vectors after `generation`; None when the log no longer reaches back
        that far (pruned, or a store older than the log): the caller then reads everything."""
        if generation < int(self.get_meta("changes_from") or 0):
            return None
        rows = self.conn.execute("SELECT item, added FROM changes WHERE generation > ? AND kind = ?",
                                 (generation, kind)).fetchall()
        added = {item for item, was_added in rows if was_added}
        removed = {item for item, was_added in rows if not was_added}
        return Changes(sorted(removed - added), sorted(added - removed))

    def prune_changes(self, upto_generation: int) -> None:
        """Forget the changes of generations up to this one (every saved index is at least that recent)."""
        if upto_generation <= int(self.get_meta("changes_from") or 0):
            return
        self.conn.execute("DELETE FROM changes WHERE generation <= ?", (upto_generation,))
        self.set_meta("changes_from", str(upto_generation))

    def _next_ids(self, table: str, count: int) -> int:
        """The first of `count` new ids for `table`, never one a deleted row had: an approximate index keeps a
        removed id as a tombstone, which a new row under the same id would inherit. (SQLite alone hands out
        max(id) + 1, so deleting the newest document would free its ids.)"""
        key = f"last_{table}_id"
        highest = self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
        first = max(int(self.get_meta(key) or 0), int(highest)) + 1
        self.set_meta(key, str(first + count - 1))
        return first

    def bump_generation(self) -> int:
        new = self.generation() + 1
        self.set_meta("generation", str(new))
        return new

    # --- documents ----------------------------------------------------------------------------
    def add_document(self, document: NewDocument) -> int:
        cursor = self.conn.execute(
            "INSERT INTO documents (path, name, kind, sha256, size_bytes, page_count) VALUES (?, ?, ?, ?, ?, ?)",
            (document.path, document.name, document.kind, document.sha256, document.size_bytes, document.pages),
        )
        return int(cursor.lastrowid)

    def delete_document(self, document_id: int) -> Removed:
        """Delete a document with its chunks and images."""
        chunk_ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
        images = self.conn.execute("SELECT id, file, vector IS NOT NULL FROM images WHERE document_id = ?",
                                   (document_id,)).fetchall()
        self.conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        return Removed(chunk_ids, [image_id for image_id, _, embedded in images if embedded],
                       {file for _, file, _ in images})

    def document_by_sha(self, sha256: str) -> DocumentInfo | None:
        return next(iter(self.documents("WHERE d.sha256 = ?", (sha256,))), None)

    def documents_by_path(self, path: str) -> list[DocumentInfo]:
        return list(self.documents("WHERE d.path = ?", (path,)))

    def documents(self, where: str = "", params: tuple = ()) -> Iterator[DocumentInfo]:
        query = f"""
            SELECT d.id, d.name, d.path, d.kind, d.sha256, d.size_bytes, d.page_count,
                   (SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id),
                   (SELECT COUNT(*) FROM images i WHERE i.document_id = d.id),
                   (SELECT COUNT(*) FROM images i WHERE i.document_id = d.id AND i.vector IS NULL),
                   d.added_at
            FROM documents d {where} ORDER BY d.id"""
        for row in self.conn.execute(query, params):
            yield DocumentInfo(*row)

    # --- chunks -------------------------------------------------------------------------------
    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk], vectors: np.ndarray,
                   sentence_vectors: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """Insert chunks with their vectors and (optionally) their sentences' vectors (rag.sentence_vectors)."""
        first_id = self._next_ids("chunks", len(chunks))
        sentence_vectors = sentence_vectors if sentence_vectors is not None else [None] * len(chunks)
        parts = zip(chunks, vectors, sentence_vectors, strict=True)
        rows = [(first_id + offset, document_id, first_ordinal + offset, chunk.page, chunk.heading, chunk.text,
                 int(chunk.ocr), np.asarray(vector, np.float32).tobytes(),
                 None if sentences is None else pack(chunk.text, sentences))
                for offset, (chunk, vector, sentences) in enumerate(parts)]
        self.conn.executemany(
            "INSERT INTO chunks (id, document_id, ordinal, page, heading, text, ocr, vector, sentence_vectors) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return [row[0] for row in rows]

    def chunk_vectors(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """The stored vectors of these chunks, as ingest made them."""
        rows = self._by_ids("SELECT id, vector FROM chunks WHERE id IN ({})", ids)
        return {row[0]: np.frombuffer(row[1], np.float32).reshape(dim) for row in rows}

    def sentence_vectors(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """The stored vectors of these chunks' sentences, one row per sentence of split_sentences(chunk text);
        chunks stored without them, or with the sentences of another splitter, are left out."""
        rows = self._by_ids("SELECT id, sentence_vectors, text FROM chunks WHERE sentence_vectors IS NOT NULL AND "
                            "id IN ({})", ids)
        unpacked = {chunk_id: unpack(blob, text, dim) for chunk_id, blob, text in rows}
        return {chunk_id: vectors for chunk_id, vectors in unpacked.items() if vectors is not None}

    def _by_ids(self, query: str, ids: Iterable[int]) -> list[tuple]:
        """Rows for ids, asked in batches of _IDS_PER_QUERY (SQLite caps the parameters of one statement)."""
        ids = list(ids)
        rows: list[tuple] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start:start + _IDS_PER_QUERY]
            rows += self.conn.execute(query.format(",".join("?" * len(part))), part).fetchall()
        return rows

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRecord]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks})",
            ids,
        )
        return {row[0]: ChunkRecord(*row) for row in rows}

    def chunks_of_document(self, document_id: int, first: int = 0, last: int | None = None) -> list[ChunkRecord]:
        last = 1 << 62 if last is None else last
        rows = self.conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.document_id = ? AND c.ordinal BETWEEN ? AND ? ORDER BY c.ordinal",
            (document_id, first, last),
        )
        return [ChunkRecord(*row) for row in rows]

    def chunk_texts(self, ids: Iterable[int]) -> list[tuple[int, str | None, str]]:
        """(id, heading, text) of these chunks, in id order; ids that are gone are left out."""
        return sorted(self._by_ids("SELECT id, heading, text FROM chunks WHERE id IN ({})", ids))

    def iter_chunk_texts(self) -> Iterator[tuple[int, str | None, str]]:
        """(id, heading, text) of every chunk, in id order."""
        yield from self.conn.execute("SELECT id, heading, text FROM chunks ORDER BY id")

    def iter_chunk_vectors(self, dim: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from _iter_vectors(self.conn.execute("SELECT id, vector FROM chunks ORDER BY id"), dim, batch)

    # --- images -------------------------------------------------------------------------------
    def add_image(self, document_id: int, page: int, name: str, sha256: str, file: str,
                  vector: np.ndarray | None) -> int:
        blob = None if vector is None else np.asarray(vector, np.float32).tobytes()
        image_id = self._next_ids("images", 1)
        self.conn.execute(
            "INSERT INTO images (id, document_id, page, name, sha256, file, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (image_id, document_id, page, name, sha256, file, blob),
        )
        return image_id

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> bool:
        """Store an image's vector; False when the image is gone (its document was deleted meanwhile)."""
        blob = np.asarray(vector, np.float32).tobytes()
        return self.conn.execute("UPDATE images SET vector = ? WHERE id = ?", (blob, image_id)).rowcount == 1

    def images(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id WHERE i.id IN ({marks})",
            ids,
        )
        return {row[0]: ImageRecord(*row[:6], embedded=bool(row[6])) for row in rows}

    def images_waiting(self) -> list[ImageRecord]:
        rows = self.conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id "
            "WHERE i.vector IS NULL ORDER BY i.id"
        )
        return [ImageRecord(*row[:6], embedded=False) for row in rows]

    def images_of_pages(self, document_id: int, pages: Iterable[int] | None = None) -> list[ImageRecord]:
        """The images on those pages of a document; every image of the document when `pages` is None."""
        where, params = "i.document_id = ?", [document_id]
        if pages is not None:
            pages = list(pages)
            where += f" AND i.page IN ({','.join('?' * len(pages))})"
            params += pages
        rows = self.conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id "
            f"WHERE {where} ORDER BY i.id",
            params,
        )
        return [ImageRecord(*row[:6], embedded=bool(row[6])) for row in rows]

    def image_files_in_use(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT DISTINCT file FROM images")}

    def image_vectors(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """The stored vectors of these images (those embedded)."""
        rows = self._by_ids("SELECT id, vector FROM images WHERE vector IS NOT NULL AND id IN ({})", ids)
        return {row[0]: np.frombuffer(row[1], np.float32).reshape(dim) for row in rows}

    def iter_image_vectors(self, dim: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = self.conn.execute("SELECT id, vector FROM images WHERE vector IS NOT NULL ORDER BY id")
        yield from _iter_vectors(rows, dim, batch)


def _iter_vectors(rows: sqlite3.Cursor, dim: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    while True:
        part = rows.fetchmany(batch)
        if not part:
            return
        ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
        vectors = np.frombuffer(b"".join(r[1] for r in part), dtype=np.float32).reshape(len(part), dim)
        yield ids, vectors
