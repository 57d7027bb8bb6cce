"""What the browser app, the Gradio API and the REST API do, with no UI in it.

One LoupeService per process wires the shared models to the knowledge bases of a Library: it opens each
knowledge base once, stages uploads inside the knowledge base's own uploads/ folder under a checked
name, ingests them through the normal Ingestor while reporting each file's stage, answers questions
(rewriting follow-ups with the conversation so far) and keeps the chat history.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ingest.pipeline import Ingestor
from ingest.readers import SUPPORTED_SUFFIXES
from rag.answering import Answer, Assistant, check_question, final_answer
from rag.components import Models
from rag.conversations import Conversations, Turn
from rag.errors import Busy, LoupeError, NotFound
from rag.followups import Rewrite, rewrite
from rag.library import KnowledgeBaseNotFound, Library
from rag.records import ChunkRecord, DocumentInfo
from rag.settings import ANSWER_MODES, PROJECT_ROOT, Settings
from rag.store import KnowledgeBase

logger = logging.getLogger(__name__)

SAMPLES_DIR = PROJECT_ROOT / "samples"
UPLOADS_DIR = "uploads"
CONVERSATIONS_FILE = "conversations.sqlite3"
MAX_K = 20
_MB = 1024 * 1024


class ServiceError(LoupeError):
    """Something the user asked for that Loupe refuses; the message says why and what to do."""


@dataclass
class FileRow:
    """One file's line in an upload's progress table."""

    name: str
    stage: str = "queued"  # queued, parse, done, failed
    progress: str = ""
    status: str = ""  # added, replaced, duplicate, failed; empty while it runs
    message: str = ""
    document_id: int | None = None

    def fail(self, message: str) -> None:
        self.stage, self.status, self.message = "failed", "failed", message


@dataclass(frozen=True)
class ImageResult:
    file: str
    page: int
    name: str
    score: float
    path: str  # a copy the UI may serve


BACKUP_SUFFIX = ".previous"


def _stage(folder: Path, name: str, source: Path) -> tuple[Path, Path | None]:
    """Copy an upload to folder/name, moving aside a file already there; returns (copy, moved-aside file).
    A crash before the ingest settles leaves both; `recover_uploads` puts them right on the next start."""
    target = inside(folder, name)
    backup = target.with_name(f".{target.name}{BACKUP_SUFFIX}") if target.exists() else None
    if backup is not None:
        os.replace(target, backup)
    shutil.copyfile(source, target)
    return target, backup


def recover_uploads(store: KnowledgeBase) -> None:
    """Settle what a crash during an ingest left in uploads/: a backup whose file is not the committed version
    goes back in place, other backups go, and files no document references (un-ingested bytes) go."""
    folder = (store.folder / UPLOADS_DIR).resolve()
    if not folder.is_dir():
        return
    committed = {Path(d.path).name: d.sha256 for d in store.documents() if Path(d.path).parent == folder}
    for backup in folder.glob(f".*{BACKUP_SUFFIX}"):
        target = backup.with_name(backup.name[1:-len(BACKUP_SUFFIX)])
        if target.name in committed and not _holds(target, committed[target.name]):
            logger.warning("restoring %s: a crash interrupted the ingest of its new version", target.name)
            os.replace(backup, target)
        else:
            backup.unlink(missing_ok=True)
    for path in folder.iterdir():
        if path.is_file() and path.name not in committed:
            logger.warning("removing %s from uploads/: no document references it (an interrupted ingest)",
                           path.name)
            path.unlink(missing_ok=True)


def _holds(path: Path, sha256: str) -> bool:
    """Does the file exist with exactly this content?"""
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest() == sha256


def over_upload_limit(name: str, size: int, max_mb: float) -> str:
    """Why an upload of `size` bytes is refused; empty when it is within the limit (max_upload_mb). One
    wording for every surface: the UI's progress rows, the Gradio API and REST."""
    if size <= int(max_mb * _MB):
        return ""
    return f"{name}: file is {size / _MB:.1f} MB, over the {max_mb:g} MB upload limit (--max-upload-mb)"


