"""Kill an ingest with SIGKILL half-way: the store must open consistent, each document whole or absent."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

from ingest.pipeline import Ingestor
from rag.settings import PROJECT_ROOT
from rag.store import KnowledgeBase
from tests.conftest import KILL_CHUNKING, KillCorpus, kill_env, make_settings

KILL_AFTER = 3


def documents_in(store) -> int:
    try:
        with sqlite3.connect(f"file:{store}/catalog.sqlite3?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_ingest_leaves_whole_documents_and_a_working_index(tmp_path, text_embedder, kill_corpus: KillCorpus):
    corpus, expected = kill_corpus
    files = len(expected)
    store = tmp_path / "kb"
    # Small chunks: many per file, so the files' writes spread over the run and the kill lands mid-ingest.
    process = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(corpus), "--store", str(store), "--quiet"],
                               cwd=PROJECT_ROOT, env=kill_env(store), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while documents_in(store) < KILL_AFTER and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored = documents_in(store)
    assert KILL_AFTER <= stored < files, f"the kill should land mid-ingest, found {stored} documents"

    # `expected`: each file's chunks when the same files are ingested without interruption (the fixture's reference)
    kb = KnowledgeBase(store, text_embedder.model_id, use_gpu=False)
    assert list((store / "staging").iterdir()) == []  # the killed process's half-staged file is gone
    documents = kb.documents()
    for document in documents:
        ordinals = [c.ordinal for c in kb.chunks_of_document(document.id)]
        assert ordinals == list(range(expected[document.name])), document.name
    assert kb.text_index.size == sum(d.chunks for d in documents)
    assert sorted(kb.text_index.ids()) == sorted(c for d in documents for c in
                                                  (ch.id for ch in kb.chunks_of_document(d.id)))

    # Running the same ingest again completes the store: whole documents are duplicates, the rest arrive.
    report = Ingestor(kb, make_settings(store, **KILL_CHUNKING), text_embedder).ingest([corpus])
    statuses = [o.status for o in report.outcomes]
    assert statuses.count("duplicate") == len(documents) and statuses.count("added") == files - len(documents)
    assert {d.name: d.chunks for d in kb.documents()} == expected
    last = f"report-{files - 1:02d}.txt"  # added by the second run: the kill came before it
    first = kb.chunks_of_document(kb.resolve(last).id)[0]  # "Report 11 paragraph 0 ...": unique
    hit, score = kb.search_chunks(text_embedder.embed([first.text]), 1)[0]
    assert hit.id == first.id and score > 0.99
