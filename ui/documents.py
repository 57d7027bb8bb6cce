"""The Documents tab: upload files with live progress, the library, deleting a document (asked to confirm),
creating or deleting knowledge bases, and the embedder panel (ui.embedder: fine-tune, re-embed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from rag.explore.image_tags import Tag
from rag.records import DocumentInfo
from rag.wording import counted
from ui import views
from ui.chat import failure_note
from ui.embedder import EmbedderPanel
from ui.page import PRIVATE, Page
from webapi import gradio_error

logger = logging.getLogger(__name__)

INGEST = {"concurrency_limit": 2, "concurrency_id": "ingest", **PRIVATE}


LIBRARY_HEADERS = [*views.DOC_HEADERS, "Image tags"]
TAGS_SHOWN = 5  # a document's best tags in its row; the Explore tab shows every image's own


def library_rows(kb: str, documents: list[DocumentInfo], tags: dict[int, list[Tag]] | None = None,
                 clip_on: bool = True) -> list[list]:
    """The library's rows; the last cell is the document's image tags (Explore's), or why it has none yet."""
    tags = tags or {}
    return [[d.id, d.name, d.kind, d.pages, d.chunks, d.images, d.images_waiting, views.size_text(d.size_bytes),
             d.added_at.replace("T", " ").removesuffix("Z")[:16] + " UTC", tags_cell(d, tags.get(d.id), clip_on)]
            for d in documents]


def tags_cell(document: DocumentInfo, tags: list[Tag] | None, clip_on: bool) -> str:
    if tags:
        more = len(tags) - TAGS_SHOWN
        return ", ".join(t.label for t in tags[:TAGS_SHOWN]) + (f" (+{more})" if more > 0 else "")
    if not document.images:
        return ""
    return "waiting for CLIP" if not clip_on or document.images_waiting else "tagging…"


def document_picker(kb: str, documents: list[DocumentInfo]) -> gr.Dropdown:
    return gr.Dropdown(choices=[(f"{d.name} (id {d.id})", d.id) for d in documents], value=None)


class DocumentsTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        with gr.Tab("Documents", id="documents"):
            self.files = gr.File(label="Drop files here (PDF, Word, HTML, Markdown, text, images)", height=150,
                                 file_count="multiple", elem_id="upload")
            self.add = gr.Button("Add to knowledge base", variant="primary", elem_id="add-files")
            self.progress = gr.HTML(elem_id="progress")
            self.library = gr.Dataframe(headers=LIBRARY_HEADERS, label="Library — click a row to select it",
                                        interactive=False, elem_id="library")
            with gr.Row():
                self.doc_pick = gr.Dropdown(label="Document", choices=[], elem_id="doc-pick", scale=3)
                self.delete_doc = gr.Button("Delete document", variant="stop", elem_id="delete-doc", scale=1)
                self.embed = gr.Button("Re-embed waiting images", scale=1)
            with gr.Row(visible=False, elem_id="confirm-delete-doc") as self.confirm_row:
                self.confirm_text = gr.Markdown()
                self.confirm_delete = gr.Button("Yes, delete it", variant="stop", elem_id="confirm-delete", scale=0)
                self.cancel_delete = gr.Button("Cancel", elem_id="cancel-delete", scale=0)
            self.doc_message = gr.Markdown(elem_id="doc-message")
            with gr.Accordion("Knowledge bases", open=False):
                with gr.Row():
                    self.new_kb = gr.Textbox(label="New knowledge base", placeholder="letters, digits, - and _")
                    self.create_kb = gr.Button("Create and switch")
                with gr.Row():
                    self.confirm_kb = gr.Checkbox(
                        label="Yes, delete the selected knowledge base and all its documents")
                    self.drop_kb = gr.Button("Delete knowledge base", variant="stop")
                self.kb_message = gr.Markdown(elem_id="kb-message")
            self.embedder = EmbedderPanel(page)
        page.shows_documents(self.library, self.library_rows)
        page.shows_documents(self.doc_pick, document_picker)
        # what an upload or a deletion in the previous knowledge base said is not about this one
        page.shows_kb_state([self.progress, self.doc_message, self.confirm_row],
                            lambda kb, chats: ["", "", gr.Row(visible=False)])

    def library_rows(self, kb: str, documents: list[DocumentInfo]) -> list[list]:
        explore = self.page.service.explore
        try:
            tags = explore.tags_by_document(kb)
        except Exception:  # tags only add a column: a failure there must not hide the library
            logger.exception("Image tags for the library of %s failed", kb)
            tags = {}
        return library_rows(kb, documents, tags, explore.tags_available)

    def upload(self, paths: list[str] | None, kb: str) -> Iterator[list[Any]]:
        if not paths:
            raise gr.Error("Drop or choose files first.")
        received = self.page.received
        try:
            checked = [received.path(p) for p in paths]
        except Exception as error:
            raise gradio_error(error, "read the upload") from None
        try:
            yield from self.page.ingest(kb, [(p.name, p) for p in checked])
        finally:
            received.discard(checked)  # Loupe has its own copy now

    def select_row(self, evt: gr.SelectData) -> Any:
        """A click on a library row picks that document for deletion (the ID is the row's first cell)."""
        row = evt.row_value or []
        return gr.Dropdown(value=int(row[0])) if row else gr.skip()

    def ask_to_delete(self, document_id: int | None, kb: str) -> tuple:
        if document_id is None:
            raise gr.Error("Pick a document to delete.")
        name = next((d.name for d in self.page.service.documents(kb) if d.id == int(document_id)), None)
        if name is None:
            raise gr.Error("That document is no longer in the knowledge base.")
        return (gr.Row(visible=True), f"Delete **{views.plain(name)}** and its passages and images? "
                                      "This cannot be undone.")

    def remove(self, document_id: int | None, kb: str) -> tuple:
        if document_id is None:
            raise gr.Error("Pick a document to delete.")
        try:
            info = self.page.service.delete_document(kb, int(document_id))
        except Exception as error:
            raise gradio_error(error, "delete the document") from None
        done = (f"Deleted **{views.plain(info.name)}** (id {info.id}): {counted(info.chunks, 'passage')}, "
                f"{counted(info.images, 'image')}.")
        return gr.Row(visible=False), done, *self.page.documents_values(kb)

    def embed_waiting(self, kb: str) -> tuple:
        try:
            count = self.page.service.uploads.embed_waiting_images(kb)
        except Exception as error:
            return failure_note(error, "embed the images"), *self.page.documents_values(kb)
        return f"Embedded {count} waiting images.", *self.page.documents_values(kb)

    def make_kb(self, name: str, session_id: str | None, carried: str | None) -> tuple:
        name = str(name or "").strip()
        try:
            self.page.service.create_kb(name)
        except Exception as error:
            return failure_note(error, "create the knowledge base"), *[gr.skip()] * (2 + self._switched)
        return f"Created **{name}**.", self.page.picker(name), "", *self.page.switch_to(name, session_id, carried)

    def remove_kb(self, kb: str, confirmed: bool, session_id: str | None, carried: str | None) -> tuple:
        if not confirmed:
            return "Tick the box to confirm first.", gr.skip(), False, *[gr.skip()] * self._switched
        service = self.page.service
        try:
            service.delete_kb(kb)
        except Exception as error:
            return failure_note(error, "delete the knowledge base"), gr.skip(), False, *[gr.skip()] * self._switched
        return (f"Deleted knowledge base **{kb}**.", self.page.picker(service.default_kb), False,
                *self.page.switch_to(service.default_kb, session_id, carried))

    @property
    def _switched(self) -> int:
        return len(self.page.switch_outputs)

    def wire(self) -> None:
        page = self.page
        documents = page.documents_outputs
        # Gradio's status tracker would estimate an upload's time from the uploads before it (its queue's average
        # run of this event), whatever the files: the second upload showed the first one's time. The upload's own
        # bar (views.progress_html) tells the time so far and the files done instead.
        self.add.click(self.upload, [self.files, page.kb_pick], [self.progress, *documents], show_progress="hidden",
                       **INGEST).then(lambda: None, None, self.files, **PRIVATE)
        self.library.select(self.select_row, None, self.doc_pick, **PRIVATE)
        self.delete_doc.click(self.ask_to_delete, [self.doc_pick, page.kb_pick], [self.confirm_row, self.confirm_text],
                              **PRIVATE)
        self.cancel_delete.click(lambda: gr.Row(visible=False), None, self.confirm_row, **PRIVATE)
        self.confirm_delete.click(self.remove, [self.doc_pick, page.kb_pick],
                                  [self.confirm_row, self.doc_message, *documents], **PRIVATE)
        self.embed.click(self.embed_waiting, [page.kb_pick], [self.doc_message, *documents], **INGEST)
        self.create_kb.click(self.make_kb, [self.new_kb, page.session, page.chats],
                             [self.kb_message, page.kb_pick, self.new_kb, *page.switch_outputs], **PRIVATE)
        self.drop_kb.click(self.remove_kb, [page.kb_pick, self.confirm_kb, page.session, page.chats],
                           [self.kb_message, page.kb_pick, self.confirm_kb, *page.switch_outputs], **INGEST)
        self.embedder.wire()
