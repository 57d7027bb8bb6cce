"""The Documents tab in a real Chromium, finding by finding of issue 9: a document is deleted only after a
confirmation, a library row selects its document, every knowledge base shows its own state after a switch, and an
upload shows an overall bar with the time so far and counts in words ("1 page")."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("ui-docs") / "indexes" / "default")
    app.service.create_kb("other")
    return app


def open_documents(page: Page, live) -> None:
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    page.get_by_role("tab", name="Documents").click()


def upload(page: Page, *paths) -> None:
    page.set_input_files("#upload input[type=file]", [str(p) for p in paths])
    for path in paths:
        expect(page.locator(f"#upload a[href$='/{path.name}']")).to_be_visible()
    page.click("#add-files")


def switch_to(page: Page, kb: str) -> None:
    page.click("#kb-pick input")
    page.get_by_role("option", name=kb, exact=True).click()
    expect(page.locator("#kb-status")).to_contain_text(f"Knowledge base: {kb}")


def test_an_upload_shows_an_overall_bar_and_counts_in_words(page: Page, live, docs_dir):
    open_documents(page, live)
    upload(page, docs_dir / "aurora.md", docs_dir / "lighthouse.txt")
    overall = page.locator("#upload-overall")
    expect(overall).to_contain_text("2 of 2 files")
    expect(overall).to_contain_text(re.compile(r"\d+ s elapsed"))
    assert page.locator("#upload-overall progress").get_attribute("value") == "2"
    row = page.locator("#upload-progress tr[data-file='aurora.md']")
    expect(row).to_contain_text("added")
    expect(row.locator("td").nth(2)).to_have_text("1 page")  # the progress column, in the right number


def test_a_library_row_selects_its_document_and_deleting_asks_first(page: Page, live):
    open_documents(page, live)
    page.locator("#library [role=gridcell]").filter(has_text="lighthouse.txt").first.click()
    expect(page.locator("#doc-pick input")).to_have_value(re.compile(r"lighthouse\.txt \(id \d+\)"))
    page.click("#delete-doc")
    expect(page.locator("#confirm-delete-doc")).to_contain_text("Delete lighthouse.txt")
    expect(page.locator("#confirm-delete-doc")).to_contain_text("cannot be undone")
    page.click("#cancel-delete")
    expect(page.locator("#confirm-delete-doc")).to_be_hidden()
    assert sorted(d.name for d in live.service.documents()) == ["aurora.md", "lighthouse.txt"]  # nothing deleted yet

    page.click("#delete-doc")
    page.click("#confirm-delete")
    expect(page.locator("#doc-message")).to_contain_text("Deleted lighthouse.txt")
    expect(page.locator("#library")).not_to_contain_text("lighthouse.txt")
    assert [d.name for d in live.service.documents()] == ["aurora.md"]


def test_each_knowledge_base_shows_its_own_state_after_a_switch(page: Page, live, docs_dir):
    open_documents(page, live)
    upload(page, docs_dir / "photo.png")
    expect(page.locator("#upload-progress")).to_contain_text("photo.png")
    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("extractive", exact=True).check()
    page.fill("#question textarea", "When do the supply flights land?")
    page.press("#question textarea", "Enter")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("second Tuesday")

    switch_to(page, "other")  # empty: nothing of the default knowledge base stays on screen
    expect(page.locator("#empty-banner")).to_be_visible()
    expect(page.locator("#chatbot")).not_to_contain_text("supply flights")
    expect(page.locator("#sources")).not_to_contain_text("aurora.md")
    page.get_by_role("tab", name="Documents").click()
    expect(page.locator("#progress")).not_to_contain_text("photo.png")

    switch_to(page, "default")  # and its own chat comes back
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#chatbot")).to_contain_text("When do the supply flights land?")
    expect(page.locator("#sources")).to_contain_text("aurora.md")


def test_the_library_shows_each_documents_image_tags_and_a_search_by_tag_finds_the_image(page: Page, live, docs_dir):
    """The tiny random CLIP's tags mean nothing: this checks the plumbing (the ingest tags the picture, the library
    shows the tags, the image search finds the picture by one of them), not the tags' quality."""
    open_documents(page, live)
    upload(page, docs_dir / "other.png")
    expect(page.locator("#upload-progress tr[data-file='other.png']")).to_contain_text("added")
    (document,) = [d for d in live.service.documents(None) if d.name == "other.png"]
    tags = live.service.explore.tags_by_document(None)[document.id]
    assert len(tags) == 3  # tagged by the ingest (TAGS_PER_IMAGE labels of the picture's one image)
    row = page.locator("#library [role=row]").filter(has_text="other.png")
    expect(row).to_contain_text(", ".join(t.label for t in tags))
    expect(page.locator("#library thead")).to_contain_text("Image tags")

    page.get_by_role("tab", name="Image search").click()
    page.get_by_label("Describe the image").fill(f"a {tags[-1].label} please")
    page.get_by_role("button", name="Search by text").click()
    expect(page.locator("#image-results")).to_contain_text("other.png, page 1")
    expect(page.locator("#image-results")).to_contain_text(tags[-1].label)



# Records every text Gradio's status trackers show over the upload's outputs ("processing | 0.5/7.1s": the time so
# far, then its estimate of the whole), as it changes.
WATCH_TRACKERS_JS = """() => {
  window.__loupeTrackers = [];
  const trackers = "#progress .wrap, #library .wrap";
  new MutationObserver(() => {
    for (const tracker of document.querySelectorAll(trackers)) {
      // a tracker told to hide stays in the page, at opacity 0
      if (tracker.checkVisibility({opacityProperty: true})) window.__loupeTrackers.push(tracker.textContent.trim());
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
ESTIMATE = re.compile(r"\d/\d+(\.\d+)?s")


def test_an_upload_shows_no_time_estimate_carried_over_from_the_last_one(page: Page, live, docs_dir, tmp_path):
    """Gradio estimates an event's time from the same event's past runs: the second upload was shown the first
    one's time ("0.5/7.1s"), whatever its files. The upload's own bar tells the time so far instead."""
    open_documents(page, live)
    upload(page, docs_dir / "aurora.md")
    expect(page.locator("#upload-progress tr[data-file='aurora.md']")).to_contain_text(re.compile("added|unchanged"))
    expect(page.locator("#upload a")).to_have_count(0)  # the files picked are cleared once they are in
    page.evaluate(WATCH_TRACKERS_JS)
    (tmp_path / "second.txt").write_text("A second upload, smaller or larger than the first one.\n")
    upload(page, tmp_path / "second.txt")
    expect(page.locator("#upload-progress tr[data-file='second.txt']")).to_contain_text("added")
    expect(page.locator("#upload-overall")).to_contain_text(re.compile(r"\d+ s elapsed"))
    shown = page.evaluate("window.__loupeTrackers")
    assert not [text for text in shown if ESTIMATE.search(text)], shown
