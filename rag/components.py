"""Build the parts of Loupe from one Settings object, once per process."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rag.answering import Assistant
from rag.catalog import Catalog
from rag.devices import ComputeGate, apply_torch_threads, torch_device
from rag.embedder import Embedder, ModelNotLoadable, build_embedder, recorded_model_name, settings_for_model
from rag.errors import Conflict, LoupeError
from rag.generator import Generator, build_generator
from rag.image_embedder import ImageEmbedder, load_image_embedder
from rag.pca import ProjectedEmbedder, projection_for
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import CATALOG_FILE
from rag.store_api import KnowledgeBaseStore, is_database_url
from rag.store_factory import open_from_settings

logger = logging.getLogger(__name__)


def configure_hub() -> None:
    """Go offline up front when the hub can't be reached: huggingface_hub would otherwise retry for ~45 s
    before a missing CLIP download fails. huggingface_hub reads HF_HUB_OFFLINE once, when imported, so this
    must run before anything imports it: gradio, transformers, sentence-transformers, open_clip."""
    if not os.environ.get("HF_HUB_OFFLINE"):
        try:
            socket.setdefaulttimeout(2)
            socket.getaddrinfo("huggingface.co", 443)
        except OSError:
            os.environ["HF_HUB_OFFLINE"] = "1"
        finally:
            socket.setdefaulttimeout(None)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the CLI's output


class EmbedderUnavailable(Conflict):
    """A knowledge base's vectors come from a text model this process cannot load."""


def recorded_text_model(location: Path | str) -> str | None:
    """The text model a folder knowledge base records, read without opening the store; None for a new one, or a
    database's (which refuses another model itself when opened)."""
    if is_database_url(location) or not (Path(location) / CATALOG_FILE).is_file():
        return None
    catalog = Catalog.open(Path(location) / CATALOG_FILE)
    try:
        return catalog.get_meta("text_model")
    finally:
        catalog.close()


@dataclass
class Models:
    """The models every knowledge base of a process shares. `text_embedder` is the configured one; a knowledge base
    made by another text model (another backend, a PCA size, a re-embedding in the app) gets its own, loaded once
    per process and shared by every knowledge base of that model (embedder_for)."""

    settings: Settings
    text_embedder: Embedder
    image_embedder: ImageEmbedder | None
    clip_status: str  # empty when CLIP is on; else the one line that says why image search by text is off
    _generator: Generator | None = field(default=None, repr=False)
    _generator_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _embedders: dict[str, Embedder] = field(default_factory=dict, repr=False)  # by the model name stores record
    _embedders_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # a PCA's base nests

    @classmethod
    def load(cls, settings: Settings, with_images: bool = True) -> Models:
        device = torch_device(settings.device)
        apply_torch_threads(settings.torch_threads)  # once, before any model runs
        text = build_embedder(settings, device)
        max_pixels = int(settings.max_image_megapixels * 1_000_000)
        image, status = (load_image_embedder(settings.clip_model, settings.clip_pretrained, device, max_pixels)
                         if with_images else (None, "Image search by text is off: CLIP not loaded."))
        return cls(settings, text, image, status)

    def generator(self) -> Generator:
        with self._generator_lock:
            if self._generator is None:
                self._generator = build_generator(self.settings, torch_device(self.settings.device),
                                                  self.text_embedder.gate or ComputeGate())
            return self._generator

    def open_store(self, location: Path | str | None = None, create: bool = True,
                   own_model: bool = False) -> KnowledgeBaseStore:
        """The configured store, or `location` (a folder, or a URL naming a knowledge base in a database), for the
        configured text model: one made by another is refused (ModelMismatch), as a command's explicit model asks.
        `own_model`: for the text model the store records instead (embedder_for; the app's knowledge bases, each
        with its own). `create` False refuses one that does not exist yet."""
        text_model = (self.embedder_for(location) if own_model else self.text_embedder).model_id
        return open_from_settings(self.settings, text_model, self.image_embedder.model_id if self.image_embedder
                                  else None, location, create)

    def embedder_for(self, location: Path | str | None = None) -> Embedder:
        """The text embedder of the knowledge base at `location` (default: the configured store): the configured one
        when the store records its model or none yet, else one built for the model it records. EmbedderUnavailable
        when that model cannot be loaded here."""
        location = self.settings.store if location is None else location
        return self._embedder_named(recorded_text_model(location), location)

    def embedder_of(self, kb: KnowledgeBaseStore) -> Embedder:
        """The text embedder of an open knowledge base: its questions and new documents need that model's vectors."""
        return self._embedder_named(kb.text_model.name, kb.folder)

    def _embedder_named(self, recorded: str | None, location: Path | str) -> Embedder:
        if recorded is None or recorded == self.text_embedder.model_id.name:
            return self.text_embedder
        with self._embedders_lock:
            if recorded not in self._embedders:
                self._embedders[recorded] = self._load_embedder(recorded, location)
            return self._embedders[recorded]

    def _load_embedder(self, recorded: str, location: Path | str) -> Embedder:
        settings = settings_for_model(self.settings, recorded, location)
        name = Path(location).name
        remedy = (f"make that model available here, or re-embed the knowledge base with the configured one "
                  f"(`python -m rag reembed --store ... --text-model {self.settings.text_model}`)")
        try:
            if settings.embed_dims:  # the full model's embedder, shared (often the configured one), projected
                full = self._embedder_named(recorded_model_name(settings.with_(embed_dims=0)), location)
                embedder = ProjectedEmbedder(full, projection_for(location, settings.embed_dims, full.model_id.name))
            else:
                embedder = build_embedder(settings, torch_device(settings.device), self.text_embedder.gate)
        except EmbedderUnavailable:
            raise
        except ModelNotLoadable as error:  # the model is missing here (logged): the remedy is this knowledge base's
            raise EmbedderUnavailable(f"the knowledge base '{name}' was built with the text model '{recorded}', which "
                                      f"cannot be loaded here: {error.reason}; {remedy}") from error
        except LoupeError as error:  # e.g. its PCA projection is missing: that message says what to run
            raise EmbedderUnavailable(f"the knowledge base '{name}' was built with the text model '{recorded}': "
                                      f"{error}") from error
        except Exception as error:  # a missing or broken model: the loader's message may hold paths, so it is logged
            logger.exception("cannot load the text model %r of the knowledge base %s", recorded, name)
            raise EmbedderUnavailable(f"the knowledge base '{name}' was built with the text model '{recorded}', which "
                                      f"cannot be loaded here ({type(error).__name__}; see the log): "
                                      f"{remedy}") from error
        if embedder.model_id.name != recorded:
            raise EmbedderUnavailable(f"the knowledge base '{name}' was built with the text model '{recorded}', but "
                                      f"Loupe can only make '{embedder.model_id.name}' of it: {remedy}")
        logger.info("knowledge base %s: text model %s (%s)", name, recorded, settings.embedder)
        return embedder

    def assistant(self, kb: KnowledgeBaseStore) -> Assistant:
        retriever = Retriever(kb, self.embedder_of(kb), self.image_embedder, self.settings.retrieval_mode)
        return Assistant(self.settings, retriever, self.generator)
