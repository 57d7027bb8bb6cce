"""Explore: the knowledge base seen as vectors, for the browser app (rag.explore does the work).

- the map of every passage, kept per knowledge base, projection and generation (UMAP takes a while), with a
  question, typed here or the last one asked in Chat, drawn on it beside its retrieved passages;
- word vectors trained in the background with progress, then neighbours, analogies and intrinsic scores;
- the similarity playground;
- zero-shot image tags, recomputed in the background when the labels change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from rag.components import Models
from rag.conversations import Conversations
from rag.errors import LoupeError
from rag.explore import image_tags, word_vectors
from rag.explore.figures import heatmap_figure, map_figure
from rag.explore.projection import ChunkMap, PlacedQuestion, build_map, place_question
from rag.explore.similarity import check_texts, cosine_matrix, polysemy_note, word_vector_matrix
from rag.records import ChunkRecord
from rag.settings import Settings
from service.chat import Answers
from service.errors import ServiceError
from service.knowledge_bases import KnowledgeBases

logger = logging.getLogger(__name__)

TAGS_WAIT = image_tags.WAITING_FOR_CLIP


@dataclass
class Job:
    """A piece of background work and how far it got: progress 0..1, then done, or failed with a message."""

    progress: float = 0.0
    done: bool = False
    error: str = ""
    result: object = None


class BackgroundJobs:
    """One job per key at a time, each on a daemon thread; a failed job keeps its message for the page."""

    def __init__(self) -> None:
        self._jobs: dict[tuple, Job] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: tuple, work: Callable[[Job], object], restart: bool = False) -> Job:
        """The running job of `key`, or a new one; a finished one is started afresh only with `restart`."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and (not job.done or not restart):
                return job
            job = self._jobs[key] = Job()
        threading.Thread(target=self._run, args=(key, job, work), daemon=True, name=f"explore-{key[0]}").start()
        return job

    def _run(self, key: tuple, job: Job, work: Callable[[Job], object]) -> None:
        try:
            job.result = work(job)
        except LoupeError as error:  # the user can act on it: the page shows its message
            job.error = str(error)
        except Exception:  # a bug: its traceback to the log, a line without details to the page
            logger.exception("explore: %s failed", key[0])
            job.error = f"Loupe failed to finish the {key[0]} (see the server log)"
        finally:
            job.progress, job.done = 1.0, True


