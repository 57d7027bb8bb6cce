"""What the browser app, the Gradio API, the REST API and the OpenAI-compatible API do, with no UI in it.

The service is split by domain, each part a class of its own:
- `knowledge_bases.KnowledgeBases`: open each knowledge base once, create and delete them, list documents;
- `uploads.Uploads`: check, stage and ingest uploaded files, reporting each file's stage;
- `chat.Answers`: answer questions (follow-ups rewritten with the conversation), keep the chat history;
- `images.Images`: image search and the display copies the web server may serve;
- `explore.Explore`: the knowledge base seen as vectors (map, word vectors, similarity, image tags);
- `embedding.EmbedderJobs`: fine-tune the text embedder on a knowledge base, or re-embed one, in the background.

`LoupeService` wires them to one set of models and gives the web surfaces one object with the verbs they share;
UI-only work (a passage in context, live ingest progress) goes to the parts themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rag.answering import Answer
from rag.components import Models
from rag.conversations import Conversations, Turn
from rag.followups import Rewrite
from rag.library import Library
from rag.records import DocumentInfo
from rag.settings import Settings
from rag.store import KnowledgeBase
from service.chat import MAX_K, Answers, answer_meta
from service.embedding import EmbedderJobs
from service.errors import ServiceError
from service.explore import Explore
from service.images import ImageResult, Images
from service.knowledge_bases import KnowledgeBases
from service.staging import inside, over_upload_limit, recover_uploads, safe_upload_name
from service.uploads import FileRow, Uploads

__all__ = ["MAX_K", "Answers", "Explore", "FileRow", "ImageResult", "Images", "KnowledgeBases", "LoupeService",
           "ServiceError", "Uploads", "answer_meta", "inside", "over_upload_limit", "recover_uploads",
           "safe_upload_name"]

CONVERSATIONS_FILE = "conversations.sqlite3"


class LoupeService:
    def __init__(self, settings: Settings, models: Models) -> None:
        self.settings = settings
        self.models = models
        self.knowledge_bases = KnowledgeBases(settings, models)
        self.conversations = Conversations(self.library.root / CONVERSATIONS_FILE)
        self.uploads = Uploads(settings, models, self.knowledge_bases)
        self.answers = Answers(settings, self.knowledge_bases, self.conversations)
        self.images = Images(models, self.knowledge_bases)
        self.explore = Explore(settings, models, self.knowledge_bases, self.answers, self.conversations)
        self.uploads.on_documents_added = self.explore.documents_added  # every ingest, whichever surface
        self.images.tags_of = self.explore.tags_of
        self.embedding = EmbedderJobs(settings, self.knowledge_bases)

    # --- knowledge bases and documents ----------------------------------------------------------
    @property
    def library(self) -> Library:
        return self.knowledge_bases.library

    @property
    def default_kb(self) -> str:
        return self.knowledge_bases.default

    def kb_names(self) -> list[str]:
        return self.knowledge_bases.names()

    def kb(self, name: str | None = None) -> KnowledgeBase:
        return self.knowledge_bases.open(name)

    def create_kb(self, name: str) -> str:
        return self.knowledge_bases.create(name)

    def delete_kb(self, name: str) -> None:
        self.knowledge_bases.delete(name)

    def documents(self, kb: str | None = None) -> list[DocumentInfo]:
        return self.knowledge_bases.documents(kb)

    def delete_document(self, kb: str | None, document_id: int) -> DocumentInfo:
        """Delete a document and every copy of it Loupe made: its uploaded file, the display copies of its
        images (unless another document still has the image) and its passages in the chat history."""
        info, gone_images = self.knowledge_bases.delete_document(kb, document_id)
        self.images.forget(gone_images)
        self.conversations.forget_document(kb or self.default_kb, info.id, info.name, gone_images)
        self.explore.documents_deleted(kb)  # word vectors retrained, whichever surface deleted it
        return info

    def ingest(self, kb: str | None, uploads: list[tuple[str, Path]],
               on_change: Callable[[list[FileRow]], None] | None = None) -> list[FileRow]:
        return self.uploads.ingest(kb, uploads, on_change)

    # --- answers ------------------------------------------------------------------------------
    @property
    def chat_concurrency(self) -> int:
        return self.answers.concurrency

    def chat(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None,
             session: str | None = None, stop: threading.Event | None = None) -> Iterator[Rewrite | str | Answer]:
        return self.answers.chat(kb, question, k, mode, session, stop)

    def answer_with_history(self, kb: str | None, question: str, turns: Sequence[Turn], k: int | None = None,
                            mode: str | None = None) -> Iterator[Rewrite | str | Answer]:
        return self.answers.answer_with_history(kb, question, turns, k, mode)

    def ask(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        return self.answers.ask(kb, question, k, mode)

    # --- images -------------------------------------------------------------------------------
    def search_images(self, kb: str | None, query: str, k: int = 8) -> list[ImageResult]:
        return self.images.search(kb, query, k)

    def similar_images(self, kb: str | None, data: bytes, k: int = 8) -> list[ImageResult]:
        return self.images.similar(kb, data, k)

    @property
    def on_display_removed(self) -> Callable[[str], None]:
        return self.images.on_display_removed

    @on_display_removed.setter
    def on_display_removed(self, callback: Callable[[str], None]) -> None:
        self.images.on_display_removed = callback

    def close(self) -> None:
        self.knowledge_bases.close()
        self.conversations.close()
        self.images.close()