def safe_upload_name(name: str) -> str:
    """The name an upload is stored under: the name itself when it is a plain file name, else an error."""
    if not isinstance(name, str) or not name.strip():
        raise ServiceError("refused: the upload has no file name")
    if ("/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 for c in name)
            or Path(name).name != name):
        raise ServiceError(f"{name!r}: refused: a file name must not contain a path or control characters")
    if len(name.encode()) > 200:
        raise ServiceError(f"{name[:40]}…: refused: the file name is longer than 200 bytes")
    return name


def inside(folder: Path, name: str) -> Path:
    """folder/name, checked to stay inside folder once resolved (no traversal, no symlink escape)."""
    folder = folder.resolve()
    target = (folder / safe_upload_name(name)).resolve()
    if target.parent != folder:
        raise ServiceError(f"{name!r}: refused: the name resolves outside the upload folder")
    return target


class LoupeService:
    def __init__(self, settings: Settings, models: Models) -> None:
        self.settings = settings
        self.models = models
        self.library = Library.for_store(settings.store)
        self.library.root.mkdir(parents=True, exist_ok=True)
        self.conversations = Conversations(self.library.root / CONVERSATIONS_FILE)
        self._lock = threading.Lock()  # guards the dictionaries below; held only for moments
        self._kbs: dict[str, KnowledgeBase] = {}
        self._assistants: dict[str, Assistant] = {}
        self._ingest_locks: dict[str, threading.Lock] = {}
        self._open_locks: dict[str, threading.Lock] = {}
        self._display_dir = Path(tempfile.gettempdir()) / f"loupe-display-{os.getpid()}"
        # Called with each display copy's name once it is deleted, so the web layer can drop the copies its
        # server made of it (the service knows nothing of Gradio).
        self.on_display_removed: Callable[[str], None] = lambda name: None

    @property
    def chat_concurrency(self) -> int:
        """Questions the web surfaces let run at once: all reach the generator, which batches what it can, queues
        the rest and answers Busy past that (Gradio's own queue would hold them back without a word)."""
        return self.settings.generation_batch + self.settings.max_waiting_questions

    # --- knowledge bases ----------------------------------------------------------------------
    @property
    def default_kb(self) -> str:
        return self.library.default

    def kb_names(self) -> list[str]:
        return self.library.names()

    def kb(self, name: str | None = None) -> KnowledgeBase:
        name = name or self.default_kb
        with self._lock:
            if name in self._kbs:
                return self._kbs[name]
            opening = self._open_locks.setdefault(name, threading.Lock())
        with opening:  # one store's slow open (a model check, an index rebuild) must not stall the others
            with self._lock:
                if name in self._kbs:
                    return self._kbs[name]
            folder = self.library.path(name)  # refuses a malformed name first
            if name != self.default_kb and not self.library.exists(name):
                raise KnowledgeBaseNotFound(f"no knowledge base named {name!r}")
            store = self.models.open_store(folder)
            with self._ingest_lock(name):
                recover_uploads(store)
            with self._lock:
                self._kbs[name] = store
            return store

    def assistant(self, name: str | None = None) -> Assistant:
        name = name or self.default_kb
        kb = self.kb(name)
        with self._lock:
            if name not in self._assistants:
                self._assistants[name] = self.models.assistant(kb)
            return self._assistants[name]

    def create_kb(self, name: str) -> str:
        self.library.create(name)
        self.kb(name)  # writes the catalog
        return name

    def delete_kb(self, name: str) -> None:
        lock = self._ingest_lock(name)
        if not lock.acquire(blocking=False):
            raise Busy(f"{name!r} is ingesting files right now; delete it when that is done")
        try:
            if name == self.default_kb or not self.library.exists(name):
                self.library.delete(name)  # the library's own refusal: default, unknown or invalid name
            with self._lock:
                kb = self._kbs.pop(name, None)
                self._assistants.pop(name, None)
            if kb is not None:
                kb.close()
            self.library.delete(name)
        finally:
            lock.release()

    def documents(self, kb: str | None = None) -> list[DocumentInfo]:
        return self.kb(kb).documents()

    def delete_document(self, kb: str | None, document_id: int) -> DocumentInfo:
        """Delete a document and every copy of it Loupe made: its uploaded file, the display copies of its
        images (unless another document still has the image) and its passages in the chat history."""
        name = kb or self.default_kb
        store = self.kb(name)
        with self._ingest_lock(name):
            images = store.images_on_pages(int(document_id))
            info = store.delete(int(document_id))
            path = Path(info.path)
            uploads = (store.folder / UPLOADS_DIR).resolve()
            if path.parent == uploads and not store.documents_by_path(info.path):
                path.unlink(missing_ok=True)
            # the store removes an image file once no document uses it: then its display copies go too
            gone = {store.image_path(i).name for i in images if not store.image_path(i).exists()}
            for image_name in gone:
                (self._display_dir / image_name).unlink(missing_ok=True)
                self.on_display_removed(image_name)
        self.conversations.forget_document(name, info.id, info.name, gone)
        return info

    # --- uploads and ingestion ----------------------------------------------------------------
    def _ingest_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._ingest_locks.setdefault(name, threading.Lock())

    def check_upload(self, name: str, size: int, position: int) -> str:
        """Why an upload cannot be taken (empty when it can): its name, type, size, or place in the batch."""
        try:
            safe_upload_name(name)
        except ServiceError as error:
            return str(error)
        if position >= self.settings.max_upload_files:
            return (f"{name}: not ingested: one upload takes at most {self.settings.max_upload_files} files "
                    "(--max-upload-files)")
        if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
            supported = " ".join(sorted(SUPPORTED_SUFFIXES))
            return f"{name}: unsupported file type '{Path(name).suffix or name}' (supported: {supported})"
        if too_large := over_upload_limit(name, size, self.settings.max_upload_mb):
            return too_large
        return ""

    def ingest(self, kb: str | None, uploads: list[tuple[str, Path]],
               on_change: Callable[[list[FileRow]], None] | None = None) -> list[FileRow]:
        """Copy each (original name, temporary file) into the knowledge base's uploads/ and ingest them in one
        batch (small files share embedding calls). Every file ends with a status and a message; `on_change`
        sees the rows whenever one moves on."""
        name = kb or self.default_kb
        store = self.kb(name)
        rows = [FileRow(original) for original, _ in uploads]
        notify = (lambda: on_change(rows)) if on_change else (lambda: None)
        notify()
        with self._ingest_lock(name):
            recover_uploads(store)
            folder = store.folder / UPLOADS_DIR
            folder.mkdir(exist_ok=True)
            staged: list[tuple[FileRow, Path, Path | None]] = []  # row, copy in uploads/, previous copy
            seen: set[str] = set()
            for position, (row, (original, source)) in enumerate(zip(rows, uploads)):
                source = Path(source)
                problem = self.check_upload(original, source.stat().st_size if source.is_file() else 0, position)
                if not problem and original.lower() in seen:
                    problem = f"{original}: not ingested: another file in this upload has the same name"
                if not problem and not source.is_file():
                    problem = f"{original}: the uploaded file is missing"
                if problem:
                    row.fail(problem)
                    continue
                seen.add(original.lower())
                try:
                    staged.append((row, *_stage(folder, original, source)))
                except (OSError, ServiceError) as error:
                    row.fail(f"{original}: could not be stored ({error})")
            notify()
            if staged:
                self._ingest_staged(store, staged, notify)
        return rows

    def _ingest_staged(self, store: KnowledgeBase, staged: list[tuple[FileRow, Path, Path | None]],
                       notify: Callable[[], None]) -> None:
        by_name = {row.name: row for row, _, _ in staged}

        def progress(file_name: str, stage: str, done: int, total: int) -> None:
            row = by_name.get(file_name)
            if row is not None:
                row.stage = stage
                row.progress = (f"{done}/{total} pages" if stage == "parse" and total else
                                f"{done} chunks embedded" if stage == "embed" else
                                f"{done} page" + ("s" if done != 1 else ""))
                notify()

        ingestor = Ingestor(store, self.settings, self.models.text_embedder, self.models.image_embedder,
                            self.settings.ocr)
        failure = ""
        try:
            report = ingestor.ingest([target for _, target, _ in staged], on_progress=progress,
                                     names={target: row.name for row, target, _ in staged})
            outcomes = {outcome.path: outcome for outcome in report.outcomes}
        except Exception:  # every row must still end with a message
            logger.exception("ingesting %d uploaded files failed", len(staged))
            outcomes, failure = {}, "Loupe failed to ingest it (see the server log)"
        for row, target, backup in staged:
            outcome = outcomes.get(str(target))
            if outcome is None:
                row.fail(f"{row.name}: {failure or 'no outcome reported'}")
            else:
                row.status, row.message, row.document_id = outcome.status, outcome.message, outcome.document_id
                row.stage = "failed" if outcome.status == "failed" else "done"
            if row.status in ("added", "replaced"):
                if backup is not None:
                    backup.unlink(missing_ok=True)
            elif backup is not None:
                os.replace(backup, target)  # a failed or duplicate new version leaves the old file as it was
            else:
                target.unlink(missing_ok=True)
        notify()

    def ingest_live(self, kb: str | None, uploads: list[tuple[str, Path]],
                    interval: float = 0.3) -> Iterator[list[FileRow]]:
        """Ingest in a worker thread and yield snapshots of the rows as they change (the last is final)."""
        changed = threading.Event()
        latest: list[list[FileRow]] = [[FileRow(n) for n, _ in uploads]]
        failure: list[BaseException] = []

        def on_change(rows: list[FileRow]) -> None:
            latest[0] = [replace(r) for r in rows]
            changed.set()

        def work() -> None:
            try:
                latest[0] = self.ingest(kb, uploads, on_change)
            except BaseException as error:
                failure.append(error)
            finally:
                changed.set()

        worker = threading.Thread(target=work, name="loupe-ingest", daemon=True)
        worker.start()
        while worker.is_alive():
            changed.wait(interval)
            changed.clear()
            yield [replace(r) for r in latest[0]]
        worker.join()
        if failure:
            raise failure[0]
        yield latest[0]

    def sample_files(self) -> list[tuple[str, Path]]:
        if not SAMPLES_DIR.is_dir():
            return []
        return [(p.name, p) for p in sorted(SAMPLES_DIR.iterdir())
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]

    def embed_waiting_images(self, kb: str | None) -> int:
        if self.models.image_embedder is None:
            raise ServiceError(self.models.clip_status or "no CLIP model is loaded")
        store = self.kb(kb)
        with self._ingest_lock(kb or self.default_kb):
            ingestor = Ingestor(store, self.settings, self.models.text_embedder, self.models.image_embedder)
            return ingestor.embed_waiting_images()

    # --- answers ------------------------------------------------------------------------------
    def chat(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None,
             session: str | None = None) -> Iterator[Rewrite | str | Answer]:
        """The Rewrite first (what is searched), then pieces of text, then the Answer; a session's turns
        feed the follow-up rewrite, and the finished turn is stored under the session."""
        name = kb or self.default_kb
        turns = self.conversations.turns(session, name) if session else []
        asked = Rewrite(question, question)
        for event in self.answer_with_history(name, question, turns, k, mode):
            if isinstance(event, Rewrite):
                asked = event
            elif isinstance(event, Answer) and session:
                # stored before the answer is shown: a reload right after it must find the turn, and a closed
                # page cancels the event, so code after the last yield might never run
                self.conversations.add_turn(session, name, asked.question, event.text, answer_meta(event, asked))
            yield event

    def answer_with_history(self, kb: str | None, question: str, turns: Sequence[Turn], k: int | None = None,
                            mode: str | None = None) -> Iterator[Rewrite | str | Answer]:
        """chat() for a client that keeps the conversation itself (the OpenAI-compatible API sends it with each
        question): the Rewrite given `turns` (oldest first), then pieces of text, then the Answer."""
        question = check_question(str(question or ""), self.settings)  # one cap for every surface, before any work
        k, mode = self._check_options(k, mode)
        asked = rewrite(question, turns)
        if len(asked.search) > self.settings.max_question_chars:
            asked = Rewrite(question, question)  # the carried-over context would pass the cap: search as asked
        yield asked
        yield from self.assistant(kb or self.default_kb).stream(asked.search, k, mode)

    def ask(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        return final_answer(self.chat(kb, question, k, mode))

    def _check_options(self, k: int | None, mode: str | None) -> tuple[int, str]:
        k = int(k) if k else self.settings.top_k
        if not 1 <= k <= MAX_K:
            raise ServiceError(f"k must be between 1 and {MAX_K}")
        mode = mode or self.settings.answer_mode
        if mode not in ANSWER_MODES:
            raise ServiceError(f"mode must be one of {', '.join(ANSWER_MODES)}")
        return k, mode

    def passage(self, kb: str | None, chunk_id: int, around: int = 1) -> list[tuple[ChunkRecord, bool]]:
        """The cited chunk with its neighbours in the document, each marked True when it is the cited one."""
        store = self.kb(kb)
        chunk = store.chunks([int(chunk_id)]).get(int(chunk_id))
        if chunk is None:
            raise NotFound("that passage is no longer in the knowledge base (its document was deleted)")
        neighbours = store.chunks_of_document(chunk.document_id, max(0, chunk.ordinal - around), chunk.ordinal + around)
        return [(c, c.id == chunk.id) for c in neighbours]

    # --- images -------------------------------------------------------------------------------
    def search_images(self, kb: str | None, query: str, k: int = 8) -> list[ImageResult]:
        if self.models.image_embedder is None:
            raise ServiceError(self.models.clip_status)
        if not str(query or "").strip():
            raise ServiceError("type what the image should show")
        hits = self.assistant(kb).retriever.search_images(query, int(k))
        return [self._image_result(kb, hit) for hit in hits]

    def similar_images(self, kb: str | None, data: bytes, k: int = 8) -> list[ImageResult]:
        if self.models.image_embedder is None:
            raise ServiceError(f"Finding similar images needs CLIP as well. {self.models.clip_status}")
        try:
            hits = self.assistant(kb).retriever.similar_images(data, int(k))
        except OSError:  # PIL cannot read it
            raise ServiceError("that file is not an image Loupe can read") from None
        return [self._image_result(kb, hit) for hit in hits]

    def _image_result(self, kb: str | None, hit) -> ImageResult:
        path = self.kb(kb).image_path(hit.image)
        return ImageResult(hit.image.file, hit.image.page, hit.image.name, round(hit.score, 4),
                           str(self.display_copy(path)))

    def display_copy(self, path: str | Path) -> Path:
        """A copy of a stored image in the temp folder, which the web server may serve (the store may not)."""
        path = Path(path)
        self._display_dir.mkdir(exist_ok=True)
        copy = self._display_dir / path.name  # stored images are named by their content hash
        if not copy.exists():
            partial = copy.with_name(f".{copy.name}.{threading.get_ident()}")
            shutil.copyfile(path, partial)
            os.replace(partial, copy)  # a reader never sees half a file
        return copy

    def close(self) -> None:
        with self._lock:
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()
            self._assistants.clear()
        self.conversations.close()
        shutil.rmtree(self._display_dir, ignore_errors=True)


def answer_meta(answer: Answer, asked: Rewrite) -> dict:
    """What the UI needs to show an answer again after a reload: sources, images, flags."""
    return {
        "searched": asked.search if asked.rewritten else "",
        "reason": asked.reason,
        "explanation": asked.explanation,
        "mode": answer.mode,
        "grounded": answer.grounded,
        "unsupported": list(answer.unsupported),
        "sources": [asdict(s) for s in answer.sources],
        "images": [asdict(i) for i in answer.images],
        "seconds": {k: round(v, 3) for k, v in answer.seconds.items()},
    }

