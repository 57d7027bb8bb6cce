"""What ties the tabs together: the components every tab shares, and the registries through which one tab's
event updates another tab's parts: the parts that show a knowledge base's documents (refreshed after an ingest
or a deletion) and the parts that show one knowledge base's state (set afresh when the knowledge base switches,
so nothing of the previous one stays on screen).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from rag.conversations import SESSION_PATTERN, new_session_id
from rag.records import DocumentInfo
from rag.wording import counted
from service import FileRow, LoupeService
from ui import views
from webapi import ReceivedFiles

PRIVATE = {"api_visibility": "private"}  # UI events: not part of the documented Gradio API

DocumentsRender = Callable[[str, list[DocumentInfo]], Any]


@dataclass
class BrowserChats:
    """The conversations a browser has had (their ids live in its localStorage) and the one it shows now.
    A conversation is a session id of rag.conversations whose messages belong to one knowledge base."""

    current: str
    ids: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, session: str | None, carried: str | None) -> BrowserChats:
        """From the session and the carrier's JSON (views.LOAD_JS); anything malformed is dropped."""
        try:
            ids = json.loads(carried or "{}").get("ids") or []
        except (ValueError, AttributeError):
            ids = []
        valid = [i for i in ids if isinstance(i, str) and SESSION_PATTERN.fullmatch(i)]
        current = session if isinstance(session, str) and SESSION_PATTERN.fullmatch(session) else new_session_id()
        return cls(current, list(dict.fromkeys([*valid, current])))

    def start(self) -> str:
        self.current = new_session_id()
        self.ids.append(self.current)
        return self.current

    def carried(self) -> str:
        return json.dumps({"current": self.current, "ids": self.ids})


SwitchRender = Callable[[str, BrowserChats], list[Any]]


class Page:
    """The components every tab shares, and the registries through which tabs update each other's parts."""

    def __init__(self, service: LoupeService, received: ReceivedFiles) -> None:
        self.service = service
        self.received = received
        self.session = gr.State(None)  # the conversation shown: a session id, from localStorage (views.LOAD_JS)
        # The browser's conversations as JSON (BrowserChats), mirrored into localStorage by views.KEEP_CHATS_JS.
        # Rendered (hidden by CSS), not visible=False: the page must see its changes.
        self.chats = gr.Textbox(elem_id="browser-chats", elem_classes="loupe-hidden", show_label=False,
                                container=False)
        self._documents: list[tuple[gr.components.Component, DocumentsRender]] = []
        self._switch: list[tuple[list[gr.components.Component], SwitchRender]] = []
        with gr.Row(equal_height=True):
            gr.Markdown("# Loupe\nAsk your documents: every answer shows the passages it comes from.", scale=3)
            self.kb_pick = gr.Dropdown(service.kb_names(), value=service.default_kb, label="Knowledge base",
                                       scale=1, elem_id="kb-pick")
        self.status = gr.Markdown(elem_id="kb-status")
        self.shows_documents(self.status, status_line)

    def shows_documents(self, component: gr.components.Component, render: DocumentsRender) -> None:
        """`component` shows `render(kb, documents)`, refreshed whenever the documents change."""
        self._documents.append((component, render))

    def shows_kb_state(self, components: list[gr.components.Component], render: SwitchRender) -> None:
        """`components` show the values of `render(kb, chats)`, set afresh when the knowledge base switches."""
        self._switch.append((components, render))

    @property
    def documents_outputs(self) -> list[gr.components.Component]:
        return [component for component, _ in self._documents]

    def documents_values(self, kb: str) -> list[Any]:
        documents = self.service.documents(kb)
        return [render(kb, documents) for _, render in self._documents]

    @property
    def switch_outputs(self) -> list[gr.components.Component]:
        return self.documents_outputs + [component for components, _ in self._switch for component in components]

    def switch_values(self, kb: str, chats: BrowserChats) -> list[Any]:
        return self.documents_values(kb) + [value for _, render in self._switch for value in render(kb, chats)]

    def picker(self, kb: str) -> gr.Dropdown:
        return gr.Dropdown(choices=self.service.kb_names(), value=kb)

    @property
    def switch_inputs(self) -> list[gr.components.Component]:
        return [self.kb_pick, self.session, self.chats]

    def switch_to(self, kb: str, session: str | None, carried: str | None) -> list[Any]:
        """The values of `switch_outputs` for `kb` (the inputs are `switch_inputs`)."""
        return self.switch_values(kb, BrowserChats.parse(session, carried))


    def ingest(self, kb: str, uploads: list[tuple[str, Path]]) -> Iterator[list[Any]]:
        """Ingest with live progress: yields [the progress table, *documents_outputs' values] as files move on
        (documents unchanged until the end)."""
        start = time.monotonic()
        rows: list[FileRow] = []
        for rows in self.service.uploads.ingest_live(kb, uploads):
            yield [views.progress_html(rows, time.monotonic() - start), *[gr.skip()] * len(self._documents)]
        yield [views.progress_html(rows, time.monotonic() - start), *self.documents_values(kb)]


def status_line(kb: str, documents: list[DocumentInfo]) -> str:
    waiting = sum(d.images_waiting for d in documents)
    passages, images = sum(d.chunks for d in documents), sum(d.images for d in documents)
    return (f"**Knowledge base:** `{kb}` · {counted(len(documents), 'document')} · {counted(passages, 'passage')} · "
            f"{counted(images, 'image')}" + (f" ({waiting} waiting for CLIP)" if waiting else ""))


