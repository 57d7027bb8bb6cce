"""The SQLite catalog: documents, chunks, images, their vectors, and the models that made them.

SQLite's transactions are what make a store crash-safe: a document and all its chunks and images
arrive in one commit or not at all. The FAISS indexes are rebuilt from the vectors kept here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rag.records import ChunkRecord, DocumentInfo, ImageRecord, NewChunk

SCHEMA_VERSION = "1"

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
    vector BLOB NOT NULL
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

_CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, d.name, d.path, c.page, c.heading, c.text"
_IMAGE_COLUMNS = "i.id, i.document_id, d.name, i.page, i.name, i.file, i.vector IS NOT NULL"


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in Catalog.transaction.
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")  # readers go on while an ingest writes
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Catalog:
    """Queries over one SQLite connection. Callers serialise access to a Catalog."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path) -> Catalog:
        conn = connect(path)
        conn.executescript(SCHEMA)
        catalog = cls(conn)
        version = catalog.get_meta("schema_version")
        if version is None:
            catalog.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: catalog schema {version} is not supported (expected {SCHEMA_VERSION})")
        return catalog

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

    def bump_generation(self) -> int:
        new = self.generation() + 1
        self.set_meta("generation", str(new))
        return new

    # --- documents ----------------------------------------------------------------------------
    def add_document(self, path: str, name: str, kind: str, sha256: str, size_bytes: int, pages: int) -> int:
        cursor = self.conn.execute(
            "INSERT INTO documents (path, name, kind, sha256, size_bytes, page_count) VALUES (?, ?, ?, ?, ?, ?)",
            (path, name, kind, sha256, size_bytes, pages),
        )
        return int(cursor.lastrowid)

    def delete_document(self, document_id: int) -> tuple[list[int], list[int]]:
        """Delete a document; return the ids of its chunks and images (for the vector indexes)."""
        chunk_ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
        image_ids = [r[0] for r in self.conn.execute("SELECT id FROM images WHERE document_id = ?", (document_id,))]
        self.conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        return chunk_ids, image_ids

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
    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk],
                   vectors: np.ndarray) -> list[int]:
        ids = []
        for offset, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
            cursor = self.conn.execute(
                "INSERT INTO chunks (document_id, ordinal, page, heading, text, ocr, vector) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (document_id, first_ordinal + offset, chunk.page, chunk.heading, chunk.text, int(chunk.ocr),
                 np.asarray(vector, np.float32).tobytes()),
            )
            ids.append(int(cursor.lastrowid))
        return ids

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

    def iter_chunk_texts(self) -> Iterator[tuple[int, str | None, str]]:
        """(id, heading, text) of every chunk, in id order."""
        yield from self.conn.execute("SELECT id, heading, text FROM chunks ORDER BY id")

    def iter_chunk_vectors(self, dim: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from _iter_vectors(self.conn.execute("SELECT id, vector FROM chunks ORDER BY id"), dim, batch)

    # --- images -------------------------------------------------------------------------------
    def add_image(self, document_id: int, page: int, name: str, sha256: str, file: str,
                  vector: np.ndarray | None) -> int:
        blob = None if vector is None else np.asarray(vector, np.float32).tobytes()
        cursor = self.conn.execute(
            "INSERT INTO images (document_id, page, name, sha256, file, vector) VALUES (?, ?, ?, ?, ?, ?)",
            (document_id, page, name, sha256, file, blob),
        )
        return int(cursor.lastrowid)

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        blob = np.asarray(vector, np.float32).tobytes()
        self.conn.execute("UPDATE images SET vector = ? WHERE id = ?", (blob, image_id))

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

    def images_of_pages(self, document_id: int, pages: Iterable[int]) -> list[ImageRecord]:
        pages = list(pages)
        marks = ",".join("?" * len(pages))
        rows = self.conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN documents d ON d.id = i.document_id "
            f"WHERE i.document_id = ? AND i.page IN ({marks}) ORDER BY i.id",
            (document_id, *pages),
        )
        return [ImageRecord(*row[:6], embedded=bool(row[6])) for row in rows]

    def image_files_in_use(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT DISTINCT file FROM images")}

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
