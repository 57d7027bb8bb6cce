"""The Documents tab's embedder panel: fine-tune the text embedder on the knowledge base shown, or re-embed the
knowledge base with another model (issue 10). Both run in the background (service.embedding); the page follows
them with a bar, the phase, the steps and the time left, and shows the report at the end."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from rag.settings import EMBEDDERS
from service.embedding import MAX_EPOCHS, Job
from ui import views
from ui.chat import failure_note
from ui.page import PRIVATE, Page

# A job's page follows it in its own group: minutes of following must not hold up uploads or questions.
FOLLOW = {"concurrency_limit": None, "concurrency_id": "embedder-jobs", **PRIVATE}
ABOUT = ("**Fine-tune** adapts the text embedder to this knowledge base's own wording, from its documents alone "
         "(no labelled questions), and checks a held-back part before and after. **Re-embed** gives every passage "
         "new vectors from another model, such as a fine-tuned one; questions use the old vectors until it is done.")


class EmbedderPanel:
    def __init__(self, page: Page) -> None:
        self.page = page
        settings = page.service.settings
        with gr.Accordion("Embedder: fine-tune it on this knowledge base, or re-embed with another model",
                          open=False, elem_id="embedder-box"):
            gr.Markdown(ABOUT)
            with gr.Row():
                self.epochs = gr.Slider(1, MAX_EPOCHS, value=1, step=1, label="Epochs", scale=3, elem_id="epochs")
                self.tune = gr.Button("Fine-tune the embedder", variant="primary", scale=1, elem_id="finetune")
            with gr.Row():
                choices = self.model_choices()
                self.model = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                                         label="Model: a fine-tuned one, or a model id", scale=3,
                                         elem_id="reembed-model")
                self.backend = gr.Dropdown(list(EMBEDDERS), value=settings.embedder, label="Embedder", scale=1,
                                           elem_id="reembed-embedder")
                self.dims = gr.Number(settings.embed_dims, precision=0, minimum=0, label="Dimensions (0: all)",
                                      scale=1, elem_id="reembed-dims")
                self.reembed = gr.Button("Re-embed with this model", scale=1, elem_id="reembed")
            self.progress = gr.HTML(elem_id="embedder-progress")
            self.report = gr.Markdown(elem_id="embedder-report")
        # each knowledge base shows its own latest job; the model choices are read afresh on every page load (a
        # model fine-tuned in another tab or browser since this page was built is offered too)
        page.shows_kb_state([self.progress, self.report, self.model],
                            lambda kb, chats: [*self.job_view(kb), gr.Dropdown(choices=self.model_choices())])

    def model_choices(self) -> list[str]:
        """The app's own model first (unless it is a folder: the page names none), then the fine-tuned models,
        newest first."""
        jobs, own = self.page.service.embedding, self.page.service.settings.text_model
        return list(dict.fromkeys([own] * jobs.is_model_id(own) + jobs.finetuned_models()))

    def job_view(self, kb: str) -> list[str]:
        job = self.page.service.embedding.job(kb)
        return [views.job_progress_html(job), self.report_of(job)] if job else ["", ""]

    def report_of(self, job: Job) -> str:
        if job.error:
            return f"⚠ {views.plain(job.error)}"
        if job.report is None:
            return ""
        if job.kind == "fine-tune":
            return views.finetune_report(job.report, job.kb, job.model_name)
        return views.reembed_report(job.report, self.page.service.models.text_embedder.model_id.name)

    def start_finetune(self, kb: str, epochs: float) -> Iterator[tuple]:
        try:
            job = self.page.service.embedding.finetune(kb, int(epochs))
        except Exception as error:
            yield "", failure_note(error, "fine-tune the embedder"), gr.skip()
            return
        yield from self._follow(job)

    def start_reembed(self, kb: str, model: str, backend: str, dims: float | None) -> Iterator[tuple]:
        try:
            job = self.page.service.embedding.reembed(kb, model, backend, int(dims or 0))
        except Exception as error:
            yield "", failure_note(error, "re-embed the knowledge base"), gr.skip()
            return
        yield from self._follow(job)

    def _follow(self, job: Job) -> Iterator[tuple]:
        """(bar, report, model choices) as the job goes; the choices change once, at the end (a new model)."""
        for current in self.page.service.embedding.follow(job):
            if current.running:
                yield views.job_progress_html(current), "", gr.skip()
            else:
                yield views.job_progress_html(current), self.report_of(current), gr.Dropdown(self.model_choices())

    def wire(self) -> None:
        outputs = [self.progress, self.report, self.model]
        self.tune.click(self.start_finetune, [self.page.kb_pick, self.epochs], outputs, **FOLLOW)
        self.reembed.click(self.start_reembed, [self.page.kb_pick, self.model, self.backend, self.dims], outputs,
                           **FOLLOW)
