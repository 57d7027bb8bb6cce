"""The Chat tab: ask, watch the answer stream beside its sources, stop it, open a cited passage in context.

While an answer streams the question box is locked (it says so) and a Stop button takes Send's place. The answer's
events are read in a thread of their own (AnswerFeed), so a Stop ends the request at once, even while retrieval
is still working out the next event: the handler leaves with the answer marked as stopped and the page is ready
again, and the thread closes the answer stream at its next event. Stopped during retrieval, the stream is closed
before the generator is ever asked; stopped mid-answer, closing it ends the generation on the server at its next
step. (Gradio's `cancels` would close the handler from outside instead, but a piece already on its way to the page
could then overwrite the "stopped" mark.)
"""

from __future__ import annotations

import html
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict
from typing import Any

import gradio as gr

from rag.answering import Answer, Retrieved
from rag.conversations import Message
from rag.followups import Rewrite
from rag.settings import ANSWER_MODES
from service import answer_meta
from ui import views
from ui.page import PRIVATE, BrowserChats, Page
from webapi import user_message

logger = logging.getLogger(__name__)

ASK_PLACEHOLDER = "Ask a question… (Enter to send)"
BUSY_PLACEHOLDER = "Answering… press Stop to ask something else now."
SEARCHING = "_Searching the documents…_"


def failure_note(error: BaseException, doing: str) -> str:
    """A failed UI action as the page shows it: the translator's message (a bug logged, its text withheld),
    escaped for Markdown."""
    return f"⚠ {views.plain(user_message(error, doing))}"


def input_state(busy: bool) -> tuple[gr.Textbox, gr.Button, gr.Button]:
    """The question box, Send and Stop while an answer streams (busy: the question asked leaves the box) or not."""
    box = (gr.Textbox(value="", interactive=False, placeholder=BUSY_PLACEHOLDER) if busy else
           gr.Textbox(interactive=True, placeholder=ASK_PLACEHOLDER))
    return box, gr.Button(visible=not busy), gr.Button(visible=busy)


def gallery(images: list[tuple[str, str]]) -> gr.Gallery:
    """The answer's images; the gallery shows only when there are some."""
    return gr.Gallery(value=images, visible=bool(images))


class AnswerFeed:
    """One answer's events, read from the service in a thread of its own ("loupe-answer") and handed over one at a
    time, so that `stop()` ends the iteration at once, even while the thread is still inside retrieval. The thread
    asks for the next event only once the reader has taken the last one (the stream keeps the pace of the page, as
    if the reader ran it), and after a stop it closes the stream instead: a Stop during retrieval closes it at the
    Retrieved event, before the generator is asked for anything; a Stop mid-answer ends the generation at its next
    step. A failure in the stream is raised again in the reader."""

    _END = object()

    def __init__(self, events: Iterator[Any], stop: threading.Event) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._taken = threading.Semaphore(0)  # released when the reader wants the next event, or on a stop
        self._stopped = stop  # the service sees it too: a stopped answer is not stored
        threading.Thread(target=self._pump, args=(events,), name="loupe-answer", daemon=True).start()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()
        self._queue.put(self._END)  # wakes a reader waiting for the next event
        self._taken.release()  # and the thread waiting for the reader

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END or self.stopped:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            self._taken.release()

    def _pump(self, events: Iterator[Any]) -> None:
        try:
            with closing(events):  # leaving early closes the stream here, in the thread that runs it
                for event in events:
                    self._queue.put(event)
                    self._taken.acquire()
                    if self.stopped:
                        return
        except Exception as error:  # handed to the reader, which says it in the chat (and logs a bug)
            if self.stopped:  # no reader any more
                logger.exception("an answer failed after it was stopped")
            self._queue.put(error)
        finally:
            self._queue.put(self._END)


class ChatTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self._feeds: dict[str, AnswerFeed] = {}  # the running answer of each page (its Gradio session)
        service, settings = page.service, page.service.settings
        with gr.Tab("Chat", id="chat"):
            with gr.Row():
                with gr.Column(scale=3, min_width=300):
                    # no label: a floating "Chat" label would sit over the answers once they scroll
                    self.chatbot = gr.Chatbot(show_label=False, height=460, elem_id="chatbot", feedback_options=None,
                                              buttons=["copy"], placeholder="Ask a question about your documents.")
                    with gr.Row(elem_id="question-row"):
                        self.question = gr.Textbox(placeholder=ASK_PLACEHOLDER, show_label=False, scale=5,
                                                   elem_id="question", autofocus=True)
                        self.send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="send")
                        self.stop = gr.Button("⏹ Stop", variant="stop", scale=1, min_width=90, elem_id="stop",
                                              visible=False)
                    with gr.Row():
                        self.mode = gr.Radio(list(ANSWER_MODES), value=settings.answer_mode, label="Answer mode",
                                             elem_id="mode", scale=3)
                        self.top_k = gr.Slider(1, 20, value=settings.top_k, step=1, label="Top-k passages", scale=2)
                        self.new_chat = gr.Button("New chat", size="sm", scale=1, min_width=100, elem_id="new-chat")
                    gr.Markdown(views.mode_help(), elem_id="mode-help", elem_classes="mode-help")
                    with gr.Accordion("Your conversations here (this browser)", elem_id="conversations-box"):
                        self.conversation_list = gr.Radio([], show_label=False, elem_id="conversations")
                        self.delete_chat = gr.Button("Delete the conversation shown", size="sm", variant="stop",
                                                     elem_id="delete-conversation")
                with gr.Column(scale=2, min_width=300):
                    self._build_empty_banner()
                    self.note = gr.Markdown(elem_id="answer-note")
                    self.context = gr.HTML(elem_id="context")
                    self.sources = gr.HTML(elem_id="sources")
                    self.gallery = gr.Gallery(label="Images from the answer", columns=3, height=220,
                                              elem_id="answer-images", visible=False)
                    clip_note = views.clip_note_html(service.models.clip_status)
                    gr.HTML(clip_note, visible=bool(clip_note), elem_id="clip-note-chat")
                    # A citation link or a source card (views.PAGE_JS) clicks this with the source's number.
                    self.cite_number = gr.Number(0, visible=False)
                    self.cite_open = gr.Button("Open source", elem_id="cite-open", elem_classes="loupe-hidden")
            self.sources_state = gr.State([])
        self.panel = [self.sources, self.sources_state, self.note, self.gallery, self.context]
        # everything that shows one conversation: which one, the list, the chat and the last answer's panel
        self.shown = [page.session, page.chats, self.conversation_list, self.chatbot, *self.panel]
        page.shows_kb_state(self.shown, self.conversation_state)

    def _build_empty_banner(self) -> None:
        with gr.Column(visible=False, elem_id="empty-banner") as banner:
            gr.Markdown("### This knowledge base is empty\nLoad a small sample knowledge base (a user guide, an FAQ, "
                        "a PDF and a diagram about Loupe) to try it at once, or add your own files in the "
                        "**Documents** tab.")
            self.sample_button = gr.Button("Load the sample knowledge base", variant="primary")
            self.sample_progress = gr.HTML()
        self.page.shows_documents(banner, lambda kb, documents: gr.Column(visible=not documents))

    def restore_mode(self, mode: str | None) -> str:
        """The answer mode the browser kept (views.LOAD_JS), when it is still one Loupe has."""
        return mode if mode in ANSWER_MODES else self.page.service.settings.answer_mode

    def _messages(self, session: str, kb: str) -> list[Message]:
        return [m for m in self.page.service.conversations.messages(session) if m.kb == kb]

    def _latest(self, kb: str, chats: BrowserChats) -> str | None:
        """The browser's most recent conversation in `kb`."""
        return next((i for i in reversed(chats.ids) if self._messages(i, kb)), None)

    def conversation_list_of(self, kb: str, chats: BrowserChats) -> gr.Radio:
        """The browser's conversations in `kb`, newest first, each named by its first question."""
        choices = []
        for conversation in reversed(chats.ids):
            messages = self._messages(conversation, kb)
            if messages:
                first = " ".join(messages[0].content.split())
                choices.append((first[:60] + ("…" if len(first) > 60 else ""), conversation))
        shown = chats.current if any(value == chats.current for _, value in choices) else None
        return gr.Radio(choices=choices, value=shown)

    def conversation_state(self, kb: str, chats: BrowserChats) -> list[Any]:
        """The values of `self.shown` in `kb`: the conversation shown stays when it belongs to `kb` (it has
        messages there, or none yet and was started there); else the browser's latest one there; else the one
        shown when it is still empty, or a new one."""
        conversations = self.page.service.conversations
        current = chats.current
        empty = not conversations.messages(current)
        started_here = empty and conversations.kb_of(current) == kb
        if not started_here and not self._messages(current, kb):
            chats.current = self._latest(kb, chats) or (current if empty else chats.start())
        return self._show(kb, chats)

    def _show(self, kb: str, chats: BrowserChats) -> list[Any]:
        """The values of `self.shown` for the conversation `chats.current`, now asked in `kb`."""
        self.page.service.conversations.set_kb(chats.current, kb)
        return [chats.current, chats.carried(), self.conversation_list_of(kb, chats),
                *self.conversation(kb, chats.current)]

    def new_conversation(self, kb: str, session: str | None, carried: str | None) -> list[Any]:
        chats = BrowserChats.parse(session, carried)
        if self.page.service.conversations.messages(chats.current):  # an empty one is reused, not multiplied
            chats.start()
        return self._show(kb, chats)

    def open_conversation(self, kb: str, chosen: str | None, carried: str | None) -> list[Any]:
        return self.conversation_state(kb, BrowserChats.parse(chosen, carried))

    def delete_conversation(self, kb: str, session: str | None, carried: str | None) -> list[Any]:
        chats = BrowserChats.parse(session, carried)
        self.page.service.conversations.clear(chats.current)
        chats.ids.remove(chats.current)
        chats.current = self._latest(kb, chats) or chats.start()
        return self.conversation_state(kb, chats)

    def refresh_list(self, kb: str, session: str | None, carried: str | None) -> gr.Radio:
        return self.conversation_list_of(kb, BrowserChats.parse(session, carried))

    def conversation(self, kb: str, session: str | None) -> list[Any]:
        """The chat and the last answer's panel of a session in one knowledge base."""
        messages = self._messages(session, kb) if session else []
        history = [{"role": m.role, "content": views.answer_markdown(m.content, m.meta) if m.role == "assistant"
                    else m.content} for m in messages]
        last = next((m.meta for m in reversed(messages) if m.role == "assistant"), {})
        cards, found, note, images = views.panel(last, self.page.service.images.display_copy)
        return [history, cards, found, note, gallery(images), ""]

    def respond(self, message: Any, history: list[dict], session_id: str | None, kb: str, k: float,
                answer_mode: str, request: gr.Request) -> Iterator[tuple]:
        asked = views.text_of(message).strip()
        if not asked:
            raise gr.Error("Type a question first.")
        history = [{"role": m["role"], "content": views.text_of(m["content"])} for m in history or []]
        history += [{"role": "user", "content": asked}, {"role": "assistant", "content": SEARCHING}]
        page_session = request.session_hash or ""
        stop = threading.Event()
        events = self.page.service.chat(kb, asked, int(k), answer_mode, session_id, stop)
        feed = self._feeds[page_session] = AnswerFeed(events, stop)
        yield history, *self._cleared_panel(), *input_state(busy=True)
        unchanged = (gr.skip(),) * 5
        try:
            for update in self._answer_updates(history, asked, feed):
                yield history, *update, *unchanged[:3]
        except Exception as error:  # the user's to fix, or a bug (logged): said in the chat either way
            history[-1]["content"] = failure_note(error, "answer")
            yield history, *self._cleared_panel(), *unchanged[:3]
        finally:
            feed.stop()  # a no-op once the answer is done; when Gradio closes this handler (the page went), it ends it
            if self._feeds.get(page_session) is feed:
                del self._feeds[page_session]
        yield gr.skip(), *unchanged, *input_state(busy=False)

    def request_stop(self, request: gr.Request) -> None:
        """Stop pressed: the page's running answer ends now (see the module's docstring)."""
        feed = self._feeds.get(request.session_hash or "")
        if feed is not None:
            feed.stop()

    def _cleared_panel(self) -> tuple:
        return "", [], "", gallery([]), ""

    def _answer_updates(self, history: list[dict], asked: str, feed: AnswerFeed) -> Iterator[tuple]:
        """Stream one answer into history[-1]; yields the panel's values (sources, found, note, gallery,
        context) as they change, and a last one with the answer marked as stopped when the feed was stopped."""
        pieces: list[str] = []
        rewrite, searched, finished = Rewrite(asked, asked), "", False
        skip = gr.skip()
        for event in feed:
            if isinstance(event, Rewrite):
                rewrite = event
                searched = f"↻ {views.plain(event.explanation)}" if event.rewritten else ""
            elif isinstance(event, str):
                pieces.append(event)
                history[-1]["content"] = views.plain("".join(pieces))
                yield skip, skip, searched, skip, skip
            elif isinstance(event, Retrieved):  # the sources, before the answer's text
                found = [asdict(source) for source in event.sources]
                yield views.sources_html(found), found, searched, skip, skip
            elif isinstance(event, Answer):
                finished = True
                meta = answer_meta(event, rewrite)
                history[-1]["content"] = views.answer_markdown(event.text, meta)
                cards, found, note, images = views.panel(meta, self.page.service.images.display_copy)
                yield cards, found, note, gallery(images), ""
        if feed.stopped and not finished:
            history[-1]["content"] = views.plain("".join(pieces)) + views.STOPPED
            yield skip, skip, searched, skip, skip

    def open_source(self, number: float, found: list[dict], kb: str) -> tuple[str, str]:
        """A citation or a source card clicked: that source's passage in its document, and the card marked."""
        wanted = int(number or 0)
        source = next((s for s in found or [] if int(s["number"]) == wanted), None)
        if source is None:
            return gr.skip(), gr.skip()
        try:
            context = views.context_html(self.page.service.answers.passage(kb, source["chunk_id"]))
        except Exception as error:
            context = f"<p>⚠ {html.escape(user_message(error, 'show the passage'))}</p>"
        return context, views.sources_html(found, selected=wanted)

    def wire(self) -> None:
        page, service = self.page, self.page.service
        chat_io = dict(inputs=[self.question, self.chatbot, page.session, page.kb_pick, self.top_k, self.mode],
                       outputs=[self.chatbot, *self.panel, self.question, self.send, self.stop],
                       concurrency_limit=service.chat_concurrency, concurrency_id="chat", **PRIVATE)
        conversation = [page.kb_pick, page.session, page.chats]
        for asked in (self.question.submit(self.respond, **chat_io), self.send.click(self.respond, **chat_io)):
            asked.then(self.refresh_list, conversation, self.conversation_list, **PRIVATE)
        # its own unlimited group: a Stop must never wait behind the answers it would stop
        self.stop.click(self.request_stop, None, None, concurrency_limit=None, concurrency_id="stop", **PRIVATE)
        self.cite_open.click(self.open_source, [self.cite_number, self.sources_state, page.kb_pick],
                             [self.context, self.sources], js=views.CITED_JS, **PRIVATE).then(
            None, js=views.scroll_into_view_js("context"), **PRIVATE)
        self.mode.input(None, [self.mode], None, js=views.SAVE_MODE_JS, **PRIVATE)
        self.new_chat.click(self.new_conversation, conversation, self.shown, **PRIVATE)
        self.conversation_list.input(self.open_conversation, [page.kb_pick, self.conversation_list, page.chats],
                                     self.shown, **PRIVATE)
        self.delete_chat.click(self.delete_conversation, conversation, self.shown, **PRIVATE)
        self.sample_button.click(self.load_samples, [page.kb_pick], [self.sample_progress, *page.documents_outputs],
                                 concurrency_limit=2, concurrency_id="ingest", **PRIVATE)

    def load_samples(self, kb: str) -> Iterator[list[Any]]:
        yield from self.page.ingest(kb, self.page.service.uploads.sample_files())
