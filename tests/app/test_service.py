"""The app's service layer on real models: uploads, limits, per-file outcomes, history, knowledge bases."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from rag.answering import Answer
from rag.conversations import check_session
from rag.errors import Busy, NotFound
from rag.followups import Rewrite
from service import LoupeService, ServiceError, inside, safe_upload_name
from tests.conftest import make_settings


@pytest.fixture
def service(tmp_path, text_embedder, image_embedder, tiny_generator_dir):
    from rag.components import Models

    settings = make_settings(tmp_path / "indexes" / "default", generator_model=str(tiny_generator_dir),
                             max_new_tokens=12, max_upload_files=3, max_upload_mb=0.05)
    service = LoupeService(settings, Models(settings, text_embedder, image_embedder, ""))
    yield service
    service.close()


def uploads(docs_dir: Path, *names: str) -> list[tuple[str, Path]]:
    return [(name, docs_dir / name) for name in names]


def test_uploads_are_copied_under_their_own_name_and_reported_per_file(service, docs_dir):
    rows = service.ingest(None, uploads(docs_dir, "aurora.md", "broken.pdf", "notes.xyz"))
    assert [(r.name, r.status) for r in rows] == [("aurora.md", "added"), ("broken.pdf", "failed"),
                                                  ("notes.xyz", "failed")]
    assert "corrupt or truncated PDF" in rows[1].message
    assert "unsupported file type '.xyz'" in rows[2].message
    folder = service.kb().folder / "uploads"
    assert sorted(p.name for p in folder.iterdir()) == ["aurora.md"]  # failures leave nothing behind
    [document] = service.documents()
    assert document.name == "aurora.md" and document.path == str(folder / "aurora.md")
    again = service.ingest(None, uploads(docs_dir, "aurora.md"))
    assert again[0].status == "duplicate" and "already in the knowledge base" in again[0].message


def test_limits_on_count_size_and_names(service, docs_dir, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 20_000)  # ~100 KB, over the 0.05 MB limit
    batch = [("big.txt", big), ("aurora.md", docs_dir / "aurora.md"), ("aurora.md", docs_dir / "aurora.md"),
             ("lighthouse.txt", docs_dir / "lighthouse.txt")]
    rows = service.ingest(None, batch)
    assert [r.status for r in rows] == ["failed", "added", "failed", "failed"]
    assert "over the 0.05 MB upload limit" in rows[0].message
    assert "another file in this upload has the same name" in rows[2].message
    assert "one upload takes at most 3 files" in rows[3].message
    escaped = tmp_path / "indexes" / "evil.md"
    rows = service.ingest(None, [("../evil.md", docs_dir / "aurora.md"), ("..", docs_dir / "aurora.md"),
                                 ("a\\b.md", docs_dir / "aurora.md")])
    assert all(r.status == "failed" and "refused" in r.message for r in rows)
    assert not escaped.exists()


def test_names_are_checked_before_anything_is_written(tmp_path):
    assert safe_upload_name("report (final).pdf") == "report (final).pdf"
    for bad in ("../x.pdf", "/etc/passwd", "a/b.txt", "..\\x.txt", "", ".", "..", "x\x00.txt", "x\n.txt"):
        with pytest.raises(ServiceError, match="refused"):
            safe_upload_name(bad)
    folder = tmp_path / "uploads"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    (folder / "link.txt").symlink_to(tmp_path / "outside" / "x.txt")
    with pytest.raises(ServiceError, match="resolves outside"):
        inside(folder, "link.txt")
    assert inside(folder, "ok.txt") == (folder / "ok.txt").resolve()


def test_a_new_version_replaces_and_a_broken_one_keeps_the_old(service, docs_dir, tmp_path):
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir(), second.mkdir()
    shutil.copy(docs_dir / "lighthouse.txt", first / "guide.txt")
    (second / "guide.txt").write_text("The lighthouse now has a cafe on the ground floor.\n")
    assert service.ingest(None, [("guide.txt", first / "guide.txt")])[0].status == "added"
    assert service.ingest(None, [("guide.txt", second / "guide.txt")])[0].status == "replaced"
    [document] = service.documents()
    stored = Path(document.path)
    assert stored.read_text().startswith("The lighthouse now has a cafe")
    (tmp_path / "empty.txt").write_text("   \n")  # no text: the ingest fails
    row = service.ingest(None, [("guide.txt", tmp_path / "empty.txt")])[0]
    assert row.status == "failed" and "no text" in row.message
    assert stored.read_text().startswith("The lighthouse now has a cafe")  # the previous copy is back
    assert [d.id for d in service.documents()] == [document.id]


def test_delete_removes_the_document_and_its_uploaded_copy(service, docs_dir):
    [row] = service.ingest(None, uploads(docs_dir, "lighthouse.txt"))
    path = Path(service.documents()[0].path)
    assert path.exists()
    info = service.delete_document(None, row.document_id)
    assert info.name == "lighthouse.txt" and not path.exists() and service.documents() == []
    with pytest.raises(Exception, match="no document"):
        service.delete_document(None, row.document_id)


def test_chat_rewrites_follow_ups_and_keeps_the_turns(service, docs_dir):
    service.ingest(None, uploads(docs_dir, "aurora.md"))
    session = "test-session-0001"
    events = list(service.chat(None, "At what temperature is the seed vault kept?", 3, "extractive", session))
    assert isinstance(events[0], Rewrite) and not events[0].rewritten
    answer = events[-1]
    assert isinstance(answer, Answer) and "minus eighteen degrees" in answer.text
    events = list(service.chat(None, "and who may open it?", 3, "extractive", session))
    assert events[0].rewritten and "seed vault" in events[0].search
    messages = service.conversations.messages(session)
    assert [m.content for m in messages if m.role == "user"] == [
        "At what temperature is the seed vault kept?", "and who may open it?"]
    meta = messages[-1].meta
    assert meta["searched"] == events[0].search and meta["sources"][0]["file"] == "aurora.md"
    assert {"chunk_id", "document_id", "cited", "score"} <= set(meta["sources"][0])


def test_a_question_the_documents_do_not_answer(service, docs_dir):
    service.ingest(None, uploads(docs_dir, "aurora.md"))
    answer = service.ask(None, "Who won the football world cup in 1954?", 3, "extractive")
    assert not answer.grounded and answer.text == "The documents don't say."
    with pytest.raises(ServiceError, match="mode must be one of"):
        service.ask(None, "anything", 3, "poetry")
    with pytest.raises(ServiceError, match="k must be between"):
        service.ask(None, "anything", 99, "extractive")


def test_a_passage_comes_with_its_neighbours(service, docs_dir, tmp_path):
    long = tmp_path / "long.txt"
    long.write_text("\n\n".join(f"Paragraph {n} is about the topic number {n} of a long story. " * 12
                                for n in range(8)))
    service.ingest(None, [("long.txt", long)])
    chunks = service.kb().chunks_of_document(service.documents()[0].id)
    assert len(chunks) >= 4
    middle = chunks[2]
    passage = service.answers.passage(None, middle.id)
    assert [c.ordinal for c, _ in passage] == [1, 2, 3]
    assert [cited for _, cited in passage] == [False, True, False]
    with pytest.raises(NotFound, match="no longer in the knowledge base"):
        service.answers.passage(None, 999_999)


def test_knowledge_bases_are_created_switched_and_deleted(service, docs_dir):
    assert service.create_kb("hobby") == "hobby"
    assert service.kb_names() == ["default", "hobby"]
    service.ingest("hobby", uploads(docs_dir, "lighthouse.txt"))
    assert [d.name for d in service.documents("hobby")] == ["lighthouse.txt"] and service.documents() == []
    with pytest.raises(ValueError, match="invalid knowledge base name"):
        service.create_kb("../escape")
    with pytest.raises(NotFound, match="no knowledge base named"):
        service.documents("missing")
    lock = service.knowledge_bases.ingest_lock("hobby")
    with lock:  # an ingest is running there
        with pytest.raises(Busy, match="ingesting files right now"):
            service.delete_kb("hobby")
    service.delete_kb("hobby")
    assert service.kb_names() == ["default"]
    with pytest.raises(ValueError, match="cannot be deleted"):
        service.delete_kb("default")


def test_live_ingest_reports_stages_then_the_outcome(service, docs_dir):
    snapshots = list(service.uploads.ingest_live(None, uploads(docs_dir, "aurora.md", "broken.pdf"), interval=0.01))
    final = snapshots[-1]
    assert [(r.stage, r.status) for r in final] == [("done", "added"), ("failed", "failed")]
    assert all(len(rows) == 2 and rows[0].name == "aurora.md" for rows in snapshots)


def test_images_are_found_by_an_identical_image(service, docs_dir):
    service.ingest(None, uploads(docs_dir, "photo.png", "other.png"))
    results = service.similar_images(None, (docs_dir / "photo.png").read_bytes(), 2)
    assert results[0].file == "photo.png" and results[0].score == pytest.approx(1.0, abs=1e-3)
    assert Path(results[0].path).read_bytes() == (docs_dir / "photo.png").read_bytes()
    with pytest.raises(ServiceError, match="not an image"):
        service.similar_images(None, b"not an image", 2)


def test_images_stored_without_clip_are_embedded_later(tmp_path, text_embedder, image_embedder, docs_dir):
    from rag.components import Models

    settings = make_settings(tmp_path / "indexes" / "default")
    without = LoupeService(settings, Models(settings, text_embedder, None, "Image search by text is off: test."))
    without.ingest(None, uploads(docs_dir, "photo.png"))
    assert without.documents()[0].images_waiting == 1
    with pytest.raises(ServiceError, match="Image search by text is off: test."):
        without.uploads.embed_waiting_images(None)
    with pytest.raises(ServiceError, match="needs CLIP as well"):
        without.similar_images(None, (docs_dir / "photo.png").read_bytes())
    without.close()
    with_clip = LoupeService(settings, Models(settings, text_embedder, image_embedder, ""))
    assert with_clip.uploads.embed_waiting_images(None) == 1
    assert with_clip.documents()[0].images_waiting == 0
    assert with_clip.similar_images(None, (docs_dir / "photo.png").read_bytes(), 1)[0].file == "photo.png"
    with_clip.close()


def test_a_session_id_with_a_trailing_newline_is_refused():
    assert check_session("abcdefgh12") == "abcdefgh12"
    with pytest.raises(ValueError, match="invalid session id"):
        check_session("abcdefgh12\n")


def test_a_crash_during_a_re_upload_is_settled_when_the_store_opens_again(service, docs_dir):
    service.ingest(None, uploads(docs_dir, "aurora.md", "lighthouse.txt"))
    folder = service.kb().folder / "uploads"
    committed = (folder / "aurora.md").read_bytes()
    # As a crash would leave them: a new aurora.md staged (the committed one moved aside) but never ingested;
    # lighthouse.txt's new version committed but its backup not yet removed; a file staged and never ingested.
    os.replace(folder / "aurora.md", folder / ".aurora.md.previous")
    (folder / "aurora.md").write_text("# Half of a new version")
    (folder / ".lighthouse.txt.previous").write_text("An older lighthouse.")
    (folder / "stray.md").write_text("Never ingested.")
    restarted = LoupeService(service.settings, service.models)
    try:
        assert sorted(d.name for d in restarted.documents()) == ["aurora.md", "lighthouse.txt"]
        assert sorted(p.name for p in folder.iterdir()) == ["aurora.md", "lighthouse.txt"]
        assert (folder / "aurora.md").read_bytes() == committed
        # and before each ingest too: leftovers of a crash while this service runs
        (folder / "stray.md").write_text("Never ingested.")
        restarted.ingest(None, uploads(docs_dir, "lighthouse.txt"))
        assert not (folder / "stray.md").exists()
    finally:
        restarted.close()


def test_deleting_a_document_removes_its_copies_and_scrubs_the_chat(service, docs_dir, tmp_path):
    from fpdf import FPDF

    from tests.app.conftest import png_bytes

    picture = tmp_path / "crane.png"
    picture.write_bytes(png_bytes(7, size=96))  # within this service's 0.05 MB upload limit
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(0, 10, "The harbour crane lifts forty tonnes of cargo.")
    pdf.image(str(picture), x=10, y=30, w=60)
    (tmp_path / "crane.pdf").write_bytes(bytes(pdf.output()))
    rows = service.ingest(None, [("crane.pdf", tmp_path / "crane.pdf")] + uploads(docs_dir, "aurora.md"))
    assert [r.status for r in rows] == ["added", "added"], rows
    crane = next(d for d in service.documents() if d.name == "crane.pdf")
    assert crane.images == 1
    session = "scrub-session-01"
    about_crane = service.ask(None, "How much does the harbour crane lift?", 3, "extractive")
    list(service.chat(None, "How much does the harbour crane lift?", 3, "extractive", session))
    list(service.chat(None, "At what temperature is the seed vault kept?", 3, "extractive", session))
    assert about_crane.images, "the cited page's picture comes with the answer"
    shown = service.images.display_copy(about_crane.images[0].path)  # what the UI serves
    removed: list[str] = []
    service.on_display_removed = removed.append

    service.delete_document(None, crane.id)
    assert not shown.exists() and removed == [shown.name]
    crane_answer, vault_answer = [m for m in service.conversations.messages(session) if m.role == "assistant"]
    assert "forty tonnes" not in crane_answer.content and "crane.pdf" in crane_answer.content
    assert "deleted" in crane_answer.content
    assert all(s["document_id"] != crane.id for s in crane_answer.meta["sources"])
    assert crane_answer.meta["images"] == []
    assert "minus eighteen degrees" in vault_answer.content  # another document's answer stays as it was
    assert vault_answer.meta["sources"] and all(s["file"] == "aurora.md" for s in vault_answer.meta["sources"])


def test_a_slow_store_open_does_not_stall_the_other_knowledge_bases(service, monkeypatch):
    import threading

    service.create_kb("slow")
    service.close()  # forget the open stores: the next call opens them again
    reopened = LoupeService(service.settings, service.models)
    release, opening = threading.Event(), threading.Event()
    real_open = reopened.models.open_store

    def slow_open(folder, **options):  # a slow disk or a long index rebuild, held until the test lets it go
        if Path(folder).name == "slow":
            opening.set()
            release.wait(120)
        return real_open(folder, **options)

    monkeypatch.setattr(reopened.models, "open_store", slow_open)
    slow = threading.Thread(target=reopened.documents, args=("slow",))
    slow.start()
    try:
        assert opening.wait(60)
        done = threading.Thread(target=reopened.documents, args=(None,))
        done.start()
        done.join(timeout=60)  # a deadlock guard, not a speed limit: on the old code it waits for `release`
        assert not done.is_alive(), "opening one knowledge base stalled another"
    finally:
        release.set()
        slow.join()
        reopened.close()


def test_each_knowledge_base_is_searched_with_the_embedder_its_vectors_come_from(
        tmp_path, text_embedder, image_embedder, tiny_generator_dir, docs_dir):
    """Two knowledge bases in one service, made by two embedder variants: MiniLM, and MiniLM reduced by PCA to 8
    dimensions by a re-embedding in the app. Both are searched without a restart, each with its own embedder;
    the reduced one projects the same loaded MiniLM (not a second copy). (Old code: ModelMismatch on opening it.)"""
    from rag.components import Models

    settings = make_settings(tmp_path / "indexes" / "default", generator_model=str(tiny_generator_dir),
                             max_new_tokens=12, chunk_tokens=24, chunk_overlap=4)
    service = LoupeService(settings, Models(settings, text_embedder, image_embedder, ""))
    try:
        service.ingest(None, uploads(docs_dir, "aurora.md"))
        service.create_kb("reduced")
        service.ingest("reduced", uploads(docs_dir, "lighthouse.txt", "aurora.md"))
        job = service.embedding.reembed("reduced", settings.text_model, "sbert", 8)
        done = list(service.embedding.follow(job, interval=0.05))[-1]
        assert not done.error and done.report.new_model.startswith("all-MiniLM-L6-v2+pca8:")

        reduced = service.knowledge_bases.assistant("reduced").retriever
        assert reduced.text_embedder.dim == 8 and reduced.text_embedder.base is text_embedder
        [hit] = reduced.search("When was the lighthouse lamp converted to electricity?", 1, mode="dense")
        assert hit.chunk.file == "lighthouse.txt"  # 8-d vectors still tell the lighthouse from the station
        default = service.knowledge_bases.assistant(None).retriever
        assert default.text_embedder is text_embedder
        assert "eighteen" in default.search("How cold is the seed vault kept?", 1, mode="dense")[0].chunk.text
    finally:
        service.close()


def test_reembedding_with_a_model_that_cannot_be_loaded_says_which_and_why(service, docs_dir, caplog):
    """Regression: the page said "Loupe failed to re-embed 'default' (see the server log)" for a model id that is
    not downloaded on this offline machine (HF_HUB_OFFLINE=1, tests/conftest.py)."""
    from rag.finetune import REPORT_FILE

    caplog.set_level(logging.DEBUG, logger="rag.embedder")  # a cause said in words logs its traceback at DEBUG
    service.ingest(None, uploads(docs_dir, "aurora.md"))

    def failure(model: str) -> str:
        job = service.embedding.reembed(None, model)
        return list(service.embedding.follow(job, interval=0.05))[-1].error

    assert failure("no-such/model-xyz") == ("the text model 'no-such/model-xyz' cannot be loaded here: it is not "
                                            "downloaded on this machine, and Loupe is offline (the Hugging Face Hub "
                                            "cannot be reached)")
    assert "LocalEntryNotFoundError" in caplog.text  # the loader's own words and traceback are in the log
    broken = service.embedding.models_folder / "default-20261130-120000"  # a fine-tuned model, its weights lost
    broken.mkdir(parents=True)
    (broken / REPORT_FILE).write_text("{}")
    assert failure(broken.name) == (f"the text model '{broken.name}' cannot be loaded here: its folder holds no "
                                    "model that Loupe can read")  # named as the page offers it, not by its path
    assert [d.name for d in service.documents(None)] == ["aurora.md"]  # the knowledge base is as it was


def test_a_knowledge_base_of_a_model_that_cannot_be_loaded_says_which(service):
    from rag.components import EmbedderUnavailable
    from rag.records import ModelId
    from rag.store import KnowledgeBase

    folder = service.knowledge_bases.library.create("elsewhere")  # its catalog written by another host's Loupe:
    KnowledgeBase(folder, ModelId("example-org/an-unreleased-model", 768), use_gpu=False).close()
    with pytest.raises(EmbedderUnavailable, match="'example-org/an-unreleased-model', which cannot be loaded here") \
            as error:
        service.documents("elsewhere")
    assert str(folder) not in str(error.value) and "reembed" in str(error.value)
    assert [d.name for d in service.documents(None)] == []  # the other knowledge bases go on
