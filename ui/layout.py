"""The page: the header with the knowledge-base picker, one tab a module, and the page-load event that restores
a browser's session (its knowledge base, chat and answer mode)."""

from __future__ import annotations

import gradio as gr

from service import LoupeService
from ui import views
from ui.chat import ChatTab
from ui.documents import DocumentsTab
from ui.explore import ExploreTab
from ui.images import ImagesTab
from ui.page import PRIVATE, BrowserChats, Page
from webapi import ReceivedFiles, add_named_endpoints


def build_ui(service: LoupeService) -> gr.Blocks:
    settings = service.settings
    with gr.Blocks(title="Loupe — ask your documents", analytics_enabled=False) as demo:
        received = ReceivedFiles(demo, settings.max_upload_mb)
        service.on_display_removed = received.remove_cached_copies
        exposure = views.exposure_notice(settings.host, settings.share, settings.auth, settings.public_demo)
        gr.Markdown(exposure, visible=bool(exposure), elem_id="exposure-warning")
        page = Page(service, received)
        with gr.Tabs():
            tabs = [ChatTab(page), DocumentsTab(page), ImagesTab(page), ExploreTab(page)]
        for tab in tabs:
            tab.wire()
        chat = tabs[0]
        session_carrier = gr.Textbox(visible=False)

        def on_load(session_id: str, mode: str, carried: str) -> tuple:
            chats = BrowserChats.parse(session_id, carried)
            kb = service.conversations.kb_of(chats.current)
            kb = kb if kb in service.kb_names() else service.default_kb
            return page.picker(kb), chat.restore_mode(mode), *page.switch_values(kb, chats)

        demo.load(on_load, [session_carrier, chat.mode, page.chats],
                  [page.kb_pick, chat.mode, *page.switch_outputs], js=views.LOAD_JS, **PRIVATE)
        # a user's switch (.input, not .change: on_load sets the value too, and must keep the restored panel)
        page.kb_pick.input(page.switch_to, page.switch_inputs, page.switch_outputs, **PRIVATE)
        page.chats.change(None, [page.chats], None, js=views.KEEP_CHATS_JS, **PRIVATE)
        add_named_endpoints(service, received)
    return demo
