"""The Chat tab in a real Chromium, finding by finding of issue 9: Stop ends the generation on the server and
the question box is locked while an answer streams; citations open their source in context, in view; each answer
mode is explained and the choice survives a reload; the question box is in view on first load; a phone gets a
full-width box and source cards."""

from __future__ import annotations

import threading

import pytest
from playwright.sync_api import Page, expect

from tests.threads import wait_until

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 420, "height": 860}


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory, docs_dir):
    # a long answer budget: the Stop test must catch the generator mid-answer
    app = start_app(tmp_path_factory.mktemp("ui-chat") / "indexes" / "default", max_new_tokens=4000)
    app.service.ingest(None, [("aurora.md", docs_dir / "aurora.md")])
    app.service.create_kb("empty")
    return app


def open_app(page: Page, live, viewport: dict = DESKTOP) -> None:
    page.set_viewport_size(viewport)
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")


def ask(page: Page, question: str, mode: str) -> None:
    page.get_by_label(mode, exact=True).check()
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")


def in_view(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    viewport = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


def test_stop_ends_the_generation_on_the_server_and_the_box_is_locked_meanwhile(page: Page, live):
    open_app(page, live)
    generator = live.service.models.generator()
    ask(page, "At what temperature is the seed vault kept?", "generate")
    # while the answer streams, a question can't be typed into nowhere: the box is locked and says why
    box = page.locator("#question textarea")
    expect(box).to_be_disabled()
    expect(box).to_have_attribute("placeholder", "Answering… press Stop to ask something else now.")
    expect(page.locator("#send")).to_be_hidden()
    wait_until(lambda: generator.running == 1, "the generator decoding the answer")
    # The model's next step waits while the test holds its turn: the tiny test model would otherwise finish a
    # whole answer before a click gets through, which no real model does.
    with live.service.models.text_embedder.gate.turn():
        page.locator("#stop").dispatch_event("click")  # no wait for a "stable" button: the answer moves the page
        expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("Stopped")
        expect(box).to_be_enabled()
        expect(page.locator("#send")).to_be_visible()
        expect(page.locator("#stop")).to_be_hidden()
        assert generator.running == 1  # mid-answer
    wait_until(lambda: generator.running == 0 and generator.waiting == 0, "the generation ended on the server")
    session = page.evaluate("window.localStorage.getItem('loupe-session')")
    # a stopped answer is not kept: a reload shows what the page showed
    assert live.service.conversations.messages(session) == []

    ask(page, "Who may open the seed vault?", "extractive")  # the next question goes through as usual
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("station botanist")


def answer_threads() -> int:
    """The threads reading an answer's events for the chat (ui.chat.AnswerFeed)."""
    return sum(thread.name == "loupe-answer" for thread in threading.enumerate())


def test_stop_during_retrieval_ends_the_request_before_generation(page: Page, live):
    open_app(page, live)
    page.get_by_role("button", name="New chat").click()
    gate = live.service.models.text_embedder.gate
    generator = live.service.models.generator()
    asked_generator: list[object] = []
    real_stream = generator.stream
    # a spy, not a stand-in: it notes each call and the real generator answers it
    generator.stream = lambda *args, **kwargs: asked_generator.append(args) or real_stream(*args, **kwargs)
    try:
        with gate.turn():  # the model is busy (as with an ingest's batch): the question's embedding waits for it
            ask(page, "How often do supply flights land on the runway?", "generate")
            wait_until(lambda: gate.waiting == 1, "the question waiting inside retrieval")
            expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("Searching the documents")
            page.locator("#stop").click()
            # ready again while retrieval is still held up
            expect(page.locator("#question textarea")).to_be_enabled()
            expect(page.locator("#send")).to_be_visible()
            expect(page.locator("#stop")).to_be_hidden()
            expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("Stopped")
            assert gate.waiting == 1
        wait_until(lambda: answer_threads() == 0, "the stopped request to finish its retrieval and end")
    finally:
        generator.stream = real_stream
    assert asked_generator == []  # the generator was never asked
    assert generator.running == 0 and generator.waiting == 0
    session = page.evaluate("window.localStorage.getItem('loupe-session')")
    assert live.service.conversations.messages(session) == []
    expect(page.locator("#sources")).not_to_contain_text("aurora.md")  # nothing of the stopped answer came late


def test_a_citation_opens_its_source_in_context_within_the_window(page: Page, live):
    open_app(page, live)
    page.get_by_role("button", name="New chat").click()
    ask(page, "Who may open the seed vault?", "extractive")
    link = page.locator("#chatbot [data-testid='bot'] a[href='#cite-1']").last
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("#context mark")).to_contain_text("station botanist")
    expect(page.locator("#sources .source-card.selected")).to_contain_text("[1]")
    wait_until(lambda: in_view(page, "#context"), "the passage in context inside the window")
    # a source card opens the same way
    page.locator("#sources .source-card").first.click()
    expect(page.locator("#context")).to_contain_text("aurora.md")


