"""A knowledge base on disk: the SQLite catalog, the FAISS indexes for text and images, stored images.

Layout of the folder:
    catalog.sqlite3          documents, chunks, images and every vector (the source of truth)
    text-<generation>.faiss  chunk vectors, a cache of the catalog's
    image-<generation>.faiss image vectors, likewise
    images/<sha256>.<ext>    a copy of every image, so images can be embedded later and shown
    staging/<pid>-<random>/  a document on its way in: its chunks, vectors and image files

Several processes may share a store (the app, and a CLI ingest beside it). Opening and reading take no
lock (SQLite's WAL). A document is parsed and embedded into its staging folder without any lock, then
committed in one short write transaction that also moves its image files into images/; so a second process
waits at most for one commit, and past the busy timeout gets a clear Busy error.

Every write is one SQLite transaction that bumps the catalog's generation number and logs which vectors it
added and removed (the catalog's change log). The indexes are caches of the catalog: an index file is a base
saved under the generation it holds, and an open loads the newest base and replays the log since. flush()
writes a new base only once the changes since the last one pass MERGE_FRACTION of the index: so adding or
deleting a document costs in proportion to that document, and saving a million-vector index (seconds) is
spread over tens of thousands of chunk changes. Another process's writes are caught up the same way. So a
process killed at any point leaves a store that opens consistent, with every document either fully present
or absent. What such a kill leaves besides (image files moved in
but not committed, its staging folder, temporary files) is removed by a later open: image files only under
the write lock, when no other process can be between moving a file in and committing it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.catalog import BUSY_TIMEOUT_S, Catalog, Changes
from rag.errors import Busy, Conflict, LoupeError, NotFound
from rag.records import ChunkRecord, DocumentInfo, ImageRecord, ModelId, NewChunk, NewDocument
from rag.vector_index import ANN_THRESHOLD, VectorIndex, scratch_owner

if TYPE_CHECKING:  # rag.store_api imports this module
    from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite3"
IMAGES_DIR = "images"
STAGING_DIR = "staging"
_INDEX_FILE = re.compile(r"(text|image)-(\d+)\.(?:faiss|removed\.npy)")
# The saved bases of every index of the catalog (the BM25 index's are folders, rag.lexical_index): the change
# log must reach back to the oldest of the newest ones.
_BASE = re.compile(r"(text|image|bm25)-(\d+)(?:\.faiss)?")
_LOG_KIND = {"text": "chunk", "image": "image"}
# A new index base is saved once the changes since the last one reach this share of the index: rarely enough
# that a million-vector store rewrites its 1.5 GB file once per ~20,000 chunk changes, often enough that an
# open replays at most that many from the catalog.
MERGE_FRACTION = 0.02
# An index this big is saved by a background thread (flush()): its file takes seconds to write (about 150 MB a
# hundred thousand 384-d vectors); a smaller one is saved at once, in milliseconds.
BACKGROUND_SAVE_VECTORS = 100_000
# Vectors added to an index at a time when it is rebuilt from the catalog: FAISS builds an HNSW graph in parallel
# over the vectors of one add, so large batches use both cores (100 MB of 384-d vectors a batch).
REBUILD_BATCH = 65_536
_STAGING_FOLDER = re.compile(r"(\d+)-[0-9a-f]+")
# Removing unreferenced image files is housekeeping: it waits this long for the write lock, and otherwise
# leaves them to a later open rather than hold up the caller.
SWEEP_WAIT_S = 1.0


class StoreError(LoupeError):
    """A knowledge-base problem the user must act on; the message says what to do."""


class ModelMismatch(StoreError, Conflict):
    """The store was built with another model; its vectors cannot be mixed with this one's."""


class DocumentNotFound(StoreError, NotFound):
    """No document with that id, path or name."""


class AmbiguousDocument(StoreError, Conflict):
    """A name that several documents share (the CLI's `delete NAME`); the message lists them for the user."""


class KnowledgeBaseMissing(StoreError, NotFound):
    """No knowledge base in the folder the CLI was pointed at."""


class DuplicateDocument(StoreError, Conflict):
    """A document with the same bytes is stored already."""

    def __init__(self, existing: DocumentInfo) -> None:
        super().__init__(f"already in the knowledge base as '{existing.name}' (id {existing.id})")
        self.existing = existing


