"""The ingest pipeline on real files, the real MiniLM and a real FAISS store."""

from __future__ import annotations

import shutil

import pytest

from ingest.pipeline import Ingestor
from rag.records import ModelId
from rag.store import KnowledgeBase, ModelMismatch
from tests.builders import make_pdf, png_bytes, sample_image

PAGES = [
    ["Chapter one introduces the harbour of Valparaiso and its funiculars."],
    ["The lighthouse keeper logged 412 ships in the winter of 1911.", "A photograph of the keeper follows."],
    ["Appendix: the tide tables were compiled by Maria Ortega."],
]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    (folder / "notes").mkdir(parents=True)
    make_pdf(folder / "harbour.pdf", PAGES, images={2: sample_image("astronaut")})
    (folder / "notes" / "bread.md").write_text("# Baking\n\nSourdough needs a starter fed with flour and water.\n\n"
                                               "## Timing\n\nThe dough proofs for twelve hours at room temperature.\n")
    (folder / "notes" / "tea.txt").write_text("Green tea should steep for two minutes at 80 degrees.\n")
    (folder / "cat.png").write_bytes(png_bytes(sample_image("chelsea")))
    return folder


def ingestor(models, ocr=False):
    return Ingestor(models.open_store(), models.settings, models.text_embedder, models.image_embedder, ocr)


def test_folder_ingest_then_search_cites_file_and_page(models, corpus):
    loader = ingestor(models)
    report = loader.ingest([corpus])
    assert [o.status for o in report.outcomes] == ["added"] * 4, report.outcomes
    documents = {d.name: d for d in loader.kb.documents()}
    assert documents["harbour.pdf"].pages == 3
    assert documents["harbour.pdf"].images == 1
    assert documents["cat.png"].images == 1 and documents["cat.png"].chunks == 0
    assert report.totals()["chunks"] == sum(d.chunks for d in documents.values())
    assert set(report.seconds) >= {"parse", "embed", "index"}
    hits = models.assistant(loader.kb).retriever.search("How many ships did the lighthouse keeper record?", 3)
    assert (hits[0].chunk.file, hits[0].chunk.page) == ("harbour.pdf", 2)
    hits = models.assistant(loader.kb).retriever.search("how long does the dough rise", 3)
    assert (hits[0].chunk.file, hits[0].chunk.heading) == ("bread.md", "Timing")


def test_same_bytes_again_are_a_duplicate(models, corpus, tmp_path):
    loader = ingestor(models)
    loader.ingest([corpus])
    before = [(d.id, d.chunks) for d in loader.kb.documents()]
    generation = loader.kb.generation
    copy = tmp_path / "renamed-copy.pdf"
    shutil.copy(corpus / "harbour.pdf", copy)
    report = loader.ingest([corpus / "harbour.pdf", copy])
    assert [o.status for o in report.outcomes] == ["duplicate", "duplicate"]
    assert "already in the knowledge base as 'harbour.pdf'" in report.outcomes[1].message
    assert [(d.id, d.chunks) for d in loader.kb.documents()] == before
    assert loader.kb.generation == generation  # nothing was written


def test_changed_file_replaces_its_old_version(models, corpus):
    loader = ingestor(models)
    loader.ingest([corpus])
    tea = corpus / "notes" / "tea.txt"
    tea.write_text("Black tea should steep for four minutes in boiling water.\n")
    report = loader.ingest([tea])
    assert report.outcomes[0].status == "replaced"
    teas = [d for d in loader.kb.documents() if d.name == "tea.txt"]
    assert len(teas) == 1
    texts = [c.text for c in loader.kb.chunks_of_document(teas[0].id)]
    assert texts == ["Black tea should steep for four minutes in boiling water."]
    hits = models.assistant(loader.kb).retriever.search("green tea 80 degrees", 10)
    assert all("Green tea" not in h.chunk.text for h in hits)
    assert loader.kb.text_index.size == sum(d.chunks for d in loader.kb.documents())


