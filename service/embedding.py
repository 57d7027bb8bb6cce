"""Embedder jobs run from the app: fine-tune the text embedder on a knowledge base's own documents (rag.finetune),
and re-embed a knowledge base with another model (rag.reembed).

Each job runs in a background thread of its own, one job at a time per knowledge base, so it goes on when the page
that started it closes; a page follows it (`follow`) with its phase, its steps and the time left. Fine-tuned models
are kept beside the knowledge bases, in FINETUNED_DIR, and named after their knowledge base and the time; the
re-embed form offers them by name. The web page never names a server folder: only those names and model ids.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rag.errors import Busy, LoupeError
from rag.finetune import REPORT_FILE, FinetuneOptions, FinetuneReport, finetune
from rag.reembed import ReembedReport, reembed
from rag.settings import EMBEDDERS, Settings
from rag.store_api import is_database_url
from service.errors import ServiceError
from service.knowledge_bases import KnowledgeBases

logger = logging.getLogger(__name__)

FINETUNED_DIR = ".finetuned"  # beside the knowledge bases; a dot no knowledge base name may hold
MAX_EPOCHS = 5
# A model id as the hub writes them ("sentence-transformers/all-MiniLM-L6-v2"): never a folder of the server, which
# the web page must not be able to point a model loader at (the CLI takes folders).
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


@dataclass
class Job:
    """One fine-tune or re-embed, as the page shows it."""

    kind: str  # "fine-tune" or "re-embed"
    kb: str
    phase: str = "starting"
    done: int = 0
    total: int = 0
    seconds_left: float = math.nan  # unknown until a step is timed
    report: FinetuneReport | ReembedReport | None = None
    model_name: str = ""  # a fine-tune's new model, by the name the re-embed form offers it
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        return self.report is None and not self.error

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, done: int, total: int, seconds_left: float) -> None:
        self.done, self.total, self.seconds_left = done, total, seconds_left

    def enter(self, phase: str) -> None:
        self.phase, self.done, self.total, self.seconds_left = phase, 0, 0, math.nan


class EmbedderJobs:
    def __init__(self, settings: Settings, knowledge_bases: KnowledgeBases) -> None:
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # the latest job of each knowledge base

    @property
    def models_folder(self) -> Path:
        return self.knowledge_bases.library.root / FINETUNED_DIR

    def finetuned_models(self) -> list[str]:
        """The fine-tuned models kept beside the knowledge bases, newest first."""
        folder = self.models_folder
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if (p / REPORT_FILE).is_file()]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    @staticmethod
    def is_model_id(name: str) -> bool:
        """Whether `name` reads as a model id, which the page may offer and take (a folder never does)."""
        return bool(_MODEL_ID.fullmatch(name or ""))

    def job(self, kb: str | None) -> Job | None:
        """A copy of the knowledge base's latest job, if it had one since the app started."""
        with self._lock:
            job = self._jobs.get(kb or self.knowledge_bases.default)
        return replace(job) if job else None

    def finetune(self, kb: str | None, epochs: int = 1) -> Job:
        """Start fine-tuning the text embedder on the knowledge base's chunks; the new model is kept in
        FINETUNED_DIR under a new name."""
        name = kb or self.knowledge_bases.default
        if not 1 <= int(epochs) <= MAX_EPOCHS:
            raise ServiceError(f"epochs must be between 1 and {MAX_EPOCHS}")
        folder = self._folder(name, "fine-tune the embedder")
        model_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = self.models_folder / model_name
        options = FinetuneOptions(epochs=int(epochs))

        def work(job: Job) -> FinetuneReport:
            self.models_folder.mkdir(parents=True, exist_ok=True)
            return finetune(folder, out, self.settings, options, job.step, job.enter)

        return self._start(Job("fine-tune", name, model_name=model_name), work)

    def reembed(self, kb: str | None, model: str, embedder: str = "sbert", dims: int = 0) -> Job:
        """Start re-embedding every chunk of the knowledge base with `model` (a fine-tuned model's name or a model
        id), the embedder backend `embedder` and `dims` dimensions (0: all). The old vectors answer questions
        until the new ones are complete (rag.reembed)."""
        name = kb or self.knowledge_bases.default
        settings = self._reembed_settings(model, embedder, dims)
        folder = self._folder(name, "re-embed it")

        same_model = (settings.text_model, settings.embedder) == (self.settings.text_model, self.settings.embedder)
        loaded = self.knowledge_bases.models.text_embedder if same_model and not self.settings.embed_dims else None

        def work(job: Job) -> ReembedReport:
            return reembed(folder, settings, job.step, embedder=loaded, on_phase=job.enter,
                           release=lambda: self.knowledge_bases.release(name))

        return self._start(Job("re-embed", name), work)

    def follow(self, job: Job, interval: float = 0.5) -> Iterator[Job]:
        """Copies of `job` as it goes, every `interval` seconds, the last one finished."""
        while True:
            current = self.job(job.kb)
            if current is None or current.started != job.started:  # replaced: this one is long over
                return
            yield current
            if not current.running:
                return
            threading.Event().wait(interval)

    def _reembed_settings(self, model: str, embedder: str, dims: int) -> Settings:
        model = str(model or "").strip()
        if embedder not in EMBEDDERS:
            raise ServiceError(f"the embedder must be one of {', '.join(EMBEDDERS)}")
        if int(dims) < 0:
            raise ServiceError("the dimensions must be 0 (all of them) or more")
        if model in self.finetuned_models():
            model = str(self.models_folder / model)
        elif not self.is_model_id(model):
            raise ServiceError(f"{model[:60]!r} is neither a fine-tuned model nor a model id such as "
                               "sentence-transformers/all-MiniLM-L6-v2 (a folder of the server is for the command "
                               "line: python -m rag reembed --text-model DIR)")
        return self.settings.with_(text_model=model, embedder=embedder, embed_dims=int(dims))

    def _folder(self, name: str, doing: str) -> Path:
        location = self.knowledge_bases.library.path(name)  # refuses a malformed name
        if is_database_url(location):
            raise ServiceError(f"Loupe can {doing} only for a knowledge base kept in a folder; '{name}' is in "
                               "PostgreSQL")
        if name != self.knowledge_bases.default and not self.knowledge_bases.library.exists(name):
            raise ServiceError(f"no knowledge base named {name!r}")
        return Path(location)

    def _start(self, job: Job, work: Callable[[Job], Any]) -> Job:
        with self._lock:
            running = self._jobs.get(job.kb)
            if running is not None and running.running:
                raise Busy(f"'{job.kb}' is running a {running.kind} already; wait for it to finish")
            self._jobs[job.kb] = job
        threading.Thread(target=self._run, args=(job, work), name=f"loupe-{job.kind}", daemon=True).start()
        return replace(job)

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any]) -> None:
        try:
            job.report = work(job)
        except LoupeError as error:  # the user's to fix: said as it is
            job.error = str(error)
        except Exception:  # a bug: the page says where to look
            logger.exception("%s of '%s' failed", job.kind, job.kb)
            job.error = f"Loupe failed to {job.kind} '{job.kb}' (see the server log)"
