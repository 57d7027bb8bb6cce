"""The Explore tab in a real headless Chromium: the map (points drawn, hover, a click that opens the passage, a
question with its passages, the last Chat question), word vectors (training, neighbours, analogies, an unknown
word), the similarity playground and the image tags (tiny random CLIP: plumbing, not quality)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from rag.explore import image_tags
from service.explore import TAGS_WAIT
from tests.threads import wait_until

pytestmark = pytest.mark.slow

FILES = ("aurora.md", "lighthouse.txt", "photo.png", "other.png")


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory, docs_dir):
    app = start_app(tmp_path_factory.mktemp("explore") / "indexes" / "default")
    rows = app.service.ingest(None, [(name, docs_dir / name) for name in FILES])
    assert [row.status for row in rows] == ["added"] * len(FILES), [row.message for row in rows]
    return app


def open_explore(page: Page, live, view: str) -> None:
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("4 documents")
    page.get_by_role("tab", name="Explore").click()
    page.get_by_role("tab", name=view, exact=True).click()


def point_at(page: Page, locator) -> tuple[float, float]:
    """The mouse over a map point: plotly's drag layer lies over the points and computes hover and clicks from
    the mouse's moves, so the mouse moves there in steps rather than hovering the point's element."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y - 20)
    page.mouse.move(x, y, steps=5)
    return x, y


def test_map_points_hover_and_a_click_opens_the_passage(page: Page, live):
    chunks = sum(d.chunks for d in live.service.documents(None))
    open_explore(page, live, "Map")
    page.click("#explore-draw")
    points = page.locator("#explore-map .scatterlayer .point")
    expect(points).to_have_count(chunks)
    expect(page.locator("#explore-map-note")).to_contain_text(f"{chunks} passages, projected to 2-D with PCA")
    expect(page.locator("#explore-map .legendtext")).to_have_text(["aurora.md", "lighthouse.txt"])

    x, y = point_at(page, points.first)
    label = page.locator("#explore-map .hoverlayer .hovertext")
    expect(label).to_be_visible()
    head, snippet = label.locator("tspan.line").all_text_contents()[:2]  # file and place, then the passage
    document = head.split()[0]
    assert document in ("aurora.md", "lighthouse.txt")
    page.mouse.click(x, y)
    context = page.locator("#explore-context .loupe-context")
    expect(context).to_contain_text(document)
    expect(context.locator("mark")).to_contain_text(" ".join(snippet.split()[:6]))


def test_a_click_on_the_map_scrolls_the_passage_below_it_into_view(page: Page, live):
    """The passage opens below the map: with the map filling a laptop's window it is out of sight until the page
    scrolls to it."""
    page.set_viewport_size({"width": 1280, "height": 560})
    open_explore(page, live, "Map")
    page.click("#explore-draw")
    points = page.locator("#explore-map .scatterlayer .point")
    expect(points.first).to_be_visible()
    page.locator("#explore-map").evaluate("map => map.scrollIntoView({block: 'start'})")
    highest = min(points.all(), key=lambda point: point.bounding_box()["y"])
    x, y = point_at(page, highest)
    page.mouse.click(x, y)
    context = page.locator("#explore-context .loupe-context")
    expect(context).to_be_attached()
    expect(context).to_be_in_viewport()


def test_a_question_typed_or_asked_in_chat_is_drawn_with_its_passages(page: Page, live):
    open_explore(page, live, "Map")
    page.fill("#explore-question textarea", "When do supply flights land?")
    page.press("#explore-question textarea", "Enter")
    legend = page.locator("#explore-map .legendtext")
    expect(legend).to_contain_text(["aurora.md", "lighthouse.txt", "Retrieved passages", "Question"])
    expect(page.locator("#explore-map-note")).to_contain_text("★ is the question")

    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("extractive", exact=True).check()
    page.fill("#question textarea", "When was the lighthouse automated?")
    page.press("#question textarea", "Enter")
    expect(page.locator("#sources")).to_contain_text("lighthouse.txt", timeout=90_000)
    page.get_by_role("tab", name="Explore").click()
    page.click("#explore-from-chat")
    expect(page.locator("#explore-question textarea")).to_have_value("When was the lighthouse automated?")
    expect(legend).to_contain_text(["Question"])


