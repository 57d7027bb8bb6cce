"""Explore: the knowledge base seen as vectors.

- `projection`: a 2-D map of every chunk (PCA, or UMAP when installed), sampled above MAX_POINTS;
- `figures`: the plotly figures (map, heatmaps) the app and the CLI draw;
- `word_vectors`: word2vec trained on the knowledge base's own text, cached with it, neighbours and analogies;
- `similarity`: cosine matrices of sentences, contextual (the text embedder) beside context-free (word2vec);
- `image_tags`: zero-shot CLIP tags of the stored images from a label list;
- `command`: `python -m rag explore ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this package to build its parser: no FAISS or SQLite for that
    from rag.store_api import KnowledgeBaseStore

EXPLORE_DIR = "explore"


def cache_file(kb: KnowledgeBaseStore, name: str) -> Path:
    """Where Explore keeps a file it derives from a knowledge base (word vectors, image tags, labels).

    The one place that decides it: a folder store keeps them in its own folder, so they go (and are copied) with
    it; another backend may map them elsewhere here."""
    folder = kb.folder / EXPLORE_DIR
    folder.mkdir(exist_ok=True)
    return folder / name
