"""The Explore tab: the knowledge base seen as vectors. A map of every passage (click a point to read it in
context, draw a question with its retrieved passages), word vectors trained on the documents (neighbours,
analogies, intrinsic scores), a similarity playground, and zero-shot image tags.

gr.Plot draws plotly figures but reports no clicks (its only event is `change`), so a click on the map takes the
route the Chat's citations take: plotly's own `plotly_click` event, bound in the page (BIND_MAP_JS), keeps the
point's chunk id and clicks a hidden button, whose event (POINT_JS) sends that id to the server.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from rag.explore.projection import available_methods
from rag.explore.word_vectors import ARCHITECTURES, WordScore
from service.explore import TAGS_WAIT, Job
from ui import views
from ui.chat import failure_note
from ui.page import PRIVATE, BrowserChats, Page

POLL_S = 0.5
SIMILARITY_EXAMPLE = "I sat on the river bank and watched the water.\nI opened a savings account at the bank."
BIND_MAP_JS = """() => {
  const bind = (tries) => {
    const plot = document.querySelector("#explore-map .js-plotly-plot");
    if (!plot || !plot.on) {
      if (tries > 0) setTimeout(() => bind(tries - 1), 200);
      return;
    }
    if (plot.__loupeBound) return;
    plot.__loupeBound = true;
    plot.on("plotly_click", (event) => {
      const point = event && event.points && event.points[0];
      if (!point || !point.customdata) return;
      window.__loupeExplorePoint = Number(point.customdata[0]);
      document.querySelector("#explore-open")?.click();
    });
  };
  bind(100);
}"""
POINT_JS = """(number, kb) => [window.__loupeExplorePoint || 0, kb]"""
# The passage opens below the map, out of sight on most screens: bring it into view (as the Chat's sources do).
UMAP_INFO = ("PCA is instant; UMAP keeps each passage's neighbours together but takes longer (its first map in a "
             "process also compiles it)")
INTRO = ("See your knowledge base as vectors: where its passages sit, which words it treats as close, how an "
         "embedder compares sentences, and what CLIP sees in its pictures.")


def words_html(words: list[WordScore], title: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(w.word)}</td><td>{w.score:.3f}</td></tr>" for w in words)
    return (f"<table class='loupe-table explore-words'><caption>{html.escape(title)}</caption>"
            f"<tr><th>Word</th><th>Cosine</th></tr>{rows}</table>")


def scores_html(rows: list[dict], reference: str) -> str:
    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    body = "".join(
        f"<tr><td>{html.escape(r['set'])}</td><td>{r['measure']}</td><td>{r['covered']:,} of {r['total']:,}</td>"
        f"<td>{figure(r['word2vec'])}</td><td>{figure(r.get('reference_covered'))}</td>"
        f"<td>{figure(r.get('reference_all'))}</td></tr>" for r in rows)
    return ("<table class='loupe-table' id='explore-scores'><tr><th>Set</th><th>Measure</th><th>Items the word "
            f"vectors know</th><th>word2vec (those items)</th><th>{html.escape(reference)} (those items)</th>"
            f"<th>{html.escape(reference)} (all items)</th></tr>{body}</table>")


def training_line(job: Job, architecture: str) -> str:
    if not job.done:
        return f"Training {architecture} word vectors on this knowledge base… {100 * job.progress:.0f}%"
    if job.error:
        return f"⚠ {views.plain(job.error)}"
    return (f"✓ {architecture} word vectors ready: {len(job.result):,} words (kept with the knowledge base; "
            "trained again when its documents change).")


def tagging_line(job: Job) -> str:
    if not job.done:
        return f"Labels saved. Re-tagging the images in the background… {100 * job.progress:.0f}%"
    if job.error:
        return f"⚠ {views.plain(job.error)}"
    return (f"✓ Labels saved; {len(job.result):,} images tagged (the library, the image search and this tab show "
            "their tags).")


def tag_caption(tagged) -> str:
    tags = ", ".join(f"{t.label} {t.score:.2f}" for t in tagged.tags) or "no tags: waiting for CLIP"
    return f"{tagged.image.file}, page {tagged.image.page}: {tags}"


class ExploreTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        explore = page.service.explore
        with gr.Tab("Explore", id="explore") as self.tab:
            gr.Markdown(INTRO)
            with gr.Tabs():
                with gr.Tab("Map", id="explore-map-tab"):
                    self._build_map()
                with gr.Tab("Word vectors", id="explore-words-tab"):
                    self._build_words()
                with gr.Tab("Similarity", id="explore-similarity-tab"):
                    self._build_similarity()
                with gr.Tab("Image tags", id="explore-tags-tab"):
                    self._build_tags(explore.tags_available, explore.default_labels())
        page.shows_kb_state([self.map, self.map_note, self.context, self.own_labels], self.kb_state)
        page.shows_documents(self.words_status, self.documents_changed)

    def _build_map(self) -> None:
        with gr.Row():
            methods = available_methods()
            self.projection = gr.Radio(methods, value="pca", label="Projection", scale=1,
                                       info=UMAP_INFO if "umap" in methods else "UMAP appears once umap-learn is "
                                                                                  "installed")
            self.map_question = gr.Textbox(label="Draw a question and its retrieved passages (optional)", scale=3,
                                           elem_id="explore-question")
        with gr.Row():
            self.draw = gr.Button("Draw the map", variant="primary", elem_id="explore-draw")
            self.from_chat = gr.Button("Draw the last question asked in Chat", elem_id="explore-from-chat")
        self.map_note = gr.Markdown(elem_id="explore-map-note")
        self.map = gr.Plot(elem_id="explore-map", show_label=False)
        self.point = gr.Number(0, visible=False)
        self.point_open = gr.Button("Open passage", elem_id="explore-open", elem_classes="loupe-hidden")
        self.context = gr.HTML(elem_id="explore-context")

    def _build_words(self) -> None:
        with gr.Row():
            self.architecture = gr.Radio(list(ARCHITECTURES), value="skipgram", label="word2vec architecture",
                                         info="skip-gram predicts the context from a word; CBOW the word from its "
                                              "context")
            self.train = gr.Button("Train word vectors", variant="primary", elem_id="explore-train")
        self.words_status = gr.Markdown(elem_id="explore-words-status")
        with gr.Row():
            self.word = gr.Textbox(label="Word", elem_id="explore-word")
            self.count = gr.Number(10, label="How many", precision=0, minimum=1, maximum=100)
            self.find_neighbours = gr.Button("Nearest neighbours", elem_id="explore-neighbours")
        with gr.Row():
            self.a = gr.Textbox(label="A", placeholder="king", elem_id="explore-a")
            self.b = gr.Textbox(label="− B", placeholder="man", elem_id="explore-b")
            self.c = gr.Textbox(label="+ C", placeholder="woman", elem_id="explore-c")
            self.find_analogy = gr.Button("A − B + C", elem_id="explore-analogy")
        self.words_result = gr.HTML(elem_id="explore-words-result")
        self.score = gr.Button("Intrinsic scores beside the text embedder's (a minute or two on a CPU)",
                               elem_id="explore-score")
        self.scores = gr.HTML(elem_id="explore-scores-result")

    def _build_similarity(self) -> None:
        self.texts = gr.Textbox(SIMILARITY_EXAMPLE, lines=4, label="Texts to compare, one a line (2 to 12)",
                                elem_id="explore-texts")
        self.compare = gr.Button("Compare", variant="primary", elem_id="explore-compare")
        self.similarity_note = gr.Markdown(elem_id="explore-similarity-note")
        with gr.Row():
            self.contextual = gr.Plot(elem_id="explore-contextual", show_label=False)
            self.context_free = gr.Plot(elem_id="explore-context-free", show_label=False)

    def _build_tags(self, available: bool, defaults: list[str]) -> None:
        gr.Markdown("" if available else TAGS_WAIT, visible=not available, elem_id="explore-tags-wait")
        gr.Markdown(f"**Default labels** (setting `image_labels`): {views.plain(', '.join(defaults))}")
        with gr.Row():
            self.own_labels = gr.Textbox(label="This knowledge base's own labels (comma-separated)", scale=3,
                                         elem_id="explore-labels")
            self.save_labels_button = gr.Button("Save labels and re-tag", scale=1, elem_id="explore-save-labels",
                                         interactive=available)
        with gr.Row():
            self.tag_query = gr.Textbox(label="Find images by tag", scale=3, elem_id="explore-tag-query",
                                        interactive=available)
            self.show_tags = gr.Button("Show tagged images", scale=1, elem_id="explore-show-tags",
                                       interactive=available)
        self.tags_note = gr.Markdown(elem_id="explore-tags-note")
        self.tags_gallery = gr.Gallery(label="Images and their tags", columns=4, height=360,
                                       elem_id="explore-tags-gallery")

    # --- handlers -----------------------------------------------------------------------------
    def kb_state(self, kb: str, chats: BrowserChats) -> list[Any]:
        """A switched knowledge base: nothing of the previous one's map or words stays on screen."""
        try:
            labels = ", ".join(self.page.service.explore.labels(kb))
        except Exception as error:
            labels = failure_note(error, "read the labels")
        return [None, "", "", labels]

    def documents_changed(self, kb: str, documents: list) -> str:
        """Word vectors and tags follow the documents: retrained and re-tagged in the background."""
        try:
            jobs = self.page.service.explore.documents_changed(kb)
        except Exception as error:
            return failure_note(error, "bring the word vectors up to date")
        return "\n\n".join(training_line(job, architecture) for architecture, job in jobs.items())

    def draw_map(self, method: str, question: str, kb: str) -> tuple[Any, str, str]:
        try:
            figure, chunk_map, placed = self.page.service.explore.map_figure(kb, method, question)
        except Exception as error:
            return None, failure_note(error, "draw the map"), ""
        note = f"{views.plain(chunk_map.note())}. Hover over a point to see its passage; click it to read it here."
        if placed:
            note += f" ★ is the question; its {len(placed.hits)} retrieved passages are ringed in red."
        return figure, note, ""

    def draw_chat_question(self, method: str, kb: str, session: str | None) -> tuple[Any, str, str, str]:
        try:
            question = self.page.service.explore.last_chat_question(kb, session)
        except Exception as error:
            return gr.skip(), failure_note(error, "find the last question"), gr.skip(), gr.skip()
        return question, *self.draw_map(method, question, kb)

    def open_point(self, chunk_id: float, kb: str) -> str:
        if not chunk_id:
            return gr.skip()
        try:
            return views.context_html(self.page.service.explore.passage(kb, int(chunk_id)))
        except Exception as error:
            return f"<p>{views.failure_html(error, 'show the passage')}</p>"

    def train_words(self, architecture: str, kb: str) -> Iterator[str]:
        try:
            job = self.page.service.explore.train_words(kb, architecture)
        except Exception as error:
            yield failure_note(error, "train the word vectors")
            return
        while not job.done:
            yield training_line(job, architecture)
            time.sleep(POLL_S)
        yield training_line(job, architecture)

    def neighbours(self, word: str, count: float, architecture: str, kb: str) -> str:
        try:
            found = self.page.service.explore.neighbours(kb, word, count, architecture)
        except Exception as error:
            return views.failure_html(error, "find neighbours")
        return words_html(found, f"Nearest to '{word.strip()}'")

    def analogy(self, a: str, b: str, c: str, count: float, architecture: str, kb: str) -> str:
        try:
            found = self.page.service.explore.analogy(kb, a, b, c, count, architecture)
        except Exception as error:
            return views.failure_html(error, "solve the analogy")
        return words_html(found, f"{a.strip()} − {b.strip()} + {c.strip()} ≈")

    def intrinsic(self, architecture: str, kb: str) -> str:
        service = self.page.service
        try:
            rows = service.explore.intrinsic(kb, architecture)
        except Exception as error:
            return views.failure_html(error, "score the word vectors")
        return scores_html(rows, service.models.text_embedder.model_id.name)

    def similarity(self, text: str, architecture: str, kb: str) -> tuple[Any, Any, str]:
        try:
            contextual, context_free, note = self.page.service.explore.similarity(text.splitlines(), kb,
                                                                                  architecture)
        except Exception as error:
            return None, None, failure_note(error, "compare the texts")
        return contextual, context_free, views.plain(note)

    def save_labels(self, labels: str, kb: str) -> Iterator[str]:
        """Keep the labels with the knowledge base, then show the re-tagging's progress until it is done."""
        try:
            job = self.page.service.explore.set_labels(kb, labels)
        except Exception as error:
            yield failure_note(error, "save the labels")
            return
        if job is None:
            yield f"Labels saved. {TAGS_WAIT}"
            return
        while not job.done:
            yield tagging_line(job)
            time.sleep(POLL_S)
        yield tagging_line(job)

    def tagged(self, query: str, kb: str) -> tuple[list, str]:
        service = self.page.service
        try:
            found = service.explore.tagged_images(kb, query)
            store = service.kb(kb)
            items = [(str(service.images.display_copy(store.image_path(t.image))), tag_caption(t)) for t in found]
        except Exception as error:
            return [], failure_note(error, "show the image tags")
        wanted = f" with a tag containing '{views.plain(query.strip())}'" if query.strip() else ""
        return items, f"{len(items)} images{wanted}."

    def wire(self) -> None:
        kb_pick = self.page.kb_pick
        map_outputs = [self.map, self.map_note, self.context]
        for drawn in (self.draw.click(self.draw_map, [self.projection, self.map_question, kb_pick], map_outputs,
                                      **PRIVATE),
                      self.map_question.submit(self.draw_map, [self.projection, self.map_question, kb_pick],
                                               map_outputs, **PRIVATE),
                      self.from_chat.click(self.draw_chat_question, [self.projection, kb_pick, self.page.session],
                                           [self.map_question, *map_outputs], **PRIVATE)):
            drawn.then(None, js=BIND_MAP_JS, **PRIVATE)
        self.point_open.click(self.open_point, [self.point, kb_pick], self.context, js=POINT_JS, **PRIVATE).then(
            None, js=views.scroll_into_view_js("explore-context"), **PRIVATE)
        self.train.click(self.train_words, [self.architecture, kb_pick], self.words_status,
                         concurrency_limit=4, concurrency_id="explore-train", **PRIVATE)
        self.find_neighbours.click(self.neighbours, [self.word, self.count, self.architecture, kb_pick],
                                   self.words_result, **PRIVATE)
        self.word.submit(self.neighbours, [self.word, self.count, self.architecture, kb_pick], self.words_result,
                         **PRIVATE)
        self.find_analogy.click(self.analogy, [self.a, self.b, self.c, self.count, self.architecture, kb_pick],
                                self.words_result, **PRIVATE)
        self.score.click(self.intrinsic, [self.architecture, kb_pick], self.scores, **PRIVATE)
        self.compare.click(self.similarity, [self.texts, self.architecture, kb_pick],
                           [self.contextual, self.context_free, self.similarity_note], **PRIVATE)
        self.save_labels_button.click(self.save_labels, [self.own_labels, kb_pick], self.tags_note,
                                      concurrency_limit=4, concurrency_id="explore-tags", **PRIVATE)
        self.show_tags.click(self.tagged, [self.tag_query, kb_pick], [self.tags_gallery, self.tags_note], **PRIVATE)
        self.tag_query.submit(self.tagged, [self.tag_query, kb_pick], [self.tags_gallery, self.tags_note], **PRIVATE)
