"""Two real processes on one store: `python -m rag ingest` runs while another process lists, searches, asks and
deletes. Nobody waits for the whole ingest, nobody sees "database is locked", and the store ends consistent."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import CHUNK_BATCH, Ingestor
from rag.settings import PROJECT_ROOT
from rag.store import KnowledgeBase
from tests.builders import make_pdf, png_bytes, sample_image
from tests.conftest import TEST_CACHE

TOPICS = ["glaciers", "volcanoes", "coral reefs", "deserts", "rainforests", "tundra", "estuaries", "savannas"]
PICTURES = ["astronaut", "chelsea", "coffee", "rocket"]  # fewer than the PDFs: some files share one image
FILES = 40
BIG = 21  # one report long enough to stream through in several batches (the old code held the lock meanwhile)


def paragraphs(n: int, count: int = 6) -> list[str]:
    topic = TOPICS[n % len(TOPICS)]
    return [f"Report {n} paragraph {p} on {topic}: field station {n * 1000 + p} measured values that changed by "
            f"{p + n} percent over the season, as the survey team noted in detail." for p in range(count)]


def write_corpus(folder: Path) -> None:
    """40 reports, every fifth a two-page PDF with a picture, the rest text; small chunks make ~12 per file,
    and 300 for the big one."""
    folder.mkdir()
    for n in range(FILES):
        text = paragraphs(n, 150 if n == BIG else 6)
        if n % 5 == 0:
            make_pdf(folder / f"report-{n:02d}.pdf", [text[:3], text[3:]],
                     images={2: sample_image(PICTURES[n // 5 % len(PICTURES)])})
        else:
            (folder / f"report-{n:02d}.txt").write_text("\n\n".join(text))


@pytest.fixture
def rag_env(tmp_path, tiny_clip_dir) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "LOUPE_CACHE_DIR": str(TEST_CACHE), "LOUPE_OCR": "false",
            "LOUPE_STORE": str(tmp_path / "kb"), "LOUPE_CLIP_MODEL": f"local-dir:{tiny_clip_dir}",
            "LOUPE_CHUNK_TOKENS": "24", "LOUPE_CHUNK_OVERLAP": "4"}


def rag(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """One `python -m rag` command in its own process; it must succeed without a word about locks."""
    done = subprocess.run([sys.executable, "-m", "rag", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_no_lock_error(done.stdout + done.stderr)
    return done


def assert_no_lock_error(output: str) -> None:
    assert "database is locked" not in output and "Traceback" not in output, output


def catalog_rows(store: Path, query: str) -> list[tuple]:
    with sqlite3.connect(f"file:{store}/catalog.sqlite3?mode=ro", uri=True) as conn:
        return conn.execute(query).fetchall()


def test_ingest_beside_list_search_ask_and_delete(models, tmp_path, rag_env):
    corpus, store = tmp_path / "corpus", tmp_path / "kb"
    write_corpus(corpus)
    # Documents that were there before: the victim shares its picture with some of the incoming PDFs.
    before = tmp_path / "before"
    before.mkdir()
    make_pdf(before / "victim.pdf", [["The old survey of the harbour."]], images={1: sample_image("coffee")})
    (before / "keeper.txt").write_text("The lighthouse keeper logged 412 ships in the winter of 1911.")
    kb = models.open_store(store)
    assert not Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest([before]).failed
    assistant = models.assistant(kb)

    ingest = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(corpus), "--json", "--quiet"],
                              cwd=PROJECT_ROOT, env=rag_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while len(kb.documents()) < 3 and ingest.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # until the ingest has committed its first file
        rag(rag_env, "list", "--json")
        assert "deleted victim.pdf" in rag(rag_env, "delete", "victim.pdf").stdout
        documents_at_delete = len(kb.documents())
        rounds = 0
        while ingest.poll() is None:
            names = [d.name for d in kb.documents()]
            assert "victim.pdf" not in names and "keeper.txt" in names
            assert assistant.retriever.search("glaciers field station", 5)
            answer = assistant.ask("How many ships did the lighthouse keeper log?", mode="extractive")
            assert "412" in answer.text
            assert assistant.retriever.similar_images(png_bytes(sample_image("chelsea")), 2) is not None
            if rounds % 4 == 0:
                listed = json.loads(rag(rag_env, "list", "--json").stdout)
                assert "keeper.txt" in [d["name"] for d in listed]
            rounds += 1
            time.sleep(0.2)  # leave the ingest most of the CPU
        stdout, stderr = ingest.communicate(timeout=60)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
    assert ingest.returncode == 0, stderr
    assert_no_lock_error(stderr)
    # The delete and the reads ran while the ingest was still adding files, not after it.
    assert 3 <= documents_at_delete < FILES + 1 and rounds >= 2, (documents_at_delete, rounds)

    outcomes = json.loads(stdout)["files"]
    assert [o["status"] for o in outcomes] == ["added"] * FILES
    reopened = KnowledgeBase(store, models.text_embedder.model_id, models.image_embedder.model_id, use_gpu=False)
    documents = {d.name: d for d in reopened.documents()}
    assert sorted(documents) == sorted([Path(o["path"]).name for o in outcomes] + ["keeper.txt"])
    for outcome in outcomes:  # every document whole: as many chunks and images as the ingest reported
        document = documents[Path(outcome["path"]).name]
        assert (document.chunks, document.images) == (outcome["chunks"], outcome["images"])
        ordinals = [c.ordinal for c in reopened.chunks_of_document(document.id)]
        assert ordinals == list(range(document.chunks)), document.name
    assert documents[f"report-{BIG}.txt"].chunks > CHUNK_BATCH  # it did stream through in batches
    for index in (reopened, kb):  # a fresh open and the long-lived store object of this process agree
        index.generation  # noqa: B018  (brings the indexes up to the catalog)
        chunk_ids = sorted(r[0] for r in catalog_rows(store, "SELECT id FROM chunks"))
        assert sorted(index.text_index.ids().tolist()) == chunk_ids
        image_ids = sorted(r[0] for r in catalog_rows(store, "SELECT id FROM images WHERE vector IS NOT NULL"))
        assert sorted(index.image_index.ids().tolist()) == image_ids and len(image_ids) == FILES // 5
    for (file,) in catalog_rows(store, "SELECT file FROM images"):
        assert (store / "images" / file).is_file(), file
    assert list((store / "staging").iterdir()) == []
    reopened.close()


def test_images_of_an_ingest_in_progress_survive_another_process_opening_the_store(models, tmp_path, rag_env):
    """Another process opens the store (and sweeps unreferenced image files) while a PDF with pictures is being
    ingested: the pictures must still be there when that ingest commits."""
    pdf = make_pdf(tmp_path / "atlas.pdf", [["Maps of the coast."], ["Photographs of the survey team."]],
                   images={1: sample_image("astronaut"), 2: sample_image("rocket")})
    kb = models.open_store(tmp_path / "kb")
    opened_meanwhile: list[subprocess.CompletedProcess] = []

    def on_progress(name: str, stage: str, done: int, total: int) -> None:
        if stage == "embed" and not opened_meanwhile:  # the file is read and embedded, not yet committed
            opened_meanwhile.append(rag(rag_env, "list", "--json"))

    outcome = Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest(
        [pdf], on_progress=on_progress).outcomes[0]
    assert opened_meanwhile and outcome.status == "added", outcome.message
    assert outcome.images == 2
    images = kb.images_on_pages(outcome.document_id, [1, 2])
    assert len(images) == 2 and all(kb.image_path(image).is_file() for image in images)
