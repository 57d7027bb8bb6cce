"""The app's service layer on real models: uploads, limits, per-file outcomes, history, knowledge bases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app_service import LoupeService, ServiceError, inside, safe_upload_name
from rag.answering import Answer
from rag.followups import Rewrite
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
    passage = service.passage(None, middle.id)
    assert [c.ordinal for c, _ in passage] == [1, 2, 3]
    assert [cited for _, cited in passage] == [False, True, False]
    with pytest.raises(ServiceError, match="no longer in the knowledge base"):
        service.passage(None, 999_999)


def test_knowledge_bases_are_created_switched_and_deleted(service, docs_dir):
    assert service.create_kb("hobby") == "hobby"
    assert service.kb_names() == ["default", "hobby"]
    service.ingest("hobby", uploads(docs_dir, "lighthouse.txt"))
    assert [d.name for d in service.documents("hobby")] == ["lighthouse.txt"] and service.documents() == []
    with pytest.raises(ValueError, match="invalid knowledge base name"):
        service.create_kb("../escape")
    with pytest.raises(ServiceError, match="no knowledge base named"):
        service.documents("missing")
    lock = service._ingest_lock("hobby")
    with lock:  # an ingest is running there
        with pytest.raises(ServiceError, match="ingesting files right now"):
            service.delete_kb("hobby")
    service.delete_kb("hobby")
    assert service.kb_names() == ["default"]
    with pytest.raises(ValueError, match="cannot be deleted"):
        service.delete_kb("default")


def test_live_ingest_reports_stages_then_the_outcome(service, docs_dir):
    snapshots = list(service.ingest_live(None, uploads(docs_dir, "aurora.md", "broken.pdf"), interval=0.01))
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
        without.embed_waiting_images(None)
    with pytest.raises(ServiceError, match="needs CLIP as well"):
        without.similar_images(None, (docs_dir / "photo.png").read_bytes())
    without.close()
    with_clip = LoupeService(settings, Models(settings, text_embedder, image_embedder, ""))
    assert with_clip.embed_waiting_images(None) == 1
    assert with_clip.documents()[0].images_waiting == 0
    assert with_clip.similar_images(None, (docs_dir / "photo.png").read_bytes(), 1)[0].file == "photo.png"
    with_clip.close()
