"""The command lines (rag.cli and Explore's) open models and stores through rag.opening, never through the CLI's
private helpers (rag.cli imports Explore to build its parser: the reverse import was a cycle in waiting)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rag import explore, opening
from rag.store import KnowledgeBaseMissing
from tests.rag.explore_kb import add_text_document, disflqa_paragraphs

EXPLORE = Path(explore.__file__).parent


def test_explore_imports_nothing_from_the_cli():
    for source in sorted(EXPLORE.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "rag.cli" not in imported, source.name


def test_stores_open_with_and_without_models(models, tmp_path):
    with pytest.raises(KnowledgeBaseMissing, match="run `python -m rag ingest PATH` first"):
        opening.open_existing_store(models, models.settings)  # never an empty new store
    kb = models.open_store()
    add_text_document(kb, models.text_embedder, "one.txt", disflqa_paragraphs(2))
    kb.close()
    bare = opening.open_without_models(models.settings)  # the recorded text model, no model loaded
    try:
        assert bare.text_model == models.text_embedder.model_id
        assert [d.name for d in bare.documents()] == ["one.txt"]
    finally:
        bare.close()
    kb = opening.open_existing_store(models, models.settings)
    assert len(kb.chunk_texts()) == 2
    kb.close()
