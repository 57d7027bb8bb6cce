"""Loupe's browser UI on Gradio: `build_ui(service)` composes the page (ui.layout) from one module a tab
(ui.chat, ui.documents, ui.images); ui.views holds how things are shown."""

from __future__ import annotations

from ui.layout import build_ui
from ui.views import CSS, PAGE_JS

__all__ = ["CSS", "PAGE_JS", "build_ui"]
