"""Uploads: check each file, stage it inside its knowledge base's uploads/ folder, ingest the batch and report
every file's stage and outcome as it goes. The job ends once the files are committed: their sentence vectors are
filled afterwards, in the background (service.sentence_pass)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ingest.pipeline import SENTENCES_LATER, Ingestor
from ingest.readers import SUPPORTED_SUFFIXES
from rag.components import Models
from rag.settings import PROJECT_ROOT, Settings
from rag.store import KnowledgeBase
from rag.wording import counted
from service.errors import ServiceError
from service.knowledge_bases import KnowledgeBases
from service.staging import UPLOADS_DIR, over_upload_limit, recover_uploads, safe_upload_name, stage

logger = logging.getLogger(__name__)

SAMPLES_DIR = PROJECT_ROOT / "samples"
_DONE_WORDS = {"embed": "embedded", "index": "indexed"}  # passage-counting stages of the ingest pipeline
_STAGE_NAMES = {"ocr": "OCR"}  # as the progress table shows the pipeline's stages


@dataclass
class FileRow:
    """One file's line in an upload's progress table."""

    name: str
    stage: str = "queued"  # queued, parse, embed, done, failed (and the pipeline's early statuses)
    progress: str = ""
    status: str = ""  # added, replaced, duplicate, failed; empty while it runs
    message: str = ""
    document_id: int | None = None
    pages_read: float = 0.0  # share of the file's pages read (0 to 1): reading a scan is most of its time

    def fail(self, message: str) -> None:
        self.stage, self.status, self.message = "failed", "failed", message
        if not self.pages_read:  # "1 page to read" beside a file that failed before reading it would mislead
            self.progress = ""

    @property
    def finished(self) -> bool:
        return bool(self.status)

    @property
    def share_done(self) -> float:
        """How much of this file's work is done (0 to 1), for the upload's overall bar: its pages read."""
        return 1.0 if self.finished else self.pages_read

    def show_progress(self, stage: str, done: int, total: int) -> None:
        """Take one progress event of the ingest pipeline: its stage and its counts, in words."""
        self.stage = _STAGE_NAMES.get(stage, stage)
        if stage in ("parse", "ocr") and total:
            self.progress = f"page {done} of {total}" if done else f"{counted(total, 'page')} to read"
            begun = stage == "ocr"  # OCR reports the page it starts on, parse the page it has read
            self.pages_read = max(0, done - begun) / total
        elif stage in _DONE_WORDS:
            self.progress = f"{counted(done, 'passage')} {_DONE_WORDS[stage]}" + (f" of {total}" if total else "")
        elif done:
            self.progress = counted(done, "page")


class Uploads:
    def __init__(self, settings: Settings, models: Models, knowledge_bases: KnowledgeBases) -> None:
        self.settings = settings
        self.models = models
        self.knowledge_bases = knowledge_bases
        # What follows a change of the documents, whichever surface ingested them (browser, REST, Gradio API):
        # Explore tags the new images and retrains word vectors (LoupeService wires it; the uploads know nothing of
        # Explore).
        self.on_documents_added: Callable[[str | None], object] = lambda kb: None

    def check(self, name: str, size: int, position: int) -> str:
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
        return over_upload_limit(name, size, self.settings.max_upload_mb)

    def ingest(self, kb: str | None, uploads: list[tuple[str, Path]],
               on_change: Callable[[list[FileRow]], None] | None = None) -> list[FileRow]:
        """Copy each (original name, temporary file) into the knowledge base's uploads/ and ingest them in one
        batch (small files share embedding calls). Every file ends with a status and a message; `on_change`
        sees the rows whenever one moves on."""
        store = self.knowledge_bases.open(kb)
        rows = [FileRow(original) for original, _ in uploads]
        notify = (lambda: on_change(rows)) if on_change else (lambda: None)
        notify()
        with self.knowledge_bases.ingest_lock(kb):
            recover_uploads(store)
            folder = store.folder / UPLOADS_DIR
            folder.mkdir(exist_ok=True)
            staged = self._stage_all(folder, rows, uploads)
            notify()
            if staged:
                self._ingest_staged(kb or self.knowledge_bases.default, store, staged, notify)
        if any(row.status in ("added", "replaced") for row in rows):
            self._documents_added(kb)
        return rows

    def _documents_added(self, kb: str | None) -> None:
        try:
            self.on_documents_added(kb)
        except Exception:  # the documents are in: what follows (tags, word vectors) is tried again on the next view
            logger.exception("after adding documents to %s", kb or self.knowledge_bases.default)

    def _stage_all(self, folder: Path, rows: list[FileRow],
                   uploads: list[tuple[str, Path]]) -> list[tuple[FileRow, Path, Path | None]]:
        """Check and copy each upload into uploads/: (row, copy, previous copy) for those taken; the rows of
        the others fail with the reason."""
        staged: list[tuple[FileRow, Path, Path | None]] = []
        seen: set[str] = set()
        for position, (row, (original, source)) in enumerate(zip(rows, uploads)):
            source = Path(source)
            problem = self.check(original, source.stat().st_size if source.is_file() else 0, position)
            if not problem and original.lower() in seen:
                problem = f"{original}: not ingested: another file in this upload has the same name"
            if not problem and not source.is_file():
                problem = f"{original}: the uploaded file is missing"
            if problem:
                row.fail(problem)
                continue
            seen.add(original.lower())
            try:
                staged.append((row, *stage(folder, original, source)))
            except (OSError, ServiceError) as error:
                row.fail(f"{original}: could not be stored ({error})")
        return staged

    def sentence_status(self, kb: str | None) -> str:
        """'preparing sentence vectors: …' while the background pass after an upload runs; empty otherwise."""
        return self.knowledge_bases.sentence_passes.status(kb or self.knowledge_bases.default)

    def wait_for_sentences(self, kb: str | None, timeout_s: float | None = None) -> bool:
        """Until the background sentence pass of the knowledge base has ended (a benchmark that measures answers
        from stored sentence vectors, a test); False when it still runs after `timeout_s`."""
        return self.knowledge_bases.sentence_passes.wait(kb or self.knowledge_bases.default, timeout_s)

    def _ingest_staged(self, kb: str, store: KnowledgeBase, staged: list[tuple[FileRow, Path, Path | None]],
                       notify: Callable[[], None]) -> None:
        by_name = {row.name: row for row, _, _ in staged}

        def progress(file_name: str, stage_name: str, done: int, total: int) -> None:
            row = by_name.get(file_name)
            if row is not None:
                row.show_progress(stage_name, done, total)
                notify()

        ingestor = Ingestor(store, self.settings, self.models.embedder_of(store), self.models.image_embedder,
                            self.settings.ocr, sentences=SENTENCES_LATER)
        failure = ""
        try:
            report = ingestor.ingest([target for _, target, _ in staged], on_progress=progress,
                                     names={target: row.name for row, target, _ in staged})
            outcomes = {outcome.path: outcome for outcome in report.outcomes}
            self.knowledge_bases.sentence_passes.start(kb, ingestor, report.document_ids(), report.totals()["chunks"])
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

    @staticmethod
    def sample_files() -> list[tuple[str, Path]]:
        if not SAMPLES_DIR.is_dir():
            return []
        return [(p.name, p) for p in sorted(SAMPLES_DIR.iterdir())
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]

    def embed_waiting_images(self, kb: str | None) -> int:
        if self.models.image_embedder is None:
            raise ServiceError(self.models.clip_status or "no CLIP model is loaded")
        store = self.knowledge_bases.open(kb)
        with self.knowledge_bases.ingest_lock(kb):
            ingestor = Ingestor(store, self.settings, self.models.embedder_of(store), self.models.image_embedder)
            count = ingestor.embed_waiting_images()
        if count:
            self._documents_added(kb)  # the images with their new vectors get their tags
        return count
