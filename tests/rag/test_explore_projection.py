"""The map of a knowledge base: real MiniLM vectors of real paragraphs in a real folder store, projected."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rag.errors import LoupeError, NotFound
from rag.explore.figures import map_figure, standalone_html
from rag.explore.projection import Projector, build_map, place_question, sample_ids, umap_available
from rag.retrieval import Retriever
from rag.store import KnowledgeBase
from tests.rag.explore_kb import add_text_document, disflqa_paragraphs, fill

PARAGRAPHS = 45


@pytest.fixture(scope="module")
def kb(tmp_path_factory, text_embedder):
    store = KnowledgeBase(tmp_path_factory.mktemp("explore-map") / "kb", text_embedder.model_id)
    fill(store, text_embedder, disflqa_paragraphs(PARAGRAPHS))
    yield store
    store.close()


def test_every_chunk_is_a_point_coloured_by_its_document(kb):
    chunk_map = build_map(kb)
    assert len(chunk_map.points) == chunk_map.total == PARAGRAPHS and not chunk_map.sampled
    assert {p.document for p in chunk_map.points} == {"part0.txt", "part1.txt", "part2.txt"}
    ids = [p.chunk_id for p in chunk_map.points]
    assert sorted(ids) == sorted(chunk_id for chunk_id, _, _ in kb.chunk_texts())
    # PCA: the first axis holds more of the spread than the second
    xs, ys = np.array([p.x for p in chunk_map.points]), np.array([p.y for p in chunk_map.points])
    assert xs.var() >= ys.var() > 0
    assert "45 passages, projected to 2-D with PCA" in chunk_map.note()

    figure = map_figure(chunk_map)
    assert sorted(trace.name for trace in figure.data) == ["part0.txt", "part1.txt", "part2.txt"]
    drawn = {int(row[0]) for trace in figure.data for row in trace.customdata}
    assert drawn == set(ids)


def test_a_stored_vector_projects_onto_its_own_point(kb):
    chunk_map = build_map(kb)
    first = chunk_map.points[0]
    vector = kb.chunk_vectors([first.chunk_id])[first.chunk_id]
    assert chunk_map.projector.transform(vector)[0] == pytest.approx([first.x, first.y], abs=1e-4)


def test_above_the_limit_an_even_sample_is_drawn_and_the_map_says_so(kb):
    sampled = build_map(kb, max_points=20)
    assert len(sampled.points) == 20 and sampled.total == PARAGRAPHS and sampled.sampled
    assert "a random sample of 20 of 45 passages" in sampled.note()
    assert [p.chunk_id for p in build_map(kb, max_points=20).points] == [p.chunk_id for p in sampled.points]
    assert sample_ids(range(10), 10) == list(range(10))
    assert len(set(sample_ids(range(1000), 100))) == 100


def test_a_question_is_drawn_with_the_passages_retrieval_returns(kb, text_embedder):
    retriever = Retriever(kb, text_embedder, mode="dense")
    question = "What is the bond length of dioxygen?"
    vector = retriever.embed_query(question)
    passages = retriever.search(question, 3, vector=vector)
    sampled = build_map(kb, max_points=10)  # some hits fall outside the sample: they are placed all the same
    placed = place_question(sampled, kb, question, vector[None, :], [(p.chunk.id, p.score) for p in passages])
    assert [h.chunk_id for h in placed.hits] == [p.chunk.id for p in passages]
    assert placed.scores == [p.score for p in passages]
    assert "dioxygen" in placed.hits[0].snippet
    # the question lands nearer its best passage than the map's points do on average
    points = np.array([[p.x, p.y] for p in sampled.points])
    best = np.array([placed.hits[0].x, placed.hits[0].y])
    here = np.array([placed.x, placed.y])
    assert np.linalg.norm(here - best) < np.linalg.norm(points - best, axis=1).mean()
    names = [trace.name for trace in map_figure(sampled, placed).data]
    assert "Question" in names and "Retrieved passages" in names


def test_passage_text_is_shown_as_text_in_hover_labels(tmp_path, text_embedder):
    store = KnowledgeBase(tmp_path / "kb", text_embedder.model_id)
    add_text_document(store, text_embedder, "tags.txt", ["<b>bold</b> & <a href='x'>a link</a>", "plain words"])
    figure = map_figure(build_map(store))
    snippets = [row[3] for row in figure.data[0].customdata]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href=&#x27;x&#x27;&gt;a link&lt;/a&gt;" in snippets
    store.close()


def test_the_html_map_is_self_contained(kb):
    page = standalone_html(map_figure(build_map(kb)), "Loupe map: kb")
    assert "<title>Loupe map: kb</title>" in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inline: the file opens offline
    assert "plotly.js v" in page and "part1.txt" in page


def test_an_empty_knowledge_base_has_no_map(tmp_path, text_embedder):
    store = KnowledgeBase(tmp_path / "empty", text_embedder.model_id)
    with pytest.raises(NotFound, match="no passages yet"):
        build_map(store)
    store.close()


def test_umap_when_installed_else_a_clear_refusal(kb):
    vectors = np.stack(list(kb.chunk_vectors([c for c, _, _ in kb.chunk_texts()]).values()))
    if not umap_available():
        with pytest.raises(LoupeError, match="UMAP is not installed"):
            Projector("umap", vectors)
        return
    projector = Projector("umap", vectors)
    assert projector.coordinates.shape == (len(vectors), 2)
    placed = projector.transform(vectors[:2])
    assert placed.shape == (2, 2)
    # a stored vector lands among its neighbours: nearer its own point than most points are to it
    distances = np.linalg.norm(projector.coordinates - projector.coordinates[0], axis=1)
    assert np.linalg.norm(placed[0] - projector.coordinates[0]) < np.median(distances)