def test_bad_files_fail_one_by_one_and_change_nothing(models, corpus, tmp_path):
    loader = ingestor(models)
    loader.ingest([corpus / "notes"])
    before = [(d.id, d.sha256, d.chunks) for d in loader.kb.documents()]
    bad = tmp_path / "bad"
    bad.mkdir()
    pdf_bytes = (corpus / "harbour.pdf").read_bytes()
    (bad / "truncated.pdf").write_bytes(pdf_bytes[: len(pdf_bytes) // 3])
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (bad / "slides.pptx").write_bytes(b"PK\x03\x04 not supported")
    (bad / "good.md").write_text("Quokkas live on Rottnest Island.\n")
    files = sorted(bad.iterdir()) + [tmp_path / "missing.pdf"]
    report = loader.ingest(files)
    by_name = {o.path.rsplit("/", 1)[-1]: o for o in report.outcomes}
    assert by_name["good.md"].status == "added"
    failed = {name: o.message for name, o in by_name.items() if o.status == "failed"}
    assert set(failed) == {"truncated.pdf", "empty.txt", "binary.txt", "broken.png", "slides.pptx", "missing.pdf"}
    for name, message in failed.items():
        assert name in message  # every message names its file...
        assert len(message) > len(name) + 5  # ...and gives a reason
    # the type comes from the bytes, not the name: a zip that is no Word document is refused as what it is
    assert "not a supported document" in failed["slides.pptx"]
    assert "empty" in failed["empty.txt"]
    after = [(d.id, d.sha256, d.chunks) for d in loader.kb.documents()]
    assert after[: len(before)] == before and len(after) == len(before) + 1


def test_size_limit_is_enforced_with_the_limit_named(models, corpus):
    settings = models.settings.with_(max_file_mb=0.001)
    loader = Ingestor(models.open_store(), settings, models.text_embedder)
    outcome = loader.ingest([corpus / "harbour.pdf"]).outcomes[0]
    assert outcome.status == "failed" and "over the 0.001 MB limit" in outcome.message


def test_images_wait_without_clip_then_embed_and_search(models, models_without_clip, corpus):
    report = ingestor(models_without_clip).ingest([corpus / "cat.png", corpus / "harbour.pdf"])
    assert report.images_waiting == 2
    loader = ingestor(models)  # CLIP weights arrived
    assert loader.embed_waiting_images() == 2
    assert loader.kb.images_waiting() == []
    retriever = models.assistant(loader.kb).retriever
    hits = retriever.similar_images(png_bytes(sample_image("chelsea")), 2)
    assert hits[0].image.file == "cat.png" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    astronaut = retriever.similar_images(loader.kb.image_path(hits[1].image).read_bytes(), 1)[0]
    assert (astronaut.image.file, astronaut.image.page) == ("harbour.pdf", 2)
    loader.kb.delete(loader.kb.resolve("cat.png").id)
    assert [h.image.file for h in retriever.similar_images(png_bytes(sample_image("chelsea")), 5)] == ["harbour.pdf"]


def test_ocr_makes_a_screenshot_searchable(models, tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 140), "white")
    ImageDraw.Draw(image).text((20, 40), "Warranty expires March 2031", fill="black",
                               font=ImageFont.load_default(size=48))
    path = tmp_path / "screenshot.png"
    image.save(path)
    loader = ingestor(models, ocr=True)
    report = loader.ingest([path])
    assert report.outcomes[0].chunks == 1 and report.seconds["ocr"] > 0
    hit = models.assistant(loader.kb).retriever.search("when does the warranty expire", 1)[0]
    assert hit.chunk.file == "screenshot.png" and "2031" in hit.chunk.text


def test_a_scanned_pdf_reports_ocr_page_by_page_before_each_page_is_read(models, render_text, tmp_path):
    """A scan's pages take seconds each to recognise: each is reported as its OCR starts (stage "ocr"), before the
    page's text arrives (stage "parse"), so the upload's table and bar move page by page."""
    pages = [render_text([(20, 30, f"Shelf {n} holds the tide tables")], (560, 110)) for n in (1, 2)]
    path = tmp_path / "scan.pdf"
    pages[0].save(path, format="PDF", resolution=100, save_all=True, append_images=pages[1:])
    events: list[tuple[str, int, int]] = []
    report = ingestor(models, ocr=True).ingest([path], on_progress=lambda name, *event: events.append(event))
    assert report.outcomes[0].status == "added", report.outcomes[0].message
    reading = [e for e in events if e[0] in ("ocr", "parse") and e[2]]
    assert reading == [("parse", 0, 2), ("ocr", 1, 2), ("parse", 1, 2), ("ocr", 2, 2), ("parse", 2, 2)]


def test_real_world_pdf_answer_cites_its_page(models, pypdf_resources):
    """A 19-page PDF nobody in this project wrote (from pypdf's test suite): its revision history is on page 3."""
    pdf = pypdf_resources / "GeoBase_NHNC1_Data_Model_UML_EN.pdf"
    loader = ingestor(models)
    outcome = loader.ingest([pdf]).outcomes[0]
    assert (outcome.status, outcome.pages) == ("added", 19)
    answer = models.assistant(loader.kb).ask("When was the first draft for discussion with Nova Scotia written?",
                                             mode="extractive")
    assert "September 2002" in answer.text, answer.text
    cited = [(s.file, s.page) for s in answer.sources if s.cited]
    assert ("GeoBase_NHNC1_Data_Model_UML_EN.pdf", 3) in cited


def test_small_files_share_model_calls_but_keep_their_order_and_own_outcomes(models, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    animals = ["otters", "herons", "badgers", "lynxes", "ibexes", "walruses", "marmots", "puffins"]
    for n, animal in enumerate(animals):
        (folder / f"{n}-{animal}.txt").write_text(f"Field note {n}: the {animal} were counted at dawn.")
    (folder / "9-copy.txt").write_bytes((folder / "3-lynxes.txt").read_bytes())
    (folder / "8-empty.txt").write_bytes(b"")
    loader = ingestor(models)
    report = loader.ingest([folder])
    names = [o.path.rsplit("/", 1)[-1] for o in report.outcomes]
    assert names == sorted(names)  # input order, whatever the embedding groups were
    statuses = {name: o.status for name, o in zip(names, report.outcomes)}
    assert statuses.pop("9-copy.txt") == "duplicate" and statuses.pop("8-empty.txt") == "failed"
    assert set(statuses.values()) == {"added"}
    assert "same content as '3-lynxes.txt'" in report.outcomes[names.index("9-copy.txt")].message
    hit = models.assistant(loader.kb).retriever.search("walruses at dawn", 1)[0]
    assert hit.chunk.file == "5-walruses.txt"


def test_large_file_streams_through_in_batches(models, tmp_path):
    from ingest.pipeline import CHUNK_BATCH

    settings = models.settings.with_(chunk_tokens=24, chunk_overlap=0)
    sentences = [f"Sentence {n} describes item number {n} of the inventory in plain words." for n in range(700)]
    big = tmp_path / "inventory.txt"
    big.write_text(" ".join(sentences))
    loader = Ingestor(models.open_store(), settings, models.text_embedder)
    outcome = loader.ingest([big]).outcomes[0]
    assert outcome.status == "added" and outcome.chunks > CHUNK_BATCH * 2
    ordinals = [c.ordinal for c in loader.kb.chunks_of_document(outcome.document_id)]
    assert ordinals == list(range(outcome.chunks))
    assert loader.kb.text_index.size == outcome.chunks


def test_same_file_from_another_process_meanwhile_is_a_duplicate(models, corpus):
    """While this ingest parses and embeds (no lock held), another store object, as another process would,
    commits the same bytes: the check inside the commit's transaction makes this one a duplicate."""
    loader = ingestor(models)
    other = Ingestor(KnowledgeBase(loader.kb.folder, models.text_embedder.model_id), models.settings,
                     models.text_embedder)
    tea = corpus / "notes" / "tea.txt"
    raced: list[str] = []

    def on_progress(name, stage, done, total):
        if stage == "embed" and not raced:
            raced.append(other.ingest([tea]).outcomes[0].status)

    outcome = loader.ingest([tea], on_progress=on_progress).outcomes[0]
    assert raced == ["added"]
    assert outcome.status == "duplicate" and "already in the knowledge base as 'tea.txt'" in outcome.message
    assert len(loader.kb.documents()) == 1
    hits = models.assistant(loader.kb).retriever.search("green tea", 5, mode="dense")
    assert [h.chunk.file for h in hits] == ["tea.txt"]


def test_an_embedder_of_another_model_than_the_stores_is_refused_before_any_vector_is_written(models, tmp_path):
    """A knowledge base may hold another model's vectors than the configured one (the app opens each with its own):
    ingesting into it with the configured embedder would mix the two models' vectors without a word."""
    kb = KnowledgeBase(tmp_path / "int8", ModelId("all-MiniLM-L6-v2+onnx-int8", 384), use_gpu=False)
    try:
        with pytest.raises(ModelMismatch, match="'all-MiniLM-L6-v2\\+onnx-int8' \\(384-d\\), not of "
                                                "'all-MiniLM-L6-v2' \\(384-d\\)") as error:
            Ingestor(kb, models.settings, models.text_embedder)
        assert str(tmp_path) not in str(error.value)
        assert kb.documents() == []
    finally:
        kb.close()
