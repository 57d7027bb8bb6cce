"""The Image search tab: find a knowledge base's pictures by a description or by an example image (both CLIP).
Without CLIP both searches are disabled, and the reason stands beside them."""

from __future__ import annotations

import logging

import gradio as gr

from service import ImageResult
from ui import views
from ui.chat import failure_note
from ui.page import PRIVATE, Page

logger = logging.getLogger(__name__)

def show_images(results: list[ImageResult], tags: dict[int, list] | None = None) -> tuple[list, str]:
    """The gallery's items, each captioned with its place, its score and its zero-shot tags (Explore) if known."""
    tags = tags or {}
    items = [(r.path, f"{r.file}, page {r.page} ({r.score:.3f})" + "".join(
        f" · {t.label} {t.score:.2f}" for t in tags.get(r.image_id, [])[:3])) for r in results]
    return items, (f"{len(results)} images; best score {results[0].score:.3f}." if results
                   else "No images in this knowledge base yet.")


class ImagesTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        images = page.service.images
        clip_on = images.available
        needs_clip = "" if clip_on else "Needs CLIP, which is not loaded (see the note above)."
        with gr.Tab("Image search", id="images"):
            clip_note = views.clip_note_html(page.service.models.clip_status)
            gr.HTML(clip_note, visible=bool(clip_note), elem_id="clip-note")
            with gr.Row():
                with gr.Column():
                    self.image_query = gr.Textbox(label="Describe the image", interactive=clip_on)
                    self.search_text = gr.Button("Search by text", interactive=clip_on)
                with gr.Column():
                    # image_mode=None: the handler gets the uploaded file itself, not a converted copy
                    self.query_image = gr.Image(label="…or find images similar to this one", type="filepath",
                                                sources=["upload", "clipboard"], image_mode=None, height=180,
                                                elem_id="query-image", interactive=clip_on)
                    with gr.Row():
                        self.search_image = gr.Button("Find similar images", elem_id="find-similar",
                                                      interactive=clip_on)
                        gr.Markdown(needs_clip, visible=not clip_on, elem_id="find-similar-reason")
            self.message = gr.Markdown(elem_id="image-message")
            self.results = gr.Gallery(label="Matching images", columns=4, height=360, elem_id="image-results")

    def by_text(self, query: str, kb: str) -> tuple[list, str]:
        try:
            return show_images(self.page.service.search_images(kb, query), self._tags(kb))
        except Exception as error:
            return [], failure_note(error, "search images")

    def by_image(self, path: str | None, kb: str) -> tuple[list, str]:
        if not path:
            return [], "Upload an image first."
        try:
            return show_images(self.page.service.similar_images(kb, self.page.received.read(path)), self._tags(kb))
        except Exception as error:
            return [], failure_note(error, "search images")

    def _tags(self, kb: str) -> dict[int, list]:
        try:
            return self.page.service.explore.tags_of(kb)
        except Exception:  # tags only add to a caption: a failure there must not lose the search's results
            logger.exception("Image tags for the gallery failed")
            return {}

    def wire(self) -> None:
        kb_pick, outputs = self.page.kb_pick, [self.results, self.message]
        self.image_query.submit(self.by_text, [self.image_query, kb_pick], outputs, **PRIVATE)
        self.search_text.click(self.by_text, [self.image_query, kb_pick], outputs, **PRIVATE)
        self.search_image.click(self.by_image, [self.query_image, kb_pick], outputs, **PRIVATE)
