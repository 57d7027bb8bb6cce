"""Build the parts of Loupe from one Settings object, once per process."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rag.answering import Assistant
from rag.devices import ComputeGate, apply_torch_threads, torch_device
from rag.embedder import Embedder, build_embedder
from rag.generator import Generator, build_generator
from rag.image_embedder import ImageEmbedder, load_image_embedder
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store_api import KnowledgeBaseStore
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


@dataclass
class Models:
    """The models every knowledge base of a process shares."""

    settings: Settings
    text_embedder: Embedder
    image_embedder: ImageEmbedder | None
    clip_status: str  # empty when CLIP is on; else the one line that says why image search by text is off
    _generator: Generator | None = field(default=None, repr=False)
    _generator_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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

    def open_store(self, location: Path | str | None = None, create: bool = True) -> KnowledgeBaseStore:
        """The configured store, or `location` (a folder, or a URL naming a knowledge base in a database), for these
        models; `create` False refuses one that does not exist yet."""
        return open_from_settings(self.settings, self.text_embedder.model_id,
                                  self.image_embedder.model_id if self.image_embedder else None, location, create)

    def assistant(self, kb: KnowledgeBaseStore) -> Assistant:
        retriever = Retriever(kb, self.text_embedder, self.image_embedder, self.settings.retrieval_mode)
        return Assistant(self.settings, retriever, self.generator)
