"""Knowledge bases: open each one once per process, create and delete them, list and delete documents.

Every other part of the service reaches a store through `KnowledgeBases.open`, and serialises its writes to a
store with `ingest_lock`, so an ingest, a document deletion and a knowledge-base deletion never overlap.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rag.answering import Assistant
from rag.components import Models
from rag.errors import Busy
from rag.library import DatabaseLibrary, KnowledgeBaseNotFound, Library, library_for
from rag.records import DocumentInfo
from rag.settings import Settings
from rag.store_api import KnowledgeBaseStore
from service.sentence_pass import SentencePasses
from service.staging import UPLOADS_DIR, recover_uploads


class KnowledgeBases:
    def __init__(self, settings: Settings, models: Models) -> None:
        self.models = models
        self.library: Library | DatabaseLibrary = library_for(settings)  # folders, or schemas of one database
        self.library.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the dictionaries below; held only for moments
        self._open: dict[str, KnowledgeBaseStore] = {}
        self._assistants: dict[str, Assistant] = {}
        self._ingest_locks: dict[str, threading.Lock] = {}
        self._open_locks: dict[str, threading.Lock] = {}
        self.sentence_passes = SentencePasses()  # each upload's sentence vectors, filled after its job ends

    @property
    def default(self) -> str:
        return self.library.default

    def names(self) -> list[str]:
        return self.library.names()

    def open(self, name: str | None = None) -> KnowledgeBaseStore:
        name = name or self.default
        with self._lock:
            if name in self._open:
                return self._open[name]
            opening = self._open_locks.setdefault(name, threading.Lock())
        with opening:  # one store's slow open (a model check, an index rebuild) must not stall the others
            with self._lock:
                if name in self._open:
                    return self._open[name]
            location = self.library.path(name)  # a folder or a URL; refuses a malformed name first
            if name != self.default and not self.library.exists(name):
                raise KnowledgeBaseNotFound(f"no knowledge base named {name!r}")
            store = self.models.open_store(location, own_model=True)  # each with the embedder of its vectors
            with self.ingest_lock(name):
                recover_uploads(store)
            with self._lock:
                self._open[name] = store
            return store

    def assistant(self, name: str | None = None) -> Assistant:
        name = name or self.default
        store = self.open(name)
        with self._lock:
            if name not in self._assistants:
                self._assistants[name] = self.models.assistant(store)
            return self._assistants[name]

    def ingest_lock(self, name: str | None) -> threading.Lock:
        """The lock every write to one knowledge base's files takes (ingest, delete, re-embed)."""
        with self._lock:
            return self._ingest_locks.setdefault(name or self.default, threading.Lock())

    def create(self, name: str) -> str:
        self.library.create(name)
        self.open(name)  # writes the catalog
        return name

    def delete(self, name: str) -> None:
        lock = self.ingest_lock(name)
        if not lock.acquire(blocking=False):
            raise Busy(f"{name!r} is ingesting files right now; delete it when that is done")
        try:
            if name == self.default or not self.library.exists(name):
                self.library.delete(name)  # the library's own refusal: default, unknown or invalid name
            self.release(name)
            self.library.delete(name)
        finally:
            lock.release()

    def release(self, name: str) -> None:
        """Close this process's store of `name` (a delete, or a re-embed swapping its folder); the next open()
        opens it afresh."""
        self.sentence_passes.stop(name)  # it writes through the store about to close
        with self._lock:
            store = self._open.pop(name, None)
            self._assistants.pop(name, None)
        if store is not None:
            store.close()

    def documents(self, name: str | None = None) -> list[DocumentInfo]:
        return self.open(name).documents()

    def delete_document(self, name: str | None, document_id: int) -> tuple[DocumentInfo, set[str]]:
        """Delete a document and its uploaded file; returns it and the names of the stored images that went
        with it (the store removes an image file once no document uses it)."""
        store = self.open(name)
        with self.ingest_lock(name):
            images = store.images_on_pages(int(document_id))
            info = store.delete(int(document_id))
            path = Path(info.path)
            if path.parent == (store.folder / UPLOADS_DIR).resolve() and not store.documents_by_path(info.path):
                path.unlink(missing_ok=True)
            gone = {store.image_path(i).name for i in images if not store.image_path(i).exists()}
        return info, gone

    def close(self) -> None:
        self.sentence_passes.close()  # between two batches, before their stores close
        with self._lock:
            for store in self._open.values():
                store.close()
            self._open.clear()
            self._assistants.clear()