class Explore:
    def __init__(self, settings: Settings, models: Models, knowledge_bases: KnowledgeBases, answers: Answers,
                 conversations: Conversations) -> None:
        self.settings = settings
        self.models = models
        self.knowledge_bases = knowledge_bases
        self.answers = answers
        self.conversations = conversations
        self.jobs = BackgroundJobs()
        self._maps: dict[tuple[str, str], tuple[int, ChunkMap]] = {}
        self._reference_words: dict[str, np.ndarray] = {}  # the text embedder's vectors of the intrinsic sets' words
        self._trained: dict[str, set[str]] = {}  # per knowledge base, the architectures a user has trained
        self._said_tags_wait: set[str] = set()  # knowledge bases whose images the log said wait for CLIP
        self._lock = threading.Lock()

    def _name(self, kb: str | None) -> str:
        return kb or self.knowledge_bases.default

    # --- the map ------------------------------------------------------------------------------
    def chunk_map(self, kb: str | None, method: str = "pca") -> ChunkMap:
        """The map of a knowledge base as it is now (kept until its generation changes)."""
        name, store = self._name(kb), self.knowledge_bases.open(kb)
        generation = store.generation
        with self._lock:
            kept = self._maps.get((name, method))
        if kept and kept[0] == generation:
            return kept[1]
        chunk_map = build_map(store, method)
        with self._lock:
            self._maps[(name, method)] = (generation, chunk_map)
        return chunk_map

    def place(self, kb: str | None, chunk_map: ChunkMap, question: str, k: int | None = None) -> PlacedQuestion:
        """A question and its passages as Chat retrieves them (the knowledge base's own Retriever)."""
        question = " ".join(str(question or "").split())
        if not question:
            raise ServiceError("type a question to draw it on the map")
        if len(question) > self.settings.max_question_chars:
            raise ServiceError(f"the question is longer than {self.settings.max_question_chars} characters")
        k, _ = self.answers.check_options(k, None)
        retriever = self.knowledge_bases.assistant(kb).retriever
        vector = retriever.embed_query(question)
        hits = [(p.chunk.id, p.score) for p in retriever.search(question, k, vector=vector)]
        return place_question(chunk_map, self.knowledge_bases.open(kb), question, vector[None, :], hits)

    def map_figure(self, kb: str | None, method: str = "pca", question: str = "",
                   k: int | None = None) -> tuple[go.Figure, ChunkMap, PlacedQuestion | None]:
        chunk_map = self.chunk_map(kb, method)
        placed = self.place(kb, chunk_map, question, k) if str(question or "").strip() else None
        return map_figure(chunk_map, placed), chunk_map, placed

    def last_chat_question(self, kb: str | None, session: str | None) -> str:
        """The last question this browser asked in Chat of `kb`, as it was searched (after a follow-up rewrite)."""
        turns = self.conversations.turns(session, self._name(kb), last=1) if session else []
        if not turns:
            raise ServiceError("no question asked in Chat of this knowledge base yet")
        return turns[-1].searched or turns[-1].question

    def passage(self, kb: str | None, chunk_id: int) -> list[tuple[ChunkRecord, bool]]:
        return self.answers.passage(kb, chunk_id)

    # --- word vectors -------------------------------------------------------------------------
    def _words_key(self, kb: str | None, architecture: str) -> tuple:
        store = self.knowledge_bases.open(kb)
        return ("word vectors", self._name(kb), word_vectors.check_architecture(architecture), store.generation)

    def train_words(self, kb: str | None, architecture: str = "skipgram") -> Job:
        """Word vectors for the knowledge base as it is now: loaded from its cache, else trained in the
        background. The job's key holds the generation: a changed knowledge base trains afresh."""
        store = self.knowledge_bases.open(kb)

        def work(job: Job):
            return word_vectors.load_or_train(store, architecture, lambda done: setattr(job, "progress", done))

        job = self.jobs.start(self._words_key(kb, architecture), work)
        with self._lock:
            self._trained.setdefault(self._name(kb), set()).add(architecture)
        return job

    def documents_changed(self, kb: str | None) -> dict[str, Job]:
        """After an ingest or a deletion: the word vectors a user trained are trained again for the knowledge base
        as it is now, and images without tags tagged, in the background. Returns the training jobs by
        architecture."""
        if self.tags_available:
            self.tags_of(kb)  # starts the tagging when some tags are missing or stale
        with self._lock:
            trained = sorted(self._trained.get(self._name(kb), ()))
        return {architecture: self.train_words(kb, architecture) for architecture in trained}

    def documents_deleted(self, kb: str | None) -> None:
        """After a deletion, whichever surface made it: documents_changed, whose failure is logged, not raised (the
        document is gone whatever follows)."""
        try:
            self.documents_changed(kb)
        except Exception:
            logger.exception("after deleting a document of %s", self._name(kb))

    def documents_added(self, kb: str | None) -> dict[str, Job]:
        """After an ingest (browser, REST or Gradio API) or after waiting images got their CLIP vectors: their tags
        now, in the caller's thread, so an ingest returns with its images tagged; then documents_changed. Without
        CLIP the images wait for their tags, and the log says so once per knowledge base."""
        store = self.knowledge_bases.open(kb)
        if self.tags_available:
            image_tags.tag_stored_images(store, self.models.image_embedder, self.settings.image_labels)
        elif self._name(kb) not in self._said_tags_wait and store.images_waiting():
            self._said_tags_wait.add(self._name(kb))
            logger.warning("%s: %s", self._name(kb), TAGS_WAIT)
        return self.documents_changed(kb)

    def word_vectors(self, kb: str | None, architecture: str = "skipgram"):
        job = self.jobs.get(self._words_key(kb, architecture))
        if job is None:  # trained by an earlier run of the app, or by the CLI: the cache has them
            vectors = word_vectors.cached(self.knowledge_bases.open(kb), architecture)
            if vectors is not None:
                return vectors
        if job is None or not job.done:
            raise ServiceError("the word vectors are not ready: train them first (Train word vectors)")
        if job.error:
            raise ServiceError(job.error)
        return job.result

    def neighbours(self, kb: str | None, word: str, k: int = 10,
                   architecture: str = "skipgram") -> list[word_vectors.WordScore]:
        return word_vectors.neighbours(self.word_vectors(kb, architecture), word, _count(k))

    def analogy(self, kb: str | None, a: str, b: str, c: str, k: int = 10,
                architecture: str = "skipgram") -> list[word_vectors.WordScore]:
        return word_vectors.analogy(self.word_vectors(kb, architecture), a, b, c, _count(k))

    def intrinsic(self, kb: str | None, architecture: str = "skipgram") -> list[dict]:
        """The word vectors' intrinsic scores beside the text embedder's (its word vectors kept per process)."""
        embedder = self.models.text_embedder

        def reference(words: list[str]) -> np.ndarray:
            missing = [w for w in words if w not in self._reference_words]
            if missing:
                self._reference_words.update(zip(missing, embedder.embed(missing, self.settings.embed_batch_size)))
            return np.stack([self._reference_words[w] for w in words])

        return word_vectors.intrinsic(self.word_vectors(kb, architecture), reference)

    # --- similarity ---------------------------------------------------------------------------
    def similarity(self, texts: list[str], kb: str | None = None,
                   architecture: str = "skipgram") -> tuple[go.Figure, go.Figure | None, str]:
        """The text embedder's heatmap, the word vectors' beside it (when trained), and the polysemy line."""
        texts = check_texts(texts)
        contextual = cosine_matrix(self.models.text_embedder, texts)
        try:
            vectors = self.word_vectors(kb, architecture)
        except ServiceError:
            vectors = None
        note = polysemy_note(texts, contextual, vectors)
        embedder_figure = heatmap_figure(contextual, texts,
                                         f"Contextual: {self.models.text_embedder.model_id.name} (each text whole)")
        if vectors is None:
            return embedder_figure, None, note + ("\n\nTrain the word vectors (above) to see word2vec's matrix beside "
                                                  "this one.")
        words = word_vector_matrix(vectors, texts)
        unknown = sorted({w for ws in words.unknown for w in ws})
        if unknown:
            note += f"\n\nword2vec does not know (left out of its means): {', '.join(unknown[:20])}"
        word_figure = heatmap_figure(words.matrix, texts, "Context-free: word2vec (mean of its words' vectors)")
        return embedder_figure, word_figure, note

    # --- image tags ---------------------------------------------------------------------------
    @property
    def tags_available(self) -> bool:
        return self.models.image_embedder is not None

    def labels(self, kb: str | None) -> list[str]:
        """The knowledge base's own labels (the default ones are the `image_labels` setting)."""
        return image_tags.own_labels(self.knowledge_bases.open(kb))

    def default_labels(self) -> list[str]:
        return image_tags.parse_labels(self.settings.image_labels)

    def set_labels(self, kb: str | None, text: str) -> Job | None:
        """Keep the knowledge base's own labels with it and re-tag its images in the background (with CLIP)."""
        store = self.knowledge_bases.open(kb)
        image_tags.set_own_labels(store, image_tags.parse_labels(text))
        return self.retag(kb) if self.tags_available else None

    def retag(self, kb: str | None) -> Job:
        """Tag the images that have no tags for the current labels, in the background: after a change of labels
        every image, after an ingest the new ones. One job per label list at a time; a finished one runs again."""
        store = self.knowledge_bases.open(kb)
        labels = image_tags.label_list(self.settings.image_labels, store)

        def work(job: Job):
            return image_tags.tag_images(store, self.models.image_embedder, labels,
                                         lambda done: setattr(job, "progress", done))

        return self.jobs.start(("image tags", self._name(kb), *labels), work, restart=True)

    def tags_of(self, kb: str | None) -> dict[int, list[image_tags.Tag]]:
        """The tags saved for the knowledge base's images with its current labels (read from the knowledge base:
        another server may have changed them), by image id, for other views (the gallery, the library, image
        search). Never computed here: when some are missing or stale, tagging starts in the background and the
        images tagged so far are returned."""
        if not self.tags_available:
            return {}
        store = self.knowledge_bases.open(kb)
        labels = image_tags.label_list(self.settings.image_labels, store)
        tags, current = image_tags.saved_tags(store, self.models.image_embedder, labels)
        if not current:
            self.retag(kb)
        return tags

    def tags_by_document(self, kb: str | None) -> dict[int, list[image_tags.Tag]]:
        """Each document's image tags, one per label at its best score, best first (the library's column)."""
        tags = self.tags_of(kb)
        if not tags:
            return {}
        best: dict[int, dict[str, float]] = {}
        for image in image_tags.all_images(self.knowledge_bases.open(kb)):
            labels = best.setdefault(image.document_id, {})
            for tag in tags.get(image.id, []):
                labels[tag.label] = max(tag.score, labels.get(tag.label, -1.0))
        return {document_id: [image_tags.Tag(label, score) for label, score in
                              sorted(labels.items(), key=lambda item: -item[1])]
                for document_id, labels in best.items() if labels}

    def tagged_images(self, kb: str | None, search: str = "") -> list[image_tags.TaggedImage]:
        """Every image with its tags (computed now when the cache is stale), or those whose tags match `search`."""
        if not self.tags_available:
            raise ServiceError(TAGS_WAIT)
        store = self.knowledge_bases.open(kb)
        labels = image_tags.label_list(self.settings.image_labels, store)
        tags = image_tags.refresh_tags(store, self.models.image_embedder, labels)
        images = image_tags.tagged_images(store, tags)
        return image_tags.search_tags(images, search) if str(search or "").strip() else images


def _count(k: int | float | None) -> int:
    count = int(k or 10)
    if not 1 <= count <= 100:
        raise ServiceError("ask for between 1 and 100 words")
    return count
