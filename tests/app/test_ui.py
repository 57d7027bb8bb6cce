"""The real app in a real headless Chromium: upload, ask, stream, sources, per-file messages, delete, images.

One app serves the whole module; the tests run in file order and build on each other's documents.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

# Records every text the last assistant message shows, so the test can see the answer grow (streaming).
RECORD_BOT_TEXTS = """() => {
  window.__botTexts = [];
  const chat = document.querySelector('#chatbot');
  const record = () => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    if (!bots.length) return;
    const text = bots[bots.length - 1].innerText.trim();
    if (window.__botTexts[window.__botTexts.length - 1] !== text) window.__botTexts.push(text);
  };
  new MutationObserver(record).observe(chat, {subtree: true, childList: true, characterData: true});
  // how many answer texts had been shown when the first source card appeared
  const sources = document.querySelector('#sources');
  new MutationObserver(() => {
    if (window.__sourcesAt === undefined && sources.querySelector('.source-card')) {
      window.__sourcesAt = window.__botTexts.length;
    }
  }).observe(sources, {subtree: true, childList: true});
}"""


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("ui") / "indexes" / "default")


def open_app(page: Page, live) -> None:
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")  # the page has loaded its state


def upload(page: Page, *paths) -> None:
    page.get_by_role("tab", name="Documents").click()
    page.set_input_files("#upload input[type=file]", [str(p) for p in paths])
    for path in paths:
        expect(page.locator(f"#upload a[href$='/{path.name}']")).to_be_visible()  # the browser finished sending it
    page.click("#add-files")


def progress_row(page: Page, name: str):
    return page.locator(f"#upload-progress tr[data-file='{name}']")


def ask(page: Page, question: str) -> None:
    page.get_by_role("tab", name="Chat").click()
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")


def test_upload_ask_and_see_the_streamed_answer_with_its_sources(page: Page, live, docs_dir):
    open_app(page, live)
    expect(page.locator("#empty-banner")).to_contain_text("This knowledge base is empty")
    upload(page, docs_dir / "aurora.md", docs_dir / "lighthouse.txt")
    expect(progress_row(page, "aurora.md")).to_contain_text("aurora.md: added: 1 page,")
    expect(progress_row(page, "lighthouse.txt")).to_contain_text("added")
    expect(page.locator("#library")).to_contain_text("lighthouse.txt")
    expect(page.locator("#kb-status")).to_contain_text("2 documents")

    page.evaluate(RECORD_BOT_TEXTS)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("generate", exact=True).check()  # the model's text streams in this mode, after the sources
    ask(page, "At what temperature is the seed vault kept?")
    expect(page.locator("#sources")).to_contain_text("aurora.md, § Seed vault", timeout=90_000)
    expect(page.locator("#send")).to_be_visible(timeout=120_000)  # the answer is finished
    expect(page.locator("#question textarea")).to_have_value("")
    texts = page.evaluate("window.__botTexts")
    answers = [t for t in texts if t and "Searching the documents" not in t]
    # The sources were on screen before the answer's text came: it streamed in beside them. (It streams a whole
    # checked sentence at a time, tested in tests/rag/test_answering.py; the tiny random model here may write
    # one long "sentence".)
    sources_at = page.evaluate("window.__sourcesAt")
    before_sources = [t for t in texts[:sources_at] if t and "Searching the documents" not in t]
    assert answers and not before_sources, (texts, sources_at)
    expect(page.locator("#empty-banner")).to_be_hidden()

    # Clicking a source shows the passage in its document, the cited text highlighted.
    page.locator("#sources .source-card").filter(has_text="aurora.md").first.click()
    expect(page.locator("#context")).to_contain_text("aurora.md, § Seed vault")
    expect(page.locator("#context mark")).to_contain_text("minus eighteen degrees")

    # A follow-up is searched with the conversation, and the app says so.
    ask(page, "and who may open it?")
    expect(page.locator("#answer-note")).to_contain_text(re.compile("searched for", re.I), timeout=90_000)
    expect(page.locator("#answer-note")).to_contain_text("seed vault")
    expect(page.locator("#sources")).to_contain_text("aurora.md")


def test_an_unanswerable_question_says_so(page: Page, live):
    open_app(page, live)
    page.get_by_label("extractive").check()
    ask(page, "Who won the football world cup in 1954?")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("The documents don't say.")
    expect(page.locator("#answer-note")).to_contain_text("The documents don't hold an answer to this question")


def test_duplicates_and_broken_files_get_their_own_message(page: Page, live, docs_dir):
    open_app(page, live)
    upload(page, docs_dir / "aurora.md", docs_dir / "broken.pdf", docs_dir / "notes.xyz")
    expect(progress_row(page, "aurora.md")).to_contain_text("duplicate")
    expect(progress_row(page, "aurora.md")).to_contain_text("already in the knowledge base as 'aurora.md'")
    expect(progress_row(page, "broken.pdf")).to_contain_text("failed")
    expect(progress_row(page, "broken.pdf")).to_contain_text("corrupt or truncated PDF")
    expect(progress_row(page, "notes.xyz")).to_contain_text("unsupported file type '.xyz'")
    expect(page.locator("#kb-status")).to_contain_text("2 documents")  # nothing else went in


def test_delete_a_document(page: Page, live):
    open_app(page, live)
    page.get_by_role("tab", name="Documents").click()
    expect(page.locator("#library")).to_contain_text("lighthouse.txt")
    page.click("#doc-pick input")
    page.get_by_role("option", name=re.compile(r"lighthouse\.txt \(id \d+\)")).click()
    page.click("#delete-doc")
    expect(page.locator("#confirm-delete-doc")).to_contain_text("Delete lighthouse.txt")
    page.click("#confirm-delete")
    expect(page.locator("#doc-message")).to_contain_text("Deleted lighthouse.txt")
    expect(page.locator("#library")).not_to_contain_text("lighthouse.txt")
    expect(page.locator("#library")).to_contain_text("aurora.md")
    assert [d.name for d in live.service.documents()] == ["aurora.md"]


def test_an_uploaded_image_finds_the_same_image(page: Page, live, docs_dir):
    open_app(page, live)
    upload(page, docs_dir / "photo.png", docs_dir / "other.png")
    expect(progress_row(page, "other.png")).to_contain_text("added")
    page.get_by_role("tab", name="Image search").click()
    expect(page.locator("#clip-note")).to_be_hidden()  # CLIP is on in this app
    page.set_input_files("#query-image input[type=file]", str(docs_dir / "photo.png"))
    expect(page.locator("#query-image img")).to_be_visible()
    page.click("#find-similar")
    expect(page.locator("#image-message")).to_contain_text("best score 1.000")
    expect(page.locator("#image-results")).to_contain_text("photo.png")


def test_the_chat_survives_a_reload(page: Page, live):
    open_app(page, live)
    page.get_by_label("extractive").check()
    ask(page, "When do the supply flights land?")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("second Tuesday")
    first = page.evaluate("window.localStorage.getItem('loupe-session')")
    assert len(first) >= 8
    page.reload()
    expect(page.locator("#chatbot")).to_contain_text("When do the supply flights land?")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("second Tuesday")
    expect(page.locator("#sources")).to_contain_text("aurora.md")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#chatbot")).not_to_contain_text("supply flights")
    # the new conversation's id reaches localStorage just after the page shows it
    page.wait_for_function(f"window.localStorage.getItem('loupe-session') !== '{first}'")
    page.reload()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    expect(page.locator("#chatbot")).not_to_contain_text("supply flights")


def test_create_a_knowledge_base_load_the_samples_and_delete_it(page: Page, live):
    open_app(page, live)
    page.get_by_role("tab", name="Documents").click()
    page.get_by_text("Knowledge bases", exact=True).click()
    page.get_by_label("New knowledge base").fill("../escape")
    page.get_by_role("button", name="Create and switch").click()
    expect(page.get_by_text("invalid knowledge base name")).to_be_visible()
    page.get_by_label("New knowledge base").fill("demo-kb")
    page.get_by_role("button", name="Create and switch").click()
    expect(page.locator("#kb-status")).to_contain_text("demo-kb")
    expect(page.locator("#kb-status")).to_contain_text("0 documents")

    page.get_by_role("tab", name="Chat").click()
    page.get_by_role("button", name="Load the sample knowledge base").click()
    expect(page.locator("#kb-status")).to_contain_text("5 documents", timeout=120_000)
    expect(page.locator("#empty-banner")).to_be_hidden()
    page.get_by_label("extractive").check()
    ask(page, "What answer modes does Loupe have?")
    answer = page.locator("#chatbot [data-testid='bot']").last
    expect(answer).to_contain_text("two answer modes, generate and extractive")
    expect(page.locator("#sources")).to_contain_text("loupe-user-guide.md")

    # Switch back and forth with the selector: each knowledge base shows its own documents.
    page.click("#kb-pick input")
    page.get_by_role("option", name="default", exact=True).click()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base: default")
    expect(page.locator("#kb-status")).not_to_contain_text("5 documents")
    page.click("#kb-pick input")
    page.get_by_role("option", name="demo-kb").click()
    expect(page.locator("#kb-status")).to_contain_text("5 documents")

    page.get_by_role("tab", name="Documents").click()
    page.get_by_label("Yes, delete the selected knowledge base").check()
    page.get_by_role("button", name="Delete knowledge base").click()
    expect(page.get_by_text("Deleted knowledge base demo-kb")).to_be_visible()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base: default")
    assert live.service.kb_names() == ["default"]