def test_each_mode_is_explained_and_the_choice_survives_a_reload(page: Page, live):
    from rag.settings import MODE_DESCRIPTIONS

    open_app(page, live)
    help_lines = page.locator("#mode-help li")
    expect(help_lines).to_have_count(len(MODE_DESCRIPTIONS))
    for mode, description in MODE_DESCRIPTIONS.items():
        expect(page.locator("#mode-help")).to_contain_text(f"{mode}: {description}")
    expect(page.get_by_label("answer-first", exact=True)).to_be_checked()  # the default
    page.get_by_label("extractive", exact=True).check()
    page.reload()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    expect(page.get_by_label("extractive", exact=True)).to_be_checked()


def test_the_question_box_is_in_view_on_first_load_and_no_label_floats_over_the_chat(page: Page, live):
    page.set_viewport_size(DESKTOP)
    page.goto(live.url)
    page.evaluate("window.localStorage.clear()")  # a first visit
    page.reload()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    page.click("#kb-pick input")
    page.get_by_role("option", name="empty", exact=True).click()
    expect(page.locator("#empty-banner")).to_be_visible()  # the tallest first page: an empty knowledge base
    assert in_view(page, "#question textarea")
    assert in_view(page, "#send")
    expect(page.locator("#chatbot [data-testid='block-label']")).to_have_count(0)


def test_on_a_phone_the_box_is_full_width_and_sources_are_cards(page: Page, live):
    open_app(page, live, PHONE)
    ask(page, "When do the supply flights land?", "extractive")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("second Tuesday")
    row = page.locator("#question-row").bounding_box()
    box = page.locator("#question textarea").bounding_box()
    assert box["width"] >= 0.85 * row["width"], (box, row)
    cards = page.locator("#sources .source-card")
    expect(cards.first).to_contain_text("aurora.md")
    assert page.locator("#sources table").count() == 0
    card = cards.first.bounding_box()
    assert card["x"] >= 0 and card["x"] + card["width"] <= PHONE["width"]  # no sideways scrolling


def test_earlier_conversations_are_listed_per_knowledge_base_and_can_be_deleted(page: Page, live):
    open_app(page, live)
    conversations = page.locator("#conversations label")
    bot = page.locator("#chatbot [data-testid='bot']")
    ask(page, "When do the supply flights land?", "extractive")
    expect(bot.last).to_contain_text("second Tuesday")
    page.click("#new-chat")  # the first conversation is kept, and listed
    expect(page.locator("#chatbot")).not_to_contain_text("supply flights")
    expect(conversations).to_have_count(1)
    ask(page, "Who may open the seed vault?", "extractive")
    expect(bot.last).to_contain_text("station botanist")
    expect(conversations).to_have_count(2)
    expect(conversations.first).to_contain_text("Who may open the seed vault?")  # newest first

    conversations.filter(has_text="supply flights").click()
    expect(bot.last).to_contain_text("second Tuesday")
    expect(page.locator("#chatbot")).not_to_contain_text("station botanist")
    page.reload()  # the conversation shown and the list survive a reload
    expect(bot.last).to_contain_text("second Tuesday")
    expect(conversations).to_have_count(2)

    page.click("#kb-pick input")
    page.get_by_role("option", name="empty", exact=True).click()
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base: empty")
    expect(conversations).to_have_count(0)  # each knowledge base lists its own
    expect(page.locator("#chatbot")).not_to_contain_text("second Tuesday")
    page.click("#kb-pick input")
    page.get_by_role("option", name="default", exact=True).click()
    expect(conversations).to_have_count(2)
    expect(bot.last).to_contain_text("station botanist")  # back in default: its newest conversation

    shown = page.evaluate("window.localStorage.getItem('loupe-session')")
    assert live.service.conversations.messages(shown)[0].content == "Who may open the seed vault?"
    page.click("#delete-conversation")
    expect(conversations).to_have_count(1)
    expect(page.locator("#chatbot")).not_to_contain_text("station botanist")
    expect(bot.last).to_contain_text("second Tuesday")  # the one left is shown
    assert live.service.conversations.messages(shown) == []  # gone on the server too
