"""A knowledge base on disk: the SQLite catalog, the FAISS indexes for text and images, stored images.

Layout of the folder:
    catalog.sqlite3          documents, chunks, images and every vector (the source of truth)
    text-<generation>.faiss  chunk vectors, a cache of the catalog's
    image-<generation>.faiss image vectors, likewise
    images/<sha256>.<ext>    a copy of every image, so images can be embedded later and shown

Every write is one SQLite transaction that bumps the catalog's generation number. The indexes are saved
under that number by flush() (after a batch of writes); an index whose number is not the catalog's is
rebuilt from the catalog on open. So a process killed at any point leaves a store that opens consistent, with every
document either fully present or absent.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag.catalog import Catalog
from rag.errors import Conflict, LoupeError, NotFound
from rag.records import ChunkRecord, DocumentInfo, ImageRecord, ModelId, NewChunk
from rag.vector_index import VectorIndex

CATALOG_FILE = "catalog.sqlite3"
IMAGES_DIR = "images"


class StoreError(LoupeError):
    """A knowledge-base problem the user must act on; the message says what to do."""


class ModelMismatch(StoreError, Conflict):
    """The store was built with another model; its vectors cannot be mixed with this one's."""


class DocumentNotFound(StoreError, NotFound):
    """No document with that id, path or name."""


