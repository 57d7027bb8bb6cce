"""The Documents tab's embedder panel in a real Chromium (issue 10): fine-tuning the text embedder on the knowledge
base runs in the background with a bar, and ends with its held-back check and the new model offered for re-embedding;
re-embedding refuses a model it must not load. The fine-tune is real: the real MiniLM, trained on 2 cores."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from rag.finetune import REPORT_FILE

pytestmark = pytest.mark.slow

TOPICS = ["seed vault", "supply flights", "radio schedule", "ice runway", "weather station", "generator hall",
          "medical bay", "kitchen rota", "fuel depot", "science lab", "dog kennels", "library corner",
          "sauna hut", "snow vehicles", "water plant", "waste store"]


def handbook() -> str:
    """A Markdown handbook of one section per topic, each with two sentences of several words."""
    return "# Aurora station handbook\n\n" + "".join(
        f"## The {topic}\n\nThe {topic} of the Aurora station is checked every morning by the duty officer. "
        f"Anyone who finds a fault in the {topic} writes it in the logbook at once.\n\n" for topic in TOPICS)


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui-embedder")
    app = start_app(folder / "indexes" / "default")
    (folder / "handbook.md").write_text(handbook())
    outcome = app.service.ingest(None, [("handbook.md", folder / "handbook.md")])[0]
    assert outcome.status == "added", outcome.message
    return app


def open_panel(page: Page, live) -> None:
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    page.get_by_role("tab", name="Documents").click()
    page.get_by_text("Embedder: fine-tune it on this knowledge base").click()


def test_fine_tuning_shows_its_progress_and_its_check_and_offers_the_new_model(page: Page, live):
    open_panel(page, live)
    page.click("#finetune")
    bar = page.locator("#embedder-bar")
    expect(bar).to_contain_text("Fine-tune of default")
    report = page.locator("#embedder-report")
    expect(report).to_contain_text("Held-back check", timeout=600_000)  # minutes on a busy 2-core machine
    expect(report).to_contain_text("MRR")
    expect(bar).to_contain_text("done")
    name = live.service.embedding.finetuned_models()[0]
    assert name.startswith("default-")
    expect(report).to_contain_text(f"Saved as {name}")
    assert (live.service.embedding.models_folder / name / REPORT_FILE).is_file()
    page.click("#reembed-model input")
    expect(page.get_by_role("option", name=name, exact=True)).to_be_visible()  # offered for re-embedding


def test_re_embedding_refuses_a_folder_of_the_server(page: Page, live):
    open_panel(page, live)
    model = page.locator("#reembed-model input")
    model.fill("/etc")
    model.press("Enter")
    page.click("#reembed")
    expect(page.locator("#embedder-report")).to_contain_text("neither a fine-tuned model nor a model id")
    assert live.service.documents()[0].chunks > 0  # untouched


def test_a_page_loaded_later_offers_a_model_fine_tuned_elsewhere(page: Page, live):
    """The model choices are read on every page load: a model fine-tuned in another tab, browser or by
    `rag finetune` after the app started is offered too (it used to take a restart). The folder stands for one
    that run wrote: the panel lists the folders beside the knowledge bases that hold a fine-tune report."""
    made_elsewhere = live.service.embedding.models_folder / "default-made-elsewhere"
    made_elsewhere.mkdir(parents=True, exist_ok=True)
    (made_elsewhere / REPORT_FILE).write_text("{}")
    open_panel(page, live)
    page.click("#reembed-model input")
    expect(page.get_by_role("option", name="default-made-elsewhere", exact=True)).to_be_visible()