def test_word_vectors_neighbours_analogies_and_an_unknown_word(page: Page, live):
    open_explore(page, live, "Word vectors")
    page.click("#explore-train")
    expect(page.locator("#explore-words-status")).to_contain_text("skipgram word vectors ready", timeout=120_000)
    page.fill("#explore-word textarea", "Vault")
    page.click("#explore-neighbours")
    result = page.locator("#explore-words-result")
    expect(result.locator("caption")).to_have_text("Nearest to 'Vault'")
    assert result.locator("tr").count() > 3  # a header and the neighbours
    expect(result.locator("td").nth(1)).to_have_text(re.compile(r"^-?[01]\.\d{3}$"))  # a cosine

    page.fill("#explore-a textarea", "seed")
    page.fill("#explore-b textarea", "vault")
    page.fill("#explore-c textarea", "station")
    page.click("#explore-analogy")
    expect(result.locator("caption")).to_have_text("seed − vault + station ≈")

    page.fill("#explore-word textarea", "vualt")
    page.click("#explore-neighbours")
    expect(result).to_contain_text("'vualt' is not in the word vectors' vocabulary")
    expect(result).to_contain_text("closest known spellings: vault")


def test_the_map_offers_umap(page: Page, live):
    pytest.importorskip("umap", reason="umap-learn is not installed (requirements.txt pins it)")
    chunks = sum(d.chunks for d in live.service.documents(None))
    open_explore(page, live, "Map")
    page.get_by_label("umap", exact=True).check()
    page.click("#explore-draw")
    # the first UMAP of a process compiles its numba code: tens of seconds on 2 cores
    expect(page.locator("#explore-map-note")).to_contain_text("projected to 2-D with UMAP", timeout=600_000)
    expect(page.locator("#explore-map .scatterlayer .point")).to_have_count(chunks)


def test_similarity_playground_draws_both_heatmaps(page: Page, live):
    open_explore(page, live, "Similarity")
    page.click("#explore-compare")
    expect(page.locator("#explore-contextual .heatmaplayer")).to_have_count(1)
    expect(page.locator("#explore-contextual")).to_contain_text("1.00")
    expect(page.locator("#explore-similarity-note")).to_contain_text("Every text uses 'bank'")
    # word2vec's matrix stands beside it once word vectors exist (the previous test trained them)
    expect(page.locator("#explore-context-free .heatmaplayer")).to_have_count(1)


def test_image_tags_shown_searched_and_relabelled(page: Page, live):
    open_explore(page, live, "Image tags")
    page.click("#explore-show-tags")
    gallery = page.locator("#explore-tags-gallery")
    expect(page.locator("#explore-tags-note")).to_have_text("2 images.")
    expect(gallery).to_contain_text("photo.png, page 1:")
    expect(gallery).to_contain_text("other.png, page 1:")

    page.fill("#explore-labels textarea", "static noise, television")
    page.click("#explore-save-labels")
    # the re-tagging's progress, then its end (every image tagged again: the label list changed)
    expect(page.locator("#explore-tags-note")).to_contain_text("✓ Labels saved; 2 images tagged")
    assert live.service.explore.labels(None) == ["static noise", "television"]
    assert set(live.service.explore.tags_of(None)) == {i.image.id for i in live.service.explore.tagged_images(None)}
    page.fill("#explore-tag-query textarea", "TELEVISION")
    page.click("#explore-show-tags")
    matching = len(live.service.explore.tagged_images(None, "television"))
    expect(page.locator("#explore-tags-note")).to_have_text(f"{matching} images with a tag containing 'TELEVISION'.")


def test_a_changed_knowledge_base_is_retrained_and_retagged_in_the_background(live, tmp_path):
    explore = live.service.explore
    training = explore.train_words(None, "skipgram")  # the knowledge base as it is now (other tests add to it)
    wait_until(lambda: training.done, "the word vectors trained")
    before = explore.word_vectors(None, "skipgram")
    (tmp_path / "zeppelins.txt").write_text("The zeppelin hangar held two zeppelin airships.\n" * 3)
    assert live.service.ingest(None, [("zeppelins.txt", tmp_path / "zeppelins.txt")])[0].status == "added"
    jobs = explore.documents_changed(None)  # what the page does after every ingest or deletion
    assert list(jobs) == ["skipgram"]
    wait_until(lambda: jobs["skipgram"].done, "the word vectors retrained")
    assert "zeppelin" in jobs["skipgram"].result.key_to_index and "zeppelin" not in before.key_to_index
    assert explore.word_vectors(None, "skipgram") is jobs["skipgram"].result
    store = live.service.kb(None)
    labels = image_tags.label_list(live.settings.image_labels, store)
    tags = image_tags.cached_tags(store, live.service.models.image_embedder, labels)
    assert tags is not None and len(tags) == 2  # the ingest brought the tags up to date with the store itself
    assert explore.tags_of(None) == tags  # what the image search's gallery and the library show


def test_without_clip_one_line_says_tagging_waits(page: Page, start_app, tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("explore-no-clip") / "indexes" / "default", clip=False)
    page.goto(app.url)
    page.get_by_role("tab", name="Explore").click()
    page.get_by_role("tab", name="Image tags", exact=True).click()
    expect(page.locator("#explore-tags-wait")).to_have_text(TAGS_WAIT.replace("`", ""))
    expect(page.locator("#explore-show-tags")).to_be_disabled()