class KnowledgeBase:
    def __init__(self, folder: Path, text_model: ModelId, image_model: ModelId | None = None,
                 use_gpu: bool = True, *, busy_timeout_s: float = BUSY_TIMEOUT_S, ann: str = "auto",
                 ann_threshold: int = ANN_THRESHOLD) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / IMAGES_DIR).mkdir(exist_ok=True)
        self.text_model = text_model
        self.image_model = image_model
        self.use_gpu = use_gpu  # False with --device cpu: FAISS then stays on the CPU even when it sees a GPU
        self._ann = {"ann": ann, "ann_threshold": ann_threshold}  # rag.vector_index: exact or approximate search
        self._lock = threading.RLock()  # guards the reader connection and the in-memory indexes
        self._write_lock = threading.Lock()  # one writer at a time; readers go on meanwhile (WAL)
        self._reader = Catalog.open(self.folder / CATALOG_FILE, busy_timeout_s)
        self._writer = Catalog.open(self.folder / CATALOG_FILE, busy_timeout_s)
        self._check_models()
        self._generation = -1
        self._pending = {"text": 0, "image": 0}  # changes in the in-memory indexes since their saved base
        self._bulk = False  # inside bulk_load(): writes leave the in-memory indexes alone
        self._saver: threading.Thread | None = None  # flush()'s background save of a big index, if one runs
        self.text_index = self._new_index(text_model.dim)
        self.image_index: VectorIndex | None = None
        self._sync()
        self._remove_leftovers()

    def _new_index(self, dim: int) -> VectorIndex:
        return VectorIndex(dim, self.use_gpu, **self._ann)

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
        """Compare the models with those the store recorded, without a lock; a write transaction only to
        record them in a store that has none yet."""
        roles = [("text", self.text_model)] + ([("image", self.image_model)] if self.image_model else [])
        # dim 0: open_existing on a store that no ingest has recorded a model in yet; nothing to record.
        missing = [(role, model) for role, model in roles
                   if model.dim and not self._recorded(self._reader, role, model)]
        if not missing:
            return
        with self._write_lock, self._writer.transaction():
            for role, model in missing:
                if not self._recorded(self._writer, role, model):  # another process may have recorded it
                    self._writer.set_meta(f"{role}_model", model.name)
                    self._writer.set_meta(f"{role}_dim", str(model.dim))

    def _recorded(self, catalog: Catalog, role: str, model: ModelId) -> bool:
        """Whether the store recorded `model` for `role`; ModelMismatch when it recorded another one."""
        name, dim = catalog.get_meta(f"{role}_model"), catalog.get_meta(f"{role}_dim")
        if name is None:
            return False
        if name != model.name or int(dim or 0) != model.dim:
            raise ModelMismatch(
                f"{self.folder.name}: this knowledge base was built with the {role} model '{name}' ({dim}-d), "
                f"but Loupe is set to use '{model.name}' ({model.dim}-d). Vectors from different models "
                f"cannot be mixed: set the {role} model back to '{name}', or use another --store folder."
            )
        return True

    # --- index maintenance --------------------------------------------------------------------
    @property
    def generation(self) -> int:
        with self._lock:
            self._sync()
            return self._generation

    def _sync(self, rebuild_text: bool = False) -> None:
        """Bring the in-memory indexes up to the catalog's generation (another process may have written): by
        replaying the change log since this process's generation, else from the newest saved bases. Not inside
        bulk_load(), which catches up once at its end, rebuilding the text index from the catalog."""
        with self._lock:
            if self._bulk or (self._reader.generation() == self._generation and not rebuild_text):
                return
            with self._reader.snapshot():  # the generation and the vectors read under it agree
                generation = self._reader.generation()
                image_dim = self._reader.get_meta("image_dim")
                if rebuild_text:
                    self.text_index = self._rebuild("text", self.text_model.dim, generation)
                if not (self._generation >= 0 and self._catch_up(image_dim, text_too=not rebuild_text)):
                    if not rebuild_text:
                        self.text_index = self._load_base("text", self.text_model.dim, generation)
                    self.image_index = None if image_dim is None else self._load_base("image", int(image_dim),
                                                                                      generation)
            self._generation = generation

    def _catch_up(self, image_dim: str | None, text_too: bool = True) -> bool:
        """Replay the writes since this process's generation (the text index's only when `text_too`); False when the
        log no longer reaches back."""
        text = self._reader.changes_since(self._generation, "chunk")
        image = self._reader.changes_since(self._generation, "image")
        if text is None or image is None:
            return False
        if text_too:
            self._replay("text", self.text_index, text)
        if image_dim is not None:
            if self.image_index is None:  # the store's first image model: no image had a vector before
                self.image_index = self._new_index(int(image_dim))
            self._replay("image", self.image_index, image)
        return True

    def _replay(self, role: str, index: VectorIndex, changes: Changes) -> None:
        vectors = self._stored_vectors(role, changes.added, index.dim)
        added = [i for i in changes.added if i in vectors]
        index.remove(np.array(changes.removed, np.int64))
        index.add(np.array(added, np.int64), np.stack([vectors[i] for i in added]) if added else np.zeros((0, 1)))
        self._pending[role] += len(changes.removed) + len(added)

    def _stored_vectors(self, role: str, ids: list[int], dim: int) -> dict[int, np.ndarray]:
        if role == "text":
            return self._reader.chunk_vectors(ids, dim)
        return self._reader.image_vectors(ids, dim)

    def _index_path(self, role: str, generation: int) -> Path:
        return self.folder / f"{role}-{generation}.faiss"

    def _load_base(self, role: str, dim: int, generation: int) -> VectorIndex:
        """The newest saved base of `role` not newer than `generation`, with the changes since replayed; rebuilt
        from the catalog (and saved) when there is none, it is damaged, or the log does not reach back to it."""
        bases = sorted((int(m.group(2)) for p in self.folder.glob(f"{role}-*.faiss")
                        if (m := _INDEX_FILE.fullmatch(p.name)) and int(m.group(2)) <= generation), reverse=True)
        if bases:
            base = bases[0]
            changes = self._reader.changes_since(base, _LOG_KIND[role])
            path = self._index_path(role, base)
            if changes is not None:
                try:
                    index = VectorIndex.load(path, dim, self.use_gpu, **self._ann)
                except Exception:  # a damaged cache file: the catalog still has every vector
                    logger.warning("%s: cannot read %s; rebuilding from the catalog", self.folder.name, path.name,
                                   exc_info=True)
                else:
                    self._pending[role] = 0
                    self._replay(role, index, changes)
                    return index
        return self._rebuild(role, dim, generation)

    def _rebuild(self, role: str, dim: int, generation: int) -> VectorIndex:
        source: Callable[..., Iterator[tuple[np.ndarray, np.ndarray]]] = (
            self._reader.iter_chunk_vectors if role == "text" else self._reader.iter_image_vectors)
        index = self._new_index(dim)
        for ids, vectors in source(dim, batch=REBUILD_BATCH):
            index.add(ids, vectors)
        self._save_index(index, role, generation)
        return index

    def _save_index(self, index: VectorIndex, role: str, generation: int) -> None:
        self._store_base(role, index.save, generation)
        self._pending[role] = 0

    def _store_base(self, role: str, save: Callable[[Path], None], generation: int) -> None:
        """Save a base of `role` as of `generation` and remove the older ones."""
        save(self._index_path(role, generation))
        for old in self.folder.glob(f"{role}-*"):
            match = _INDEX_FILE.fullmatch(old.name)
            if match and int(match.group(2)) < generation:  # never a newer one another process just saved
                old.unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        """What killed processes left: staging folders, temporary index files, uncommitted image files."""
        for folder in _children(self.folder / STAGING_DIR):
            match = _STAGING_FOLDER.fullmatch(folder.name)
            if match and not _process_alive(int(match.group(1))):
                shutil.rmtree(folder, ignore_errors=True)
        for path in self.folder.glob("*.tmp-*"):  # index files and their tombstones (BM25's are folders)
            if not path.is_file():
                continue
            owner = scratch_owner(path)
            if owner is not None and not _process_alive(owner):
                path.unlink(missing_ok=True)
        with self._lock:
            in_use = self._reader.image_files_in_use()
        candidates = {path.name for path in _children(self.folder / IMAGES_DIR)} - in_use
        with self._write_lock:
            self._sweep_images(candidates)

    def _sweep_images(self, candidates: set[str]) -> None:
        """Delete those of `candidates` that no image refers to. Only inside a write transaction: no other
        process is then between moving an image file in and committing it, so an unreferenced file is an
        orphan. The caller holds _write_lock."""
        if not candidates:
            return
        try:
            with self._writer.transaction(busy_timeout_s=SWEEP_WAIT_S):
                for name in candidates - self._writer.image_files_in_use():
                    (self.folder / IMAGES_DIR / name).unlink(missing_ok=True)
        except Busy:
            logger.info("%s: another process is writing; %d unreferenced image files are left for later",
                        self.folder.name, len(candidates))

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
        return only_match(matches, reference, self.folder.name)

    def search_chunks(self, query_vector: np.ndarray, k: int) -> list[tuple[ChunkRecord, float]]:
        with self._lock:
            hits = self.search_chunk_ids(query_vector, k)
            records = self._reader.chunks(chunk_id for chunk_id, _ in hits)
        return [(records[chunk_id], score) for chunk_id, score in hits if chunk_id in records]

    def search_chunk_ids(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest chunks' (id, cosine), best first, without reading them (hybrid search reads only the
        chunks that the fusion keeps)."""
        with self._lock:
            self._sync()
            scores, ids = self.text_index.search(query_vector, k)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

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

    def chunk_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The vectors ingest stored for these chunks (heading + text, as indexed)."""
        with self._lock:
            return self._reader.chunk_vectors(ids, self.text_model.dim)

    def sentence_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The sentence vectors ingest stored for these chunks (rag.sentence_vectors); absent for older chunks."""
        with self._lock:
            return self._reader.sentence_vectors(ids, self.text_model.dim)

    def chunks_without_sentence_vectors(self, document_ids: Sequence[int] | None, limit: int,
                                        after_id: int = 0) -> list[tuple[int, str]]:
        """(id, text) of up to `limit` chunks without sentence vectors, of these documents (all: None), with ids above
        `after_id`, in id order (rag.store_api)."""
        query = "SELECT id, text FROM chunks WHERE sentence_vectors IS NULL AND id > ?"
        with self._lock:
            if document_ids is None:  # the primary key, from `after_id` on: a pass reads each chunk once
                return self._reader.conn.execute(query + " ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
            rows: list[tuple[int, str]] = []
            for document_id in sorted(set(document_ids)):  # one document at a time: the (document_id, ordinal) index
                rows += self._reader.conn.execute(query + " AND document_id = ? ORDER BY id LIMIT ?",
                                                  (after_id, document_id, limit)).fetchall()
        return sorted(rows)[:limit]

    def set_sentence_vectors(self, blobs: dict[int, bytes]) -> int:
        """Store packed sentence vectors where a chunk has none yet, in one short transaction (rag.store_api). No
        generation bump: no index holds them."""
        rows = [(blob, chunk_id) for chunk_id, blob in blobs.items()]
        with self._write_lock, self._writer.transaction():
            cursor = self._writer.conn.executemany("UPDATE chunks SET sentence_vectors = ? WHERE id = ? AND "
                                                   "sentence_vectors IS NULL", rows)
        return max(cursor.rowcount, 0)

    def image_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The CLIP vectors of these images, by id: those embedded (none before an image model came)."""
        with self._lock:
            image_dim = self._reader.get_meta("image_dim")
            return {} if image_dim is None else self._reader.image_vectors(ids, int(image_dim))

    def chunk_texts(self) -> list[tuple[int, str | None, str]]:
        """(id, heading, text) of every chunk, read in one consistent snapshot."""
        with self._lock, self._reader.snapshot():
            return list(self._reader.iter_chunk_texts())

    def chunk_texts_at(self) -> tuple[int, list[tuple[int, str | None, str]]]:
        """The catalog's generation and the (id, heading, text) of every chunk at that generation."""
        with self._lock, self._reader.snapshot():
            return self._reader.generation(), list(self._reader.iter_chunk_texts())

    def images_on_pages(self, document_id: int, pages: list[int] | None = None) -> list[ImageRecord]:
        """The images on those pages of a document; all of its images when `pages` is None."""
        with self._lock:
            return self._reader.images_of_pages(document_id, pages)

    def images_waiting(self) -> list[ImageRecord]:
        with self._lock:
            return self._reader.images_waiting()

    def image_path(self, image: ImageRecord) -> Path:
        return self.folder / IMAGES_DIR / image.image_path

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[StagedDocument]:
        """A private folder for one document on its way in, removed afterwards, committed or not. Named after
        this process: other processes leave it alone while the process lives, and remove it once it is dead."""
        with staging_folder(self.folder, self.text_model.dim) as staged:
            yield staged

    def commit(self, document: NewDocument, staged: StagedDocument) -> tuple[int, list[DocumentInfo]]:
        """Add a staged document in one short transaction, with the documents from the same path it replaces
        deleted in that transaction; returns (its id, the replaced documents). DuplicateDocument when the
        same bytes are stored already, perhaps by another process since the caller looked."""
        return commit_staged(self, document, staged)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Add many documents faster (a first fill, a copy, the scale benchmark): the writes inside are the usual
        ones (each its own catalog transaction with its change log, so a crash leaves whole documents), but they
        leave this process's in-memory indexes alone, and the text index is rebuilt once from the catalog at the
        end: one HNSW build in large batches instead of thousands of small inserts. Meanwhile this process's
        searches (dense and BM25) see the store as it was before the load; other processes catch up as usual."""
        with self._lock:
            self._sync()
            self._bulk = True
        try:
            yield
        finally:
            with self._lock:
                self._bulk = False
                self._sync(rebuild_text=True)
            self.prune_changes()

    @contextmanager
    def write(self) -> Iterator[Writer]:
        """One transaction: everything done through the writer lands together, or nothing does. Keep it
        short (stage first): other processes wait for it. Busy when another process's write outlasts the
        busy timeout."""
        with self._write_lock:
            writer = Writer(self, self._writer)
            with self._writer.transaction():
                try:
                    yield writer
                    generation = self._writer.generation() + 1
                    writer.log_changes(generation)
                    self._writer.bump_generation()
                except BaseException:
                    writer.remove_placed_files()  # before the rollback, while no other process can use them
                    raise
            self._apply(writer, generation)
            self._sweep_images(writer.removed_files)

    def _apply(self, writer: Writer, generation: int) -> None:
        """Mirror a committed write into the in-memory indexes and save them under the new generation."""
        with self._lock:
            if self._bulk:  # bulk_load() catches up once at its end
                return
            if self._generation != generation - 1:  # another process wrote in between: catch up from the log
                self._sync()
                return
            self.text_index.remove(np.array(writer.removed_chunks, np.int64))
            self.text_index.add(np.array(writer.added_chunk_ids, np.int64), _stack(writer.added_chunk_vectors))
            self._pending["text"] += len(writer.removed_chunks) + len(writer.added_chunk_ids)
            if writer.added_image_ids or writer.removed_images:
                if self.image_index is None and self.image_model is not None:
                    self.image_index = self._new_index(self.image_model.dim)
                if self.image_index is not None:
                    self.image_index.remove(np.array(writer.removed_images, np.int64))
                    self.image_index.add(np.array(writer.added_image_ids, np.int64),
                                         _stack(writer.added_image_vectors))
                    self._pending["image"] += len(writer.removed_images) + len(writer.added_image_ids)
            self._generation = generation
            # Saved by flush(), and only now and then: the catalog's change log holds what the files lack.

    def flush(self) -> None:
        """Save a new base of each index whose changes since its last one reach MERGE_FRACTION of it (after a
        batch of writes); an HNSW index with many tombstones is rebuilt first.

        An index of BACKGROUND_SAVE_VECTORS or more is copied in memory and written by a background thread: a
        million vectors are a 1.5 GB file, seconds of writing that would otherwise hold up the writer and every
        search. One save runs at a time; a flush meanwhile leaves its work to the next one. Crash-safe as any save:
        a base appears whole under its generation's name or not at all, and the change log covers what it lacks
        until then (prune_changes reads the bases on disk)."""
        saved, due = False, []
        with self._lock:
            if self._saver is not None and self._saver.is_alive():
                return
            for role, index in (("text", self.text_index), ("image", self.image_index)):
                if index is None or self._pending[role] <= MERGE_FRACTION * index.size:
                    continue
                if index.needs_compaction:
                    index.compact()
                if index.size >= BACKGROUND_SAVE_VECTORS:
                    due.append((role, index.frozen(), self._generation))
                    self._pending[role] = 0
                else:
                    self._save_index(index, role, self._generation)
                    saved = True
            if due:
                self._saver = threading.Thread(target=self._save_in_background, args=(due,), daemon=False,
                                               name=f"save-{self.folder.name}")
                self._saver.start()
        if saved:
            self.prune_changes()

    def _save_in_background(self, due: list[tuple[str, Callable[[Path], None], int]]) -> None:
        try:
            for role, save, generation in due:
                self._store_base(role, save, generation)
            self.prune_changes()
        except Exception:  # the next flush saves again; until then the change log covers the indexes
            logger.exception("%s: saving an index base in the background failed", self.folder.name)

    def wait_for_saves(self) -> None:
        """Until the background save that flush() may have started is written."""
        saver = self._saver
        if saver is not None:
            saver.join()

    def prune_changes(self) -> None:
        """Drop the change log below the oldest of the newest saved bases (vector and BM25): nothing replays
        from there any more. Housekeeping: skipped when another process is writing."""
        newest: dict[str, int] = {}
        for path in _children(self.folder):
            match = _BASE.fullmatch(path.name)
            if match:
                newest[match.group(1)] = max(newest.get(match.group(1), -1), int(match.group(2)))
        # Not waiting for this process's own writer either: a search inside a write() block may get here.
        if "text" not in newest or not self._write_lock.acquire(blocking=False):
            return
        try:
            with self._writer.transaction(busy_timeout_s=SWEEP_WAIT_S):
                self._writer.prune_changes(min(newest.values()))
        except Busy:
            logger.info("%s: another process is writing; the change log is pruned later", self.folder.name)
        finally:
            self._write_lock.release()

    def chunk_changes(self, since: int) -> tuple[int, Changes, list[tuple[int, str | None, str]]] | None:
        """For an index of the chunks' texts (BM25) saved at generation `since`: the current generation, the net
        change since, and the (id, heading, text) of the chunks added; None when the log no longer reaches back."""
        with self._lock, self._reader.snapshot():
            changes = self._reader.changes_since(since, "chunk")
            if changes is None:
                return None
            return self._reader.generation(), changes, self._reader.chunk_texts(changes.added)

    def delete(self, document_id: int) -> DocumentInfo:
        with self.write() as writer:
            info = writer.delete_document(document_id)
        self.flush()
        return info

    def close(self) -> None:
        self.wait_for_saves()
        self.flush()
        self.wait_for_saves()
        with self._write_lock, self._lock:  # the order write() takes them in
            self._reader.close()
            self._writer.close()


@contextmanager
def staging_folder(store_folder: Path, text_dim: int) -> Iterator[StagedDocument]:
    """Every store's staging: a folder under store_folder/staging named after this process (other processes
    leave it alone while the process lives, and remove it once it is dead), removed afterwards, committed or not."""
    folder = store_folder / STAGING_DIR / f"{os.getpid()}-{secrets.token_hex(8)}"
    folder.mkdir(parents=True)
    try:
        yield StagedDocument(folder, text_dim)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def only_match(matches: list[DocumentInfo], reference: str, where: str) -> DocumentInfo:
    """The one document a reference (an id, a path or a file name) matched in knowledge base `where`;
    DocumentNotFound for none, AmbiguousDocument for several."""
    if not matches:
        raise DocumentNotFound(f"no document '{reference}' in {where}")
    if len(matches) > 1:
        listed = ", ".join(f"{d.id} ({d.path})" for d in matches)
        raise AmbiguousDocument(f"'{reference}' matches several documents: {listed}; give the id instead")
    return matches[0]


def commit_staged(kb: KnowledgeBase | KnowledgeBaseStore, document: NewDocument,
                  staged: StagedDocument) -> tuple[int, list[DocumentInfo]]:
    """Every store's commit: in one write transaction, refuse the same bytes stored already (DuplicateDocument),
    delete the documents from the same path that this one replaces, and add it with its staged chunks and images;
    returns (its id, the replaced documents)."""
    with kb.write() as writer:
        existing = writer.document_by_sha(document.sha256)
        if existing is not None:
            raise DuplicateDocument(existing)
        replaced = [writer.delete_document(d.id) for d in writer.documents_by_path(document.path)]
        document_id = writer.add_document(document)
        writer.add_staged(document_id, staged)
    return document_id, replaced


def require_store(folder: Path) -> Path:
    """The catalog of an existing knowledge base, or an error that says how to make one. For the CLI, whose
    user named the folder: the message holds its path (no network surface calls this)."""
    catalog_path = Path(folder) / CATALOG_FILE
    if not catalog_path.exists():
        raise KnowledgeBaseMissing(f"no knowledge base at {folder}: run `python -m rag ingest PATH` first")
    return catalog_path


@dataclass(frozen=True)
class _StagedImage:
    page: int
    name: str
    sha256: str
    file_name: str  # in the staging folder now, in images/ once committed
    vector: np.ndarray | None


class StagedDocument:
    """A document's chunks, vectors and image files, on disk in its staging folder until one short
    transaction commits them (KnowledgeBase.commit). Filled while parsing and embedding, without any lock.
    Chunks go to disk a batch at a time, so a 1,000-page PDF does not sit in memory."""

    def __init__(self, folder: Path, text_dim: int) -> None:
        self.folder = folder
        self._text_dim = text_dim
        self._batches = 0
        self.chunk_count = 0
        self.images: list[_StagedImage] = []

    @property
    def empty(self) -> bool:
        return self.chunk_count == 0 and not self.images

    def add_chunks(self, chunks: list[NewChunk], vectors: np.ndarray,
                   sentence_vectors: Sequence[np.ndarray] | None = None) -> None:
        """Stage a batch of chunks with their vectors and, optionally, each chunk's sentence vectors."""
        if not chunks:
            return
        vectors = _checked_vectors(chunks, vectors, self._text_dim)
        stem = self.folder / f"chunks-{self._batches:06d}"
        counts = [-1] * len(chunks) if sentence_vectors is None else [len(m) for m in sentence_vectors]
        rows = [[c.page, c.heading, c.text, c.ocr, count] for c, count in zip(chunks, counts, strict=True)]
        stem.with_suffix(".json").write_text(json.dumps(rows), encoding="utf-8")
        np.save(stem.with_suffix(".npy"), vectors)
        if sentence_vectors is not None:
            flat = np.concatenate([np.asarray(m, np.float32).reshape(-1, self._text_dim) for m in sentence_vectors])
            np.save(self.folder / f"{stem.name}-sentences.npy", flat)
        self._batches += 1
        self.chunk_count += len(chunks)

    def chunk_batches(self) -> Iterator[tuple[list[NewChunk], np.ndarray, list[np.ndarray | None]]]:
        """The staged chunks, their vectors and their sentence vectors, read back one batch at a time."""
        for number in range(self._batches):
            stem = self.folder / f"chunks-{number:06d}"
            rows = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
            chunks = [NewChunk(page, text, heading, bool(ocr)) for page, heading, text, ocr, _ in rows]
            counts = [row[4] for row in rows]
            yield chunks, np.load(stem.with_suffix(".npy"), allow_pickle=False), self._sentences(stem, counts)

    def _sentences(self, stem: Path, counts: list[int]) -> list[np.ndarray | None]:
        if counts and counts[0] < 0:
            return [None] * len(counts)
        flat = np.load(self.folder / f"{stem.name}-sentences.npy", allow_pickle=False)
        bounds = np.cumsum([0, *counts])
        return [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def add_image(self, page: int, name: str, data: bytes, vector: np.ndarray | None) -> None:
        """Keep a copy of an image (named by its content); vector None = embed later."""
        sha = hashlib.sha256(data).hexdigest()
        file_name = f"{sha}.{_image_extension(data)}"
        path = self.folder / file_name
        if not path.exists():  # the same picture twice in a document is stored once
            path.write_bytes(data)
        self.images.append(_StagedImage(page, name, sha, file_name, vector))


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
        self.removed_files: set[str] = set()  # image files that may now be unreferenced
        self._placed: list[Path] = []  # image files this transaction moved into images/

    def document_by_sha(self, sha256: str) -> DocumentInfo | None:
        return self._catalog.document_by_sha(sha256)

    def documents_by_path(self, path: str) -> list[DocumentInfo]:
        return self._catalog.documents_by_path(path)

    def add_document(self, document: NewDocument) -> int:
        return self._catalog.add_document(document)

    def add_chunks(self, document_id: int, first_ordinal: int, chunks: list[NewChunk], vectors: np.ndarray,
                   sentence_vectors: Sequence[np.ndarray | None] | None = None) -> None:
        if len(chunks) == 0:
            return
        vectors = _checked_vectors(chunks, vectors, self._kb.text_model.dim)
        self.added_chunk_ids += self._catalog.add_chunks(document_id, first_ordinal, chunks, vectors,
                                                         sentence_vectors)
        self.added_chunk_vectors.append(vectors)

    def add_staged(self, document_id: int, staged: StagedDocument) -> None:
        """Record a staged document's chunks and images, moving its image files into images/."""
        ordinal = 0
        for chunks, vectors, sentence_vectors in staged.chunk_batches():
            self.add_chunks(document_id, ordinal, chunks, vectors, sentence_vectors)
            ordinal += len(chunks)
        for image in staged.images:
            self._place(staged.folder / image.file_name, image.file_name)
            image_id = self._catalog.add_image(document_id, image.page, image.name, image.sha256, image.file_name,
                                               image.vector)
            if image.vector is not None:
                self._record_image_vector(image_id, image.vector)

    def _place(self, source: Path, file_name: str) -> None:
        """Move a staged image file into images/ unless that content is there already. Inside the write
        transaction: no sweep can run meanwhile, so a file found there stays until this commit refers to it."""
        target = self._kb.folder / IMAGES_DIR / file_name
        if not target.exists():
            os.replace(source, target)
            self._placed.append(target)

    def remove_placed_files(self) -> None:
        """Undo _place for a transaction that is about to roll back."""
        for path in self._placed:
            path.unlink(missing_ok=True)
        self._placed.clear()

    def set_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        if self._catalog.set_image_vector(image_id, vector):  # else deleted meanwhile, maybe by another process
            self._record_image_vector(image_id, vector)

    def _record_image_vector(self, image_id: int, vector: np.ndarray) -> None:
        model = self._kb.image_model
        if model is None or vector.shape[-1] != model.dim:
            raise ValueError("image vectors need the image model the store was opened with")
        self.added_image_ids.append(image_id)
        self.added_image_vectors.append(np.asarray(vector, np.float32).reshape(1, model.dim))

    def log_changes(self, generation: int) -> None:
        """Record this transaction's vector changes in the catalog's change log, as `generation`."""
        for kind, removed, added in (("chunk", self.removed_chunks, self.added_chunk_ids),
                                     ("image", self.removed_images, self.added_image_ids)):
            self._catalog.log_changes(generation, kind, removed, added=False)
            self._catalog.log_changes(generation, kind, added, added=True)

    def delete_document(self, document_id: int) -> DocumentInfo:
        info = next(iter(self._catalog.documents("WHERE d.id = ?", (document_id,))), None)
        if info is None:
            raise DocumentNotFound(f"no document with id {document_id}")
        removed = self._catalog.delete_document(document_id)
        self.removed_chunks += removed.chunk_ids
        self.removed_images += removed.image_ids
        self.removed_files |= removed.image_files
        return info


def _checked_vectors(chunks: list[NewChunk], vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape != (len(chunks), dim):
        raise ValueError(f"expected {len(chunks)} vectors of dimension {dim}, got {vectors.shape}")
    return vectors


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts too)."""
    if os.name == "nt":  # there os.kill(pid, 0) would end the process: count it alive, leave its files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and another user's
        pass
    return True


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _image_extension(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "bin").lower()
    except (OSError, ValueError, Image.DecompressionBombError):  # not an image PIL knows: stored as it is
        return "bin"