class KnowledgeBase:
    def __init__(self, folder: Path, text_model: ModelId, image_model: ModelId | None = None,
                 use_gpu: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / IMAGES_DIR).mkdir(exist_ok=True)
        self.text_model = text_model
        self.image_model = image_model
        self._use_gpu = use_gpu
        self._lock = threading.RLock()  # guards the reader connection and the in-memory indexes
        self._write_lock = threading.Lock()  # one writer at a time; readers go on meanwhile (WAL)
        self._reader = Catalog.open(self.folder / CATALOG_FILE)
        self._writer = Catalog.open(self.folder / CATALOG_FILE)
        self._check_models()
        self._generation = -1
        self._dirty = False  # in-memory indexes ahead of the saved files
        self.text_index = VectorIndex(text_model.dim, use_gpu)
        self.image_index: VectorIndex | None = None
        self._sync()
        self._remove_orphan_files()

    @classmethod
    def open_existing(cls, folder: Path, text_model: str, use_gpu: bool = True) -> KnowledgeBase:
        """Open a store that must already exist, without loading any model: enough to list and delete."""
        catalog = Catalog.open(require_store(folder))
        try:
            dim = int(catalog.get_meta("text_dim") or 0)
        finally:
            catalog.close()
        return cls(folder, ModelId(text_model, dim), use_gpu=use_gpu)

    # --- models -------------------------------------------------------------------------------
    def _check_models(self) -> None:
        with self._write_lock:
            self._writer.conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_model("text", self.text_model)
                if self.image_model is not None:
                    self._check_model("image", self.image_model)
                self._writer.conn.execute("COMMIT")
            except BaseException:
                self._writer.conn.execute("ROLLBACK")
                raise

    def _check_model(self, role: str, model: ModelId) -> None:
        name, dim = self._writer.get_meta(f"{role}_model"), self._writer.get_meta(f"{role}_dim")
        if name is None:
            self._writer.set_meta(f"{role}_model", model.name)
            self._writer.set_meta(f"{role}_dim", str(model.dim))
        elif name != model.name or int(dim or 0) != model.dim:
            raise ModelMismatch(
                f"{self.folder.name}: this knowledge base was built with the {role} model '{name}' ({dim}-d), "
                f"but Loupe is set to use '{model.name}' ({model.dim}-d). Vectors from different models "
                f"cannot be mixed: set the {role} model back to '{name}', or use another --store folder."
            )

    # --- index maintenance --------------------------------------------------------------------
    @property
    def generation(self) -> int:
        with self._lock:
            self._sync()
            return self._generation

    def _sync(self) -> None:
        """Bring the in-memory indexes up to the catalog's generation (another process may have written)."""
        with self._lock:
            generation = self._reader.generation()
            if generation == self._generation:
                return
            self._dirty = False  # reloaded from the catalog: whatever was unsaved is in there
            self.text_index = self._load_or_rebuild("text", self.text_model.dim, generation,
                                                    self._reader.iter_chunk_vectors)
            image_dim = self._reader.get_meta("image_dim")
            self.image_index = None if image_dim is None else self._load_or_rebuild(
                "image", int(image_dim), generation, self._reader.iter_image_vectors)
            self._generation = generation

    def _index_path(self, role: str, generation: int) -> Path:
        return self.folder / f"{role}-{generation}.faiss"

    def _load_or_rebuild(self, role: str, dim: int, generation: int, source) -> VectorIndex:
        path = self._index_path(role, generation)
        if path.exists():
            try:
                return VectorIndex.load(path, dim, self._use_gpu)
            except Exception:  # a damaged cache file: the catalog still has every vector
                pass
        index = VectorIndex(dim, self._use_gpu)
        for ids, vectors in source(dim):
            index.add(ids, vectors)
        self._save_index(index, role, generation)
        return index

    def _save_index(self, index: VectorIndex, role: str, generation: int) -> None:
        index.save(self._index_path(role, generation))
        for old in self.folder.glob(f"{role}-*.faiss"):
            if old.name != f"{role}-{generation}.faiss":
                old.unlink(missing_ok=True)

    def _remove_orphan_files(self) -> None:
        """Image files written by an ingest that died before its commit."""
        with self._lock:
            in_use = self._reader.image_files_in_use()
        for path in (self.folder / IMAGES_DIR).iterdir():
            if path.name not in in_use:
                path.unlink(missing_ok=True)

    # --- reads --------------------------------------------------------------------------------
    def documents(self) -> list[DocumentInfo]:
        with self._lock:
            return list(self._reader.documents())

    def document_by_sha(self, sha256: str) -> DocumentInfo | None:
        with self._lock:
            return self._reader.document_by_sha(sha256)

    def documents_by_path(self, path: str) -> list[DocumentInfo]:
        with self._lock:
            return self._reader.documents_by_path(path)

    def resolve(self, reference: str) -> DocumentInfo:
        """A document by id, by path, or by file name when that name is unique."""
        documents = self.documents()
        if reference.isdigit():
            matches = [d for d in documents if d.id == int(reference)]
        else:
            absolute = str(Path(reference).expanduser().resolve())
            matches = [d for d in documents if d.path == absolute] or [d for d in documents if d.name == reference]
        if not matches:
            raise DocumentNotFound(f"no document '{reference}' in {self.folder.name}")
        if len(matches) > 1:
            listed = ", ".join(f"{d.id} ({d.path})" for d in matches)
            raise StoreError(f"'{reference}' matches several documents: {listed}; give the id instead")
        return matches[0]

    def search_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[ChunkRecord, float]]:
        with self._lock:
            self._sync()
            scores, ids = self.text_index.search(query_vector, k)
            records = self._reader.chunks(int(i) for i in ids[0] if i >= 0)
        return [(records[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in records]

    def search_images(self, query_vector: np.ndarray, k: int) -> list[tuple[ImageRecord, float]]:
        with self._lock:
            self._sync()
            if self.image_index is None:
                return []
            scores, ids = self.image_index.search(query_vector, k)
            records = self._reader.images(int(i) for i in ids[0] if i >= 0)
        return [(records[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in records]

    def chunks(self, ids: list[int]) -> dict[int, ChunkRecord]:
        with self._lock:
            return self._reader.chunks(ids)

    def chunks_of_document(self, document_id: int, first: int = 0, last: int | None = None) -> list[ChunkRecord]:
        with self._lock:
            return self._reader.chunks_of_document(document_id, first, last)

    def chunk_texts(self) -> list[tuple[int, str | None, str]]:
        """(id, heading, text) of every chunk, read in one consistent snapshot."""
        with self._lock:
            return list(self._reader.iter_chunk_texts())

    def images_on_pages(self, document_id: int, pages: list[int]) -> list[ImageRecord]:
        with self._lock:
            return self._reader.images_of_pages(document_id, pages)

    def images_waiting(self) -> list[ImageRecord]:
        with self._lock:
            return self._reader.images_waiting()

    def image_path(self, image: ImageRecord) -> Path:
        return self.folder / IMAGES_DIR / image.image_path

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Writer]:
        """One transaction: everything done through the writer lands together, or nothing does."""
        with self._write_lock:
            writer = Writer(self, self._writer)
            self._writer.conn.execute("BEGIN IMMEDIATE")
            try:
                yield writer
                generation = self._writer.bump_generation()
                self._writer.conn.execute("COMMIT")
            except BaseException:
                self._writer.conn.execute("ROLLBACK")
                raise
            self._apply(writer, generation)

    def _apply(self, writer: Writer, generation: int) -> None:
        """Mirror a committed write into the in-memory indexes and save them under the new generation."""
        with self._lock:
            if self._generation != generation - 1:  # another process wrote in between: reload all
                self._sync()
                return
            self.text_index.remove(np.array(writer.removed_chunks, np.int64))
            self.text_index.add(np.array(writer.added_chunk_ids, np.int64), _stack(writer.added_chunk_vectors))
            if writer.added_image_ids or writer.removed_images:
                if self.image_index is None and self.image_model is not None:
                    self.image_index = VectorIndex(self.image_model.dim, self._use_gpu)
                if self.image_index is not None:
                    self.image_index.remove(np.array(writer.removed_images, np.int64))
                    self.image_index.add(np.array(writer.added_image_ids, np.int64),
                                         _stack(writer.added_image_vectors))
            self._generation = generation
            # Saved by flush(), not here: rewriting the whole index after every file would make a folder of
            # N files cost O(N^2). Until then the catalog is ahead of the files, which open() repairs.
            self._dirty = True
        if writer.removed_images:
            self._remove_orphan_files()

    def flush(self) -> None:
        """Save the in-memory indexes under the current generation (after a batch of writes)."""
        with self._lock:
            if not self._dirty:
                return
            self._save_index(self.text_index, "text", self._generation)
            if self.image_index is not None:
                self._save_index(self.image_index, "image", self._generation)
            self._dirty = False

    def delete(self, document_id: int) -> DocumentInfo:
        with self.write() as writer:
            info = writer.delete_document(document_id)
        self.flush()
        return info

    def close(self) -> None:
        self.flush()
        with self._lock, self._write_lock:
            self._reader.close()
            self._writer.close()


def require_store(folder: Path) -> Path:
    """The catalog of an existing knowledge base, or a StoreError that says how to make one."""
    catalog_path = Path(folder) / CATALOG_FILE
    if not catalog_path.exists():
        raise StoreError(f"no knowledge base at {folder}: run `python -m rag ingest PATH` first")
    return catalog_path


class Writer:
    """Adds and removes documents inside one KnowledgeBase.write() transaction."""

    def __init__(self, kb: KnowledgeBase, catalog: Catalog) -> None:
        self._kb = kb
        self._catalog = catalog
        self.added_chunk_ids: list[int] = []
        self.added_chunk_vectors: list[np.ndarray] = []
        self.removed_chunks: list[int] = []
        self.added_image_ids: list[int] = []
        self.added_image_vectors: list[np.ndarray] = []
        self.removed_images: list[int] = []

    def add_document(self, path: str, name: str, kind: str, sha256: str, size_bytes: int, pages: int) -> int:
        return self._catalog.add_document(path, name, kind, sha256, size_bytes, pages)

    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk], vectors: np.ndarray) -> None:
        if len(chunks) == 0:
            return
        if vectors.shape != (len(chunks), self._kb.text_model.dim):
            dim = self._kb.text_model.dim
            raise ValueError(f"expected {len(chunks)} vectors of dimension {dim}, got {vectors.shape}")
        self.added_chunk_ids += self._catalog.add_chunks(document_id, first_ordinal, chunks, vectors)
        self.added_chunk_vectors.append(np.asarray(vectors, np.float32))

    def add_image(self, document_id: int, page: int, name: str, data: bytes, vector: np.ndarray | None) -> int:
        """Keep a copy of the image (content-addressed) and record it; vector None = embed later."""
        sha = hashlib.sha256(data).hexdigest()
        file_name = f"{sha}.{_image_extension(data)}"
        target = self._kb.folder / IMAGES_DIR / file_name
        if not target.exists():
            tmp = target.with_name(file_name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        image_id = self._catalog.add_image(document_id, page, name, sha, file_name, vector)
        if vector is not None:
            self._record_image_vector(image_id, vector)
        return image_id

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        self._catalog.set_image_vector(image_id, vector)
        self._record_image_vector(image_id, vector)

    def _record_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        model = self._kb.image_model
        if model is None or vector.shape[-1] != model.dim:
            raise ValueError("image vectors need the image model the store was opened with")
        self.added_image_ids.append(image_id)
        self.added_image_vectors.append(np.asarray(vector, np.float32).reshape(1, model.dim))

    def delete_document(self, document_id: int) -> DocumentInfo:
        info = next(iter(self._catalog.documents("WHERE d.id = ?", (document_id,))), None)
        if info is None:
            raise DocumentNotFound(f"no document with id {document_id}")
        chunk_ids, image_ids = self._catalog.delete_document(document_id)
        self.removed_chunks += chunk_ids
        self.removed_images += image_ids
        return info


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _image_extension(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "bin").lower()
    except Exception:
        return "bin"
