"""Feed files into a knowledge base: read, chunk, OCR, embed, store; one transaction per file.

Each file ends in one outcome (added, replaced, duplicate, failed) with a message that names it.
A failing file never stops the batch and never touches what is already stored.

Reading, OCR and embedding fill a staging folder without holding any lock; the finished file is then
committed in one short transaction, so another process sharing the store (the app beside a CLI ingest)
waits at most for that commit.

The sentence vectors answering ranks with (rag.sentence_vectors) cost about as much to embed as the chunks. They are
filled in a pass after the files are committed, in a folder store and in PostgreSQL alike, so each file is searchable
as soon as its chunks are embedded (SENTENCES_AFTER); the app runs that pass in the background (SENTENCES_LATER).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ingest.chunking import ChunkBudget, chunk_blocks
from ingest.parse_worker import read_file_bounded
from ingest.parsed import IngestError, PageImage, ParsedFile, ReadLimits, TextBlock
from ingest.paths import expand_paths
from ingest.readers import SUPPORTED_SUFFIXES, open_regular_file
from rag.embedder import Embedder
from rag.errors import LoupeError
from rag.image_embedder import ImageEmbedder
from rag.records import DocumentInfo, ImageRecord, NewChunk, NewDocument, indexed_text
from rag.sentence_vectors import embed_chunk_sentences, fill_missing
from rag.settings import Settings
from rag.store import DuplicateDocument, ModelMismatch, StagedDocument
from rag.store_api import KnowledgeBaseStore, lexical_index
from rag.wording import counted

logger = logging.getLogger(__name__)

STAGES = ("parse", "ocr", "embed", "embed sentences", "index")
CHUNK_BATCH = 256  # chunks embedded and written together: bounds memory on a 2,000-page PDF
# When a chunk's sentence vectors are made: in a pass after the ingest's commits (the default), by the caller
# later (Ingestor.fill_sentences: the app, in the background, service.sentence_pass), or with the chunks, before
# each commit (the baseline of benchmarks/ingest_throughput.py)
SENTENCES_AFTER, SENTENCES_LATER, SENTENCES_INLINE = "after", "later", "inline"

# (file name, stage, done, total); stages: parse (page done of pages), ocr (page begun), embed, index, done, and
# duplicate or failed as soon as known
ProgressCallback = Callable[[str, str, int, int], None]


@dataclass
class FileOutcome:
    path: str
    status: str  # "added", "replaced", "duplicate", "failed"
    message: str
    document_id: int | None = None
    pages: int = 0
    chunks: int = 0
    images: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    images_waiting: int = 0

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def document_ids(self) -> list[int]:
        """The documents this ingest added (or added in place of an earlier version)."""
        return [o.document_id for o in self.outcomes if o.status in ("added", "replaced") and o.document_id]

    def totals(self) -> dict[str, int]:
        added = [o for o in self.outcomes if o.status in ("added", "replaced")]
        return {"files": len(added), "pages": sum(o.pages for o in added), "chunks": sum(o.chunks for o in added),
                "images": sum(o.images for o in added)}

    def summary(self) -> str:
        counts = defaultdict(int)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        totals = self.totals()
        stages = ", ".join(f"{stage} {self.seconds.get(stage, 0.0):.1f}s" for stage in STAGES)
        parts = [f"{counts[s]} {s}" for s in ("added", "replaced", "duplicate", "failed") if counts[s]]
        line = (f"{', '.join(parts) or 'nothing to do'}; {counted(totals['pages'], 'page')}, "
                f"{counted(totals['chunks'], 'chunk')}, {counted(totals['images'], 'image')}. Time: {stages}.")
        if self.images_waiting:
            line += f" {self.images_waiting} images wait for CLIP weights to be embedded."
        return line


@dataclass
class _Prepared:
    """A file read and chunked up to its first batch, not yet embedded or written."""

    path: Path
    name: str
    sha: str
    size: int
    parsed: ParsedFile
    batches: Iterator[tuple[list[NewChunk], list[PageImage]]]
    first: tuple[list[NewChunk], list[PageImage]]
    complete: bool  # the whole file fitted in the first batch


class Ingestor:
    def __init__(self, kb: KnowledgeBaseStore, settings: Settings, text_embedder: Embedder,
                 image_embedder: ImageEmbedder | None = None, ocr: bool = False,
                 sentences: str = SENTENCES_AFTER) -> None:
        if text_embedder.model_id != kb.text_model:  # its vectors would be mixed with another model's, silently
            raise ModelMismatch(f"{Path(kb.folder).name}: this knowledge base holds the vectors of the text model "
                                f"'{kb.text_model.name}' ({kb.text_model.dim}-d), not of "
                                f"'{text_embedder.model_id.name}' ({text_embedder.dim}-d): ingest with its own "
                                "embedder")
        self.kb = kb
        self.settings = settings
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        self.ocr = ocr  # OCR scanned pages and pictures; it runs in the parse worker, which loads its own engine
        self.budget = ChunkBudget(min(settings.chunk_tokens, text_embedder.max_tokens), settings.chunk_overlap)
        if sentences not in (SENTENCES_AFTER, SENTENCES_LATER, SENTENCES_INLINE):
            raise ValueError(f"unknown sentence pass {sentences!r}")
        self.sentences = sentences

    def ingest(self, arguments: Iterable[str | Path], show_progress: bool = False,
               on_progress: ProgressCallback | None = None, names: dict[Path, str] | None = None) -> IngestReport:
        """Ingest files, folders and globs. `names` gives display names (uploads keep their original name).

        Small files are embedded together, up to CHUNK_BATCH chunks per model call (a folder of short
        notes embeds several times faster than file by file), but each is still written in its own
        transaction. A large file streams through in batches. Outcomes keep the order of the input."""
        files, errors = expand_paths(arguments, SUPPORTED_SUFFIXES)
        report = IngestReport()
        report.outcomes += [FileOutcome(e.path, "failed", str(e)) for e in errors]
        slots: list[FileOutcome | None] = [None] * len(files)
        notify = on_progress or (lambda *_: None)
        group: list[tuple[int, _Prepared]] = []
        bar = tqdm(files, desc="files", unit="file", disable=not show_progress, file=sys.stderr)

        def flush() -> None:
            for slot, outcome in self._write_group(group, report.seconds, notify):
                slots[slot] = outcome
            group.clear()

        for slot, path in enumerate(bar):
            name = (names or {}).get(path, path.name)
            bar.set_postfix_str(name[-40:])
            pending = {p.sha: p.name for _, p in group}
            prepared = self._guarded(path, name, self._prepare, path, name, pending, report.seconds, notify)
            if isinstance(prepared, FileOutcome):
                slots[slot] = prepared
                notify(name, prepared.status, 0, 0)  # known now: say so before the batch's other files finish
            elif prepared.complete:
                if sum(len(p.first[0]) for _, p in group) + len(prepared.first[0]) > CHUNK_BATCH:
                    flush()
                group.append((slot, prepared))
            else:
                flush()
                slots[slot] = self._guarded(path, name, self._write, prepared,
                                            self._embedded(prepared, report.seconds), report.seconds, show_progress,
                                            notify)
        flush()
        bar.close()
        report.outcomes += [o for o in slots if o is not None]
        if self.image_embedder is not None and self.kb.images_waiting():
            self.embed_waiting_images(report.seconds)
        start = time.perf_counter()
        self.kb.flush()
        if report.totals()["files"]:
            lexical_index(self.kb).refresh()  # rebuild BM25 now, not on the first question after
        report.seconds["index"] += time.perf_counter() - start
        report.images_waiting = len(self.kb.images_waiting())
        if self.sentences == SENTENCES_AFTER:  # every file is searchable now; answers rank sentences faster after
            self.fill_sentences(report.document_ids(), report.seconds, show_progress)
        return report

    def fill_sentences(self, document_ids: Iterable[int] | None = None, seconds: dict[str, float] | None = None,
                       show_progress: bool = False, progress: Callable[[int], None] | None = None,
                       stop: threading.Event | None = None) -> int:
        """Embed and store the sentence vectors of these documents' chunks (all the store's, by default) that have
        none yet (rag.sentence_vectors.fill_missing); returns the chunks filled. `progress(done)` hears the chunks
        done; `stop`, once set, ends the pass before its next batch. Nothing to do in a store that got them with its
        chunks."""
        if self.sentences == SENTENCES_INLINE:
            return 0
        start = time.perf_counter()
        bar = tqdm(desc="sentence vectors", unit="chunk", disable=not show_progress, file=sys.stderr)

        def heard(done: int) -> None:
            bar.update(done - bar.n)
            if progress is not None:
                progress(done)

        try:
            filled = fill_missing(self.kb, lambda: self.text_embedder, document_ids, self.settings.embed_batch_size,
                                  heard, stop)
        finally:
            bar.close()
        if seconds is not None:
            seconds["embed sentences"] += time.perf_counter() - start
        return filled

    @staticmethod
    def _guarded(path: Path, name: str, step: Callable[..., _Prepared | FileOutcome],
                 *args: object) -> _Prepared | FileOutcome:
        """Run one file's step; any failure becomes that file's outcome, and the batch goes on."""
        try:
            return step(*args)
        except IngestError as error:
            return FileOutcome(str(path), "failed", f"{name}: {error.reason}")
        except LoupeError as error:  # e.g. Busy: another process held the store past the busy timeout
            return FileOutcome(str(path), "failed", f"{name}: {error}")
        except Exception as error:  # a reader or model bug must not end the batch; say which file hit it
            logger.exception("ingesting %s failed unexpectedly", name)
            # the exception's text may hold server paths: it goes to the log, the outcome says where to look
            return FileOutcome(str(path), "failed", f"{name}: Loupe failed to ingest it ({type(error).__name__}; "
                                                    "see the log)")

    def _prepare(self, path: Path, name: str, pending: dict[str, str], seconds: dict[str, float],
                 notify: ProgressCallback) -> _Prepared | FileOutcome:
        size, sha = _size_and_sha256(path, self.settings.max_file_bytes)
        existing = self.kb.document_by_sha(sha)
        if existing is not None:
            return _duplicate(path, name, existing)
        if sha in pending:
            return FileOutcome(str(path), "duplicate", f"{name}: same content as '{pending[sha]}' in this batch; "
                               "nothing added")
        start = time.perf_counter()
        notify(name, "parse", 0, 0)  # started, while the worker opens the file (and loads its OCR models)
        # an untrusted file is parsed (and OCR'd) in a worker process, within time and memory limits
        parsed = read_file_bounded(path, self.ocr, ReadLimits.from_settings(self.settings))
        parsed.on_progress = lambda stage, page, pages: notify(name, stage, page, pages)  # OCR, page by page
        notify(name, "parse", 0, parsed.page_count)
        batches = self._batches(parsed, notify, name)
        first = next(batches)
        complete = len(first[0]) < CHUNK_BATCH
        if complete:
            next(batches, None)  # let the reader finish (its warnings are complete only then)
            if not first[0] and not first[1]:
                raise IngestError(path, "no text or images found" + _ocr_hint(parsed, self.ocr))
        seconds["ocr"] += parsed.ocr_seconds
        seconds["parse"] += time.perf_counter() - start - parsed.ocr_seconds
        return _Prepared(path, name, sha, size, parsed, batches, first, complete)

    def _write_group(self, group: list[tuple[int, _Prepared]], seconds: dict[str, float],
                     notify: ProgressCallback) -> Iterator[tuple[int, FileOutcome]]:
        """Embed the chunks of several small files in one call, then write each file on its own."""
        if not group:
            return
        vectors, sentence_vectors = self._embed_texts([c for _, p in group for c in p.first[0]], seconds)
        offset = 0
        for slot, prepared in group:
            count = len(prepared.first[0])
            own_sentences = None if sentence_vectors is None else sentence_vectors[offset:offset + count]
            batch = (*prepared.first, vectors[offset:offset + count], own_sentences)
            offset += count
            outcome = self._guarded(prepared.path, prepared.name, self._write, prepared, iter([batch]), seconds,
                                    False, notify)
            if not outcome.ok:
                notify(prepared.name, outcome.status, 0, 0)
            yield slot, outcome

    def _embedded(self, prepared: _Prepared, seconds: dict[str, float]) -> Iterator[tuple]:
        """The batches of a large file with their vectors, embedded one batch at a time."""
        for chunks, images in itertools.chain([prepared.first], prepared.batches):
            vectors, sentence_vectors = self._embed_texts(chunks, seconds)
            yield chunks, images, vectors, sentence_vectors

    def _write(self, prepared: _Prepared, batches: Iterator[tuple], seconds: dict[str, float], show_progress: bool,
               notify: ProgressCallback) -> FileOutcome:
        """Stage the whole file, then commit it in one short transaction: all of it lands, or none of it does.
        Iterating `batches` is what parses and embeds a large file, so that happens here, before the commit
        and without any lock."""
        parsed, name = prepared.parsed, prepared.name
        pages = tqdm(total=None, desc=name[-30:], unit="chunk", leave=False,
                     disable=not show_progress or prepared.complete, file=sys.stderr)
        with self.kb.staging() as staged:
            for chunks, images, vectors, sentence_vectors in batches:
                staged.add_chunks(chunks, vectors, sentence_vectors)
                self._stage_images(staged, images, seconds)
                pages.update(len(chunks))
                # the total is known when the whole file fitted in one batch
                notify(name, "embed", staged.chunk_count, staged.chunk_count if prepared.complete else 0)
            pages.close()
            if staged.empty:
                raise IngestError(prepared.path, "no text or images found" + _ocr_hint(parsed, self.ocr))
            document = NewDocument(str(prepared.path), name, parsed.kind, prepared.sha, prepared.size,
                                   parsed.page_count)
            start = time.perf_counter()
            notify(name, "index", staged.chunk_count, staged.chunk_count)
            try:
                document_id, replaced = self.kb.commit(document, staged)
            except DuplicateDocument as duplicate:  # the same bytes arrived from another process meanwhile
                notify(name, "duplicate", 0, 0)
                return _duplicate(prepared.path, name, duplicate.existing)
            seconds["index"] += time.perf_counter() - start
        notify(name, "done", parsed.page_count, parsed.page_count)
        status, verb = ("replaced", "replaced its earlier version") if replaced else ("added", "added")
        message = (f"{name}: {verb}: {counted(parsed.page_count, 'page')}, {counted(staged.chunk_count, 'chunk')}, "
                   f"{counted(len(staged.images), 'image')}")
        if parsed.warnings:
            more = " …" if len(parsed.warnings) > 1 else ""
            message += f" ({len(parsed.warnings)} warnings: {parsed.warnings[0]}{more})"
        return FileOutcome(str(prepared.path), status, message, document_id, parsed.page_count, staged.chunk_count,
                           len(staged.images), list(parsed.warnings))

    def _batches(self, parsed: ParsedFile, notify: ProgressCallback,
                 name: str) -> Iterator[tuple[list[NewChunk], list[PageImage]]]:
        """Chunks and images in batches of CHUNK_BATCH chunks, consuming the reader lazily."""
        images: list[PageImage] = []
        last_page = 0

        def blocks() -> Iterator[TextBlock]:
            nonlocal last_page
            for item in parsed.items:
                if item.page > last_page:
                    last_page = item.page
                    notify(name, "parse", last_page, parsed.page_count)
                if isinstance(item, PageImage):
                    images.append(item)
                else:
                    yield item

        batch: list[NewChunk] = []
        for chunk in chunk_blocks(blocks(), self._count_tokens, self.budget):
            batch.append(chunk)
            if len(batch) >= CHUNK_BATCH:
                yield batch, images[:]
                batch, images[:] = [], []
        yield batch, images[:]

    def _embed_texts(self, chunks: list[NewChunk],
                     seconds: dict[str, float]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The chunks' vectors (heading + text, as retrieval matches them), and, when they are made with the chunks
        (SENTENCES_INLINE), each chunk's sentence vectors, which answering ranks; each timed as its own stage."""
        start = time.perf_counter()
        texts = [indexed_text(c.heading, c.text) for c in chunks]
        vectors = self.text_embedder.embed(texts, self.settings.embed_batch_size)
        middle = time.perf_counter()
        seconds["embed"] += middle - start
        if self.sentences != SENTENCES_INLINE:
            return vectors, None
        sentences = embed_chunk_sentences(self.text_embedder, [c.text for c in chunks], self.settings.embed_batch_size)
        seconds["embed sentences"] += time.perf_counter() - middle
        return vectors, sentences

    def _stage_images(self, staged: StagedDocument, images: list[PageImage], seconds: dict[str, float]) -> None:
        vectors = [None] * len(images)
        if self.image_embedder is not None and images:
            start = time.perf_counter()
            vectors = self.image_embedder.embed_images([i.data for i in images])
            seconds["embed"] += time.perf_counter() - start
        for image, vector in zip(images, vectors):
            staged.add_image(image.page, image.name or f"page {image.page}", image.data, vector)

    def _count_tokens(self, texts: list[str]) -> list[int]:
        return self.text_embedder.count_tokens_batch(texts)

    def embed_waiting_images(self, seconds: dict[str, float] | None = None) -> int:
        """Embed the images stored while CLIP weights were missing; returns how many were embedded."""
        if self.image_embedder is None:
            raise RuntimeError("no CLIP model loaded: cannot embed images")
        waiting = self.kb.images_waiting()
        start = time.perf_counter()
        embedded = 0
        for first in range(0, len(waiting), 64):
            part = [(image, data) for image in waiting[first:first + 64]
                    if (data := self._stored_image(image)) is not None]
            if not part:
                continue
            vectors = self.image_embedder.embed_images([data for _, data in part])  # outside the transaction
            with self.kb.write() as writer:
                for (image, _), vector in zip(part, vectors):
                    writer.set_image_vector(image.id, vector)
            embedded += len(part)
        self.kb.flush()
        if seconds is not None:
            seconds["embed"] += time.perf_counter() - start
        return embedded

    def _stored_image(self, image: ImageRecord) -> bytes | None:
        """The stored copy of an image; None when another process deleted its document since it was listed."""
        try:
            return self.kb.image_path(image).read_bytes()
        except FileNotFoundError:
            return None


def _duplicate(path: Path, name: str, existing: DocumentInfo) -> FileOutcome:
    return FileOutcome(str(path), "duplicate", f"{name}: already in the knowledge base as '{existing.name}' "
                       f"(id {existing.id}); nothing added", existing.id)


def _size_and_sha256(path: Path, max_bytes: int) -> tuple[int, str]:
    """Size and SHA-256 of a regular file within the size limit; a link, device or pipe is refused before any
    byte is read (hashing /dev/zero would never end)."""
    digest = hashlib.sha256()
    with open_regular_file(path, max_bytes) as handle:
        size = os.fstat(handle.fileno()).st_size
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return size, digest.hexdigest()


def _ocr_hint(parsed: ParsedFile, ocr: bool) -> str:
    if not ocr and parsed.kind in ("pdf", "image"):
        return " (OCR is off, so scanned pages and pictures of text yield nothing)"
    return ""
