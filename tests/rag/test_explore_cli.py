"""`python -m rag explore ...` as scripts run it (the contract in issue 12): a real store of real paragraphs, JSON
out, exit codes. The map runs in a real process; the other commands run the same `main` in this process (rag_main),
which spares a torch import per command."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

import pytest

from ingest.pipeline import Ingestor
from rag.store import KnowledgeBase
from tests.builders import png_bytes, sample_image
from tests.conftest import cli_env, rag_process
from tests.rag.explore_kb import disflqa_paragraphs, fill


@pytest.fixture(scope="module")
def store(tmp_path_factory, text_embedder):
    folder = tmp_path_factory.mktemp("explore-cli") / "kb"
    kb = KnowledgeBase(folder, text_embedder.model_id)
    fill(kb, text_embedder, disflqa_paragraphs(60))
    kb.close()
    return folder


@pytest.fixture(scope="module")
def env(tiny_clip_dir) -> dict[str, str]:
    return cli_env(LOUPE_CLIP_MODEL=f"local-dir:{tiny_clip_dir}")


@pytest.fixture
def cli(rag_main, env) -> Callable[..., subprocess.CompletedProcess]:
    return lambda *args, expect=0, **changes: rag_main({**env, **changes}, *args, expect=expect)


def test_map_writes_one_self_contained_html_file(cli, env, store, tmp_path):
    out = tmp_path / "map.html"
    summary = json.loads(rag_process(env, "explore", "map", "--store", str(store), "--out", str(out),
                                     "--json").stdout)  # a real process: its stdout is the JSON alone
    assert summary == {"out": str(out), "points": 60, "total": 60, "sampled": False, "projection": "pca"}
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page) and "plotly.js v" in page
    assert page.count('"name":"part') == 3  # one trace a document

    asked = tmp_path / "asked.html"
    cli("explore", "map", "--store", str(store), "--out", str(asked), "--question", "What is dioxygen?", "-k", "2")
    assert '"name":"Question"' in asked.read_text(encoding="utf-8")


def test_words_neighbours_and_analogy_print_words_and_scores(cli, store):
    found = json.loads(cli("explore", "words", "neighbours", "court", "--store", str(store), "-k", "4",
                           "--json").stdout)
    assert len(found) == 4 and all(set(row) == {"word", "score"} for row in found)
    assert [row["score"] for row in found] == sorted((row["score"] for row in found), reverse=True)
    assert "court" not in [row["word"] for row in found]

    solved = json.loads(cli("explore", "words", "analogy", "court", "justice", "school", "--store", str(store),
                            "--json").stdout)
    assert len(solved) == 10 and {"court", "justice", "school"}.isdisjoint(row["word"] for row in solved)

    missing = cli("explore", "words", "neighbours", "cuort", "--store", str(store), expect=1)
    assert "error: 'cuort' is not in the word vectors' vocabulary" in missing.stderr
    assert "court" in missing.stderr and str(store) not in missing.stderr
    assert list((store / "explore").glob("word2vec-skipgram-g*.bin"))  # trained once, cached with the store


def test_similarity_prints_the_cosine_matrix(cli):
    matrix = json.loads(cli("explore", "similarity", "The river bank was muddy.", "The shore of the river.",
                            "I saved money at the bank.", "--json").stdout)
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(matrix[i][i] == pytest.approx(1.0, abs=1e-3) for i in range(3))
    assert matrix[0][1] == pytest.approx(matrix[1][0], abs=1e-4) and matrix[0][1] > matrix[1][2]
    refused = cli("explore", "similarity", "alone", expect=1)
    assert "give between 2 and 12 texts" in refused.stderr


def test_tags_of_the_stored_images(cli, tmp_path, models):
    (tmp_path / "cat.png").write_bytes(png_bytes(sample_image("chelsea")))
    store = tmp_path / "pictures"
    kb = models.open_store(store)  # the tiny CLIP of the tests, as the CLI loads it
    ingestor = Ingestor(kb, models.settings, models.text_embedder, models.image_embedder)
    assert not ingestor.ingest([tmp_path / "cat.png"]).failed
    kb.close()
    rows = json.loads(cli("explore", "tags", "--store", str(store), "--image-labels", "cat, dog, car",
                          "--json").stdout)
    assert [row["file"] for row in rows] == ["cat.png"]
    assert sorted(t["label"] for t in rows[0]["tags"]) == ["car", "cat", "dog"]
    best = rows[0]["tags"][0]["label"]
    found = json.loads(cli("explore", "tags", "--store", str(store), "--image-labels", "cat, dog, car",
                           "--search", best, "--json").stdout)
    assert [row["file"] for row in found] == ["cat.png"]


def test_without_clip_weights_tagging_waits_and_says_so(cli, store, tmp_path):
    waiting = cli("explore", "tags", "--store", str(store), expect=1,
                  LOUPE_CLIP_MODEL=f"local-dir:{tmp_path / 'no-weights-here'}")
    assert "Image tags wait for CLIP weights" in waiting.stderr
