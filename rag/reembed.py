"""`python -m rag reembed`: give an existing knowledge base new text vectors (another model, backend or PCA size).

How it stays crash-safe, without touching the store's internals:
1. Build. A complete new knowledge base is built beside the old one, in `.<name>.reembed-<pid>` in the same parent
   folder: a copy of the old catalog (SQLite's backup), so every document, chunk and image keeps its id (citation
   links, conversations' sources and the eval's id map name them), with each chunk's vector replaced in batches,
   then its sentence vectors filled through the new store's own methods (rag.sentence_vectors.fill_missing) and its
   indexes built. Image vectors and files stay (the image model does not change; files are hard-linked). The old
   knowledge base is only read meanwhile and keeps serving questions.
2. Catch up. Documents added or deleted in the old one meanwhile (by the app, by an ingest) are copied into the new
   one under their ids, or deleted from it, until the old one's generation stands still.
3. Swap. Under an exclusive lock on the old catalog (which also proves that no other connection, in any process,
   has it open: SQLite refuses to leave WAL mode otherwise, and then this waits or fails with Busy), the two folders
   are exchanged in one atomic rename (Linux renameat2 RENAME_EXCHANGE), so the store's path holds a complete
   knowledge base at every instant: the old one until the exchange, the new one after. The old one, now under the
   build name, is then deleted.
A kill at any point leaves the old knowledge base (steps 1-3) or the new one (after the exchange) in place, and a
build folder that the next reembed removes. Where the atomic exchange is missing (macOS, Windows), two renames are
used, with a marker file that `recover_interrupted` reads to finish or undo the swap.

Another process with the store open: a CLI reembed refuses to start while one has it open, and the swap waits for
it to close; so no process ever reads the new folder's files through an old connection. In the app, call reembed
with `release`, which must close this process's own KnowledgeBase of the folder: it is called right before the swap,
after the build, so the app's questions use the old vectors until then. The window between the lock check and the
exchange is milliseconds; a process opening the store just then would be left on the old copy (the report to the
lead describes the store hook that closes it).

With --embed-dims N and the same model as the store's, the stored full vectors are projected (no model runs). With
another model, the store is first rebuilt with that model's full vectors, and PCA fitted on those (rag.pca).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.catalog import BUSY_TIMEOUT_S, Catalog, is_busy
from rag.embedder import Embedder, build_embedder, recorded_model_name
from rag.errors import Busy, LoupeError
from rag.finetune import Progress, _ProgressBar, _Timer
from rag.pca import ProjectedEmbedder, Projection
from rag.records import DocumentInfo, ModelId, indexed_text
from rag.sentence_vectors import fill_missing, pack
from rag.settings import Settings
from rag.store import CATALOG_FILE, IMAGES_DIR, KnowledgeBase, _process_alive, require_store
from rag.store_api import is_database_url, lexical_index

logger = logging.getLogger(__name__)

BATCH_CHUNKS = 256  # chunks embedded together (as ingest's CHUNK_BATCH): bounds memory, keeps the model busy
BUILD_INFIX = ".reembed-"
COMPLETE_MARKER = ".reembed-complete"  # in a build folder: the build is whole and may replace the store
SWAP_ATTEMPTS = 5  # catch-up rounds before giving up on a store that never stops changing
RENAME_EXCHANGE = 2  # linux/fs.h
# What a store folder holds of its own (rag.store, rag.lexical_index, rag.pca) or derives from its vectors (the
# explore view's cache): rebuilt in the new store, never carried over from the old one.
_OWN_ENTRIES = re.compile(r"catalog\.sqlite3.*|(text|image)-\d+\.faiss.*|bm25-\d+.*|staging|images|explore|pca\.npz.*"
                          r"|\.reembed-complete")


class ReembedError(LoupeError):
    """Nothing to re-embed, or a target the store cannot take; the message says why."""


@dataclass
class ReembedReport:
    store: str  # the knowledge base's folder name (never its path: the app shows this)
    old_model: str
    new_model: str
    dims: int
    documents: int = 0
    chunks: int = 0
    sentences: int = 0  # chunks whose sentences the pass embedded (the others' were projected)
    images: int = 0
    reused_vectors: bool = False  # PCA of the same model: the stored vectors were projected, no model ran
    explained_variance: float | None = None
    caught_up: int = 0  # documents added or deleted in the old store while the new one was built
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# --- the whole job ------------------------------------------------------------------------------------------------
def reembed(folder: Path, settings: Settings, progress: Progress | None = None, *,
            embedder: Embedder | None = None, release: Callable[[], None] | None = None,
            on_phase: Callable[[str], None] | None = None) -> ReembedReport:
    """Re-embed every chunk of the knowledge base at `folder` with the embedder `settings` describe (embedder,
    text_model, embed_dims), then swap it in. `embedder`: that embedder at full dimensions, when the caller has it
    loaded already. `release` closes the caller's own KnowledgeBase of this folder (the app's), right before the
    swap; without it, reembed refuses to start while any connection to the store is open. `progress(done, total,
    seconds_left)` hears the chunks done; `on_phase` the name of each phase (embed, fit PCA, project, swap)."""
    if is_database_url(folder):
        raise ReembedError("reembed swaps a knowledge base's folder; a PostgreSQL knowledge base has none: ingest the "
                           "documents into a new one with the new embedder instead")
    folder = Path(folder)
    recover_interrupted(folder)
    require_store(folder)
    announce = on_phase or (lambda phase: logger.info("reembed %s: %s", folder.name, phase))
    start = time.perf_counter()
    _remove_dead_builds(folder)
    if release is None:  # fail fast, before minutes of embedding: the swap would wait for that process anyway
        _exclusive(folder, 0.0, "re-embed it").close()
    full_settings = settings.with_(embed_dims=0)
    loader = _Loader(full_settings, embedder)
    with _ReadOnly(folder) as old:
        report = ReembedReport(folder.name, old.text_model.name, "", settings.embed_dims)
        if not old.documents():
            raise ReembedError(f"the knowledge base '{folder.name}' has no documents: there is nothing to re-embed")
        if not settings.embed_dims and old.text_model.name == recorded_model_name(full_settings):
            raise ReembedError(f"the knowledge base '{folder.name}' is embedded with {old.text_model.name} already: "
                               "choose another model, backend or a number of dimensions")
        reuse = bool(settings.embed_dims) and old.text_model.name == recorded_model_name(full_settings)
    build = _build_folder(folder)
    if not settings.embed_dims:
        announce("embed")
        vectors: _VectorSource = _Embedding(loader(), settings)
        _build(folder, build, vectors, settings, report, progress)
    else:
        source = folder if reuse else _build_folder(folder, "full")
        if not reuse:  # PCA is fitted on this model's own full vectors: build a store of those first
            announce("embed")
            _build(folder, source, _Embedding(loader(), settings), settings, ReembedReport("", "", "", 0), progress)
        announce("fit PCA")
        with _ReadOnly(source) as full:
            projection = Projection.fit(full.all_chunk_vectors(), settings.embed_dims, full.text_model.name)
            stored_model = full.text_model
        report.reused_vectors, report.explained_variance = reuse, projection.explained_variance
        announce("project")
        _build(source, build, _Projected(source, stored_model, projection, loader, settings), settings, report,
               progress)
        projection.save(build)
        if not reuse:
            shutil.rmtree(source, ignore_errors=True)
        # Documents that arrive during the build: their full vectors exist only in the old store when it holds this
        # model's; else they are embedded and projected like a query
        vectors = (_Projected(folder, stored_model, projection, loader, settings) if reuse
                   else _Embedding(ProjectedEmbedder(loader(), projection), settings))
    (build / COMPLETE_MARKER).write_text(json.dumps({"model": vectors.model_id.name}))
    report.new_model = vectors.model_id.name
    announce("swap")
    report.caught_up = _catch_up_and_swap(folder, build, vectors, settings, report, release)
    report.seconds["total"] = round(time.perf_counter() - start, 1)
    return report


class _Loader:
    """The target embedder at full dimensions, loaded once and only when a model must run."""

    def __init__(self, settings: Settings, embedder: Embedder | None) -> None:
        self.settings, self.embedder = settings, embedder

    def __call__(self) -> Embedder:
        if self.embedder is None:
            from rag.devices import torch_device

            self.embedder = build_embedder(self.settings, torch_device(self.settings.device))
        return self.embedder


# --- reading the old store ---------------------------------------------------------------------------------------
class _ReadOnly:
    """The old knowledge base's catalog, read without loading any model or index."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.catalog = Catalog.open(require_store(folder))
        self.text_model = self._model("text") or ModelId("", 0)
        self.image_model = self._model("image")

    def _model(self, role: str) -> ModelId | None:
        name = self.catalog.get_meta(f"{role}_model")
        return None if name is None else ModelId(name, int(self.catalog.get_meta(f"{role}_dim") or 0))

    def __enter__(self) -> _ReadOnly:
        return self

    def __exit__(self, *_: object) -> None:
        self.catalog.close()

    def generation(self) -> int:
        return self.catalog.generation()

    def documents(self) -> list[DocumentInfo]:
        return list(self.catalog.documents())

    def all_chunk_vectors(self) -> np.ndarray:
        parts = [vectors for _, vectors in self.catalog.iter_chunk_vectors(self.text_model.dim)]
        return np.concatenate(parts) if parts else np.zeros((0, self.text_model.dim), np.float32)

    def chunk_vectors(self, ids: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The stored vectors of these chunks, in order, and the sentence vectors of those that have them."""
        stored = self.catalog.chunk_vectors(ids, self.text_model.dim)
        return np.stack([stored[i] for i in ids]), self.catalog.sentence_vectors(ids, self.text_model.dim)


# --- where the new vectors come from -------------------------------------------------------------------------------
class _VectorSource:
    model_id: ModelId

    def vectors(self, chunks: list[tuple[int, str | None, str]]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """The new vectors of these chunks (id, heading, text), one row each, and the sentence vectors of those it
        has them for (None: the sentence pass embeds them, rag.sentence_vectors.fill_missing)."""
        raise NotImplementedError

    def sentence_embedder(self) -> Embedder:
        """The embedder whose vectors the new store takes, for the sentences the pass embeds."""
        raise NotImplementedError


class _Embedding(_VectorSource):
    """Run the embedder on the texts, as ingest does; their sentences are embedded by the pass that follows."""

    def __init__(self, embedder: Embedder, settings: Settings) -> None:
        self.embedder, self.batch_size, self.model_id = embedder, settings.embed_batch_size, embedder.model_id

    def vectors(self, chunks: list[tuple[int, str | None, str]]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        vectors = self.embedder.embed([indexed_text(heading, text) for _, heading, text in chunks], self.batch_size)
        return vectors, [None] * len(chunks)

    def sentence_embedder(self) -> Embedder:
        return self.embedder


class _Projected(_VectorSource):
    """Project the full vectors a store holds already, its chunks' and their sentences'; sentences stored without
    vectors (a store made before them, a changed sentence splitter) are embedded by the pass, the model loaded only
    then."""

    def __init__(self, folder: Path, stored_model: ModelId, projection: Projection,
                 load_embedder: Callable[[], Embedder], settings: Settings) -> None:
        self.folder, self.stored_model, self.projection = folder, stored_model, projection
        self.load_embedder, self.batch_size = load_embedder, settings.embed_batch_size
        self.model_id = projection.model_id()

    def vectors(self, chunks: list[tuple[int, str | None, str]]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        ids = [chunk_id for chunk_id, _, _ in chunks]
        with _ReadOnly(self.folder) as store:
            full, sentences = store.chunk_vectors(ids)
        return self.projection.project(full), [self.projection.project(sentences[i]) if i in sentences else None
                                               for i in ids]

    def sentence_embedder(self) -> Embedder:
        return ProjectedEmbedder(self.load_embedder(), self.projection)


# --- building the new store --------------------------------------------------------------------------------------
def _build(source: Path, build: Path, vectors: _VectorSource, settings: Settings, report: ReembedReport,
           progress: Progress | None) -> None:
    """The new store at `build`: a copy of `source`'s catalog, so that every document, chunk and image keeps its id
    (citation links and conversations' sources name them), with every chunk's vectors replaced by `vectors`', its
    sentence vectors filled, and its indexes built."""
    start = time.perf_counter()
    _copy_store(source, build, vectors.model_id)
    catalog = Catalog.open(build / CATALOG_FILE)
    try:
        ids = [row[0] for row in catalog.conn.execute("SELECT id FROM chunks ORDER BY id")]
        timer = _Timer(len(ids), progress)
        for first in range(0, len(ids), BATCH_CHUNKS):
            with catalog.transaction():
                _replace_vectors(catalog, ids[first:first + BATCH_CHUNKS], vectors)
            for _ in range(min(BATCH_CHUNKS, len(ids) - first)):
                timer.tick()
        documents = list(catalog.documents())
    finally:
        catalog.close()
    report.documents += len(documents)
    report.chunks += len(ids)
    report.images += sum(d.images for d in documents)
    _finish(build, vectors, settings, report, None)
    report.seconds["build"] = round(report.seconds.get("build", 0.0) + time.perf_counter() - start, 1)


def _copy_store(source: Path, build: Path, model: ModelId) -> None:
    """A consistent copy of `source`'s catalog (SQLite's backup, while others may write), recording `model`, with
    its image files linked; its change log starts empty, as the build's indexes are made from its catalog."""
    build.mkdir(parents=True)
    reading, writing = sqlite3.connect(source / CATALOG_FILE), sqlite3.connect(build / CATALOG_FILE)
    try:
        reading.backup(writing)
    finally:
        reading.close()
        writing.close()
    catalog = Catalog.open(build / CATALOG_FILE)
    try:
        with catalog.transaction():
            catalog.set_meta("text_model", model.name)
            catalog.set_meta("text_dim", str(model.dim))
            catalog.conn.execute("DELETE FROM changes")
            catalog.set_meta("changes_from", str(catalog.generation()))
            files = [row[0] for row in catalog.conn.execute("SELECT DISTINCT file FROM images")]
    finally:
        catalog.close()
    _link_images(source, build, files)


def _replace_vectors(catalog: Catalog, ids: list[int], vectors: _VectorSource) -> None:
    """Give these chunks `vectors`' vectors, inside the caller's transaction; sentence vectors the source lacks are
    cleared (another model's would be wrong), for the sentence pass."""
    chunks = catalog.chunk_texts(ids)
    new, sentences = vectors.vectors(chunks)
    rows = [(np.asarray(vector, np.float32).tobytes(), None if matrix is None else pack(text, matrix), chunk_id)
            for (chunk_id, _, text), vector, matrix in zip(chunks, new, sentences, strict=True)]
    catalog.conn.executemany("UPDATE chunks SET vector = ?, sentence_vectors = ? WHERE id = ?", rows)


def _finish(build: Path, vectors: _VectorSource, settings: Settings, report: ReembedReport,
            document_ids: list[int] | None) -> None:
    """Fill the sentence vectors of these documents (all: None) and bring the indexes up to the catalog: FAISS's
    on opening, BM25's now, so that the first question after the swap does not wait for them."""
    with _ReadOnly(build) as built:
        image_model = built.image_model
    kb = KnowledgeBase(build, vectors.model_id, image_model, use_gpu=settings.device != "cpu")
    try:
        report.sentences += fill_missing(kb, vectors.sentence_embedder, document_ids, settings.embed_batch_size)
        lexical_index(kb).refresh()
    finally:
        kb.close()


def _link_images(source: Path, build: Path, files: list[str]) -> None:
    (build / IMAGES_DIR).mkdir(exist_ok=True)
    for name in files:
        target = build / IMAGES_DIR / name
        if target.exists():
            continue
        try:
            _link_or_copy(source / IMAGES_DIR / name, target)
        except FileNotFoundError:
            logger.warning("%s: the stored copy of image file %s is missing; it stays missing in the re-embedded "
                           "store", source.name, name)


# --- catching up and swapping --------------------------------------------------------------------------------------
def _catch_up_and_swap(folder: Path, build: Path, vectors: _VectorSource, settings: Settings, report: ReembedReport,
                       release: Callable[[], None] | None) -> int:
    """Bring the build up to the old store's documents, then swap it in; returns the documents caught up."""
    changed = 0
    for _ in range(SWAP_ATTEMPTS):
        with _ReadOnly(folder) as old:
            generation, wanted = old.generation(), {d.id for d in old.documents()}
        changed += _catch_up(folder, build, wanted, vectors, settings, report)
        if release is not None:
            release()
            release = None
        if _swap_if_unchanged(folder, build, generation):
            shutil.rmtree(build, ignore_errors=True)  # the old store, now under the build's name
            return changed
    raise Busy(f"the knowledge base '{folder.name}' kept changing while it was re-embedded; run reembed again when "
               "no ingest is running")


def _catch_up(folder: Path, build: Path, wanted: set[int], vectors: _VectorSource, settings: Settings,
              report: ReembedReport) -> int:
    """Add the documents the old store gained, and delete those it lost, since the build copied it (by id: a
    document replaced by a new version is one of each)."""
    with _ReadOnly(build) as built:
        have = {d.id for d in built.documents()}
        model, image_model = built.text_model, built.image_model
    added, gone = sorted(wanted - have), sorted(have - wanted)
    if gone:
        kb = KnowledgeBase(build, model, image_model, use_gpu=settings.device != "cpu")
        try:
            for document_id in gone:
                kb.delete(document_id)
        finally:
            kb.close()
    if added:
        _copy_documents(folder, build, added, vectors)
        _finish(build, vectors, settings, report, added)
    return len(added) + len(gone)


def _copy_documents(folder: Path, build: Path, document_ids: list[int], vectors: _VectorSource) -> None:
    """Copy these documents of the old store into the build under their own ids, with `vectors`' vectors, in one
    transaction logged as the store logs its writes (rag.catalog's change log), so the build's indexes catch up."""
    catalog = Catalog.open(build / CATALOG_FILE)
    try:
        catalog.conn.execute("ATTACH DATABASE ? AS old", (str(folder / CATALOG_FILE),))
        try:
            marks = ",".join("?" * len(document_ids))
            with catalog.transaction():
                for table, key in (("documents", "id"), ("chunks", "document_id"), ("images", "document_id")):
                    # the build is a copy of the old catalog: the same tables, with the same columns
                    catalog.conn.execute(f"INSERT INTO main.{table} SELECT * FROM old.{table} WHERE {key} IN "
                                         f"({marks})", document_ids)
                for key in ("last_chunks_id", "last_images_id"):  # ids are never reused (rag.catalog._next_ids)
                    catalog.conn.execute("INSERT OR REPLACE INTO main.meta SELECT key, value FROM old.meta WHERE "
                                         "key = ?", (key,))
                chunk_ids = [row[0] for row in catalog.conn.execute(
                    f"SELECT id FROM chunks WHERE document_id IN ({marks}) ORDER BY id", document_ids)]
                images = catalog.conn.execute(f"SELECT id, file, vector IS NOT NULL FROM images WHERE document_id IN "
                                              f"({marks})", document_ids).fetchall()
                for first in range(0, len(chunk_ids), BATCH_CHUNKS):
                    _replace_vectors(catalog, chunk_ids[first:first + BATCH_CHUNKS], vectors)
                generation = catalog.generation() + 1
                catalog.log_changes(generation, "chunk", chunk_ids, added=True)
                catalog.log_changes(generation, "image", [i for i, _, embedded in images if embedded], added=True)
                catalog.bump_generation()
        finally:
            catalog.conn.execute("DETACH DATABASE old")
    finally:
        catalog.close()
    _link_images(folder, build, sorted({file for _, file, _ in images}))


def _swap_if_unchanged(folder: Path, build: Path, generation: int) -> bool:
    """Exchange the folders while holding the old catalog exclusively, if its generation is still `generation`;
    False when the store changed meanwhile."""
    connection = _exclusive(folder, BUSY_TIMEOUT_S, "swap in the new vectors")
    try:
        if Catalog(connection, folder.name).generation() != generation:
            return False
        _carry_over(folder, build)
        exchange(build, folder)
        return True
    finally:
        connection.close()  # rolls the empty transaction back


def _exclusive(folder: Path, timeout_s: float, purpose: str) -> sqlite3.Connection:
    """A connection holding the catalog exclusively. It first takes the catalog out of WAL mode, which SQLite
    refuses while any other connection, in this process or another, has it open: that proves nobody reads the
    old files while the folder changes under them. Waits up to `timeout_s` for others to close, then Busy. (A
    catalog left out of WAL mode goes back to it at the next Catalog.open.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        connection = sqlite3.connect(str(folder / CATALOG_FILE), isolation_level=None, timeout=0)
        try:
            if connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete":
                connection.execute("BEGIN EXCLUSIVE")
                return connection
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                connection.close()
                raise
        connection.close()
        if time.monotonic() >= deadline:
            raise Busy(f"the knowledge base '{folder.name}' is open in another process (the app, or a command): "
                       f"close it to {purpose}")
        time.sleep(0.2)


def _carry_over(folder: Path, build: Path) -> None:
    """Give the new store what else the old folder holds (the app's uploaded copies, which documents' paths name,
    its marker, an eval's id map): hard links where the file system allows, copies elsewhere. What the store
    rebuilt, or derived from the old vectors, stays behind."""
    for entry in folder.iterdir():
        if _OWN_ENTRIES.fullmatch(entry.name) or (build / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, build / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, build / entry.name)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


# --- folders -------------------------------------------------------------------------------------------------------
def _build_folder(folder: Path, role: str = "new") -> Path:
    build = folder.with_name(f".{folder.name}{BUILD_INFIX}{os.getpid()}-{role}")
    shutil.rmtree(build, ignore_errors=True)
    return build


def _builds(folder: Path) -> list[tuple[Path, int]]:
    """Build folders of reembeds of this store, with the process id that made each."""
    prefix = f".{folder.name}{BUILD_INFIX}"
    found = []
    for path in folder.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit():
            found.append((path, int(pid)))
    return found


def _remove_dead_builds(folder: Path) -> None:
    """What killed reembeds left: half-built stores, or an old store swapped out but not yet deleted."""
    for path, pid in _builds(folder):
        if not _process_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def recover_interrupted(folder: Path) -> None:
    """Finish a swap that two plain renames began (platforms without an atomic exchange) when a kill came between
    them: the complete build takes the store's place. Nothing to do on Linux, whose exchange is one step."""
    folder = Path(folder)
    if folder.exists():
        return
    complete = [path for path, pid in _builds(folder) if (path / COMPLETE_MARKER).is_file()]
    if complete:
        os.rename(complete[0], folder)
        logger.warning("%s: a re-embedding was interrupted while it swapped folders; its new store is now in place",
                       folder.name)


def exchange(a: Path, b: Path) -> None:
    """Swap two folders: atomically where the system can (Linux), else by two renames."""
    if not _exchange_atomically(a, b):
        _exchange_by_renames(a, b)
    (b / COMPLETE_MARKER).unlink(missing_ok=True)


def _exchange_atomically(a: Path, b: Path) -> bool:
    """One renameat2(RENAME_EXCHANGE): at every instant each path holds one of the two folders. False where the
    system or the file system has no such call."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is None:
        return False
    at_cwd = -100  # AT_FDCWD: the paths are taken as they are
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this file system cannot
        return False
    raise OSError(error, f"cannot swap the knowledge base '{b.name}' with its re-embedded copy")


def _exchange_by_renames(a: Path, b: Path) -> None:
    """`b` aside, `a` into its place, the old `b` to `a`'s name. Between the first two renames `b` is missing: a
    kill there is repaired by recover_interrupted, which finds `a` complete (COMPLETE_MARKER)."""
    retired = a.with_name(f"{a.name}-retired")
    os.rename(b, retired)
    os.rename(a, b)
    os.rename(retired, a)


# --- the command ---------------------------------------------------------------------------------------------------
def add_reembed_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "reembed", parents=[common], help="re-embed every chunk with another text model, backend or PCA size",
        description="Re-embed every chunk (and its sentences) of the knowledge base with the embedder that "
                    "--embedder, --text-model and --embed-dims describe. The new knowledge base is built beside the "
                    "old one, which serves questions until the new one is complete and swapped in; a kill at any "
                    "point leaves a working knowledge base. --embed-dims N fits PCA on the knowledge base's own "
                    "chunks.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_reembed(args: argparse.Namespace, settings: Settings) -> int:
    bar = _ProgressBar(enabled=not args.quiet and not args.json and sys.stderr.isatty())
    try:
        report = reembed(settings.store, settings, bar.update, on_phase=bar.phase)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    reduced = (f", PCA keeps {report.dims} dimensions ({100 * report.explained_variance:.1f}% of the variance"
               f"{', from the stored vectors' if report.reused_vectors else ''})" if report.dims else "")
    print(f"{report.store}: {report.documents} documents, {report.chunks} chunks re-embedded: {report.old_model} -> "
          f"{report.new_model}{reduced}, in {report.seconds['total']:.0f} s")
    return 0
