"""Each chunk's sentences, embedded once at ingest, so that answering ranks them without running the model.

Ranking the sentences of a question's passages was the largest share of a question's model time: about 300 ms of
MiniLM a question on 2 cores, queued behind every other question's under load (docs/BENCHMARKS.md). Embedded at
ingest, a question needs only its own vector. The catalog keeps them (as float16).

The vectors of a chunk follow `split_sentences(chunk.text)` in order. A chunk stored by an older Loupe has none,
and one whose count no longer matches the splitter's is treated the same: its sentences are embedded when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rag.grounding import split_sentences

if TYPE_CHECKING:
    from rag.text_embedder import TextEmbedder


def embed_chunk_sentences(embedder: TextEmbedder, texts: Sequence[str], batch_size: int = 0) -> list[np.ndarray]:
    """One (sentences x dim) matrix per chunk text, from one embedding call for all of them."""
    per_chunk = [split_sentences(text) for text in texts]
    flat = [sentence for sentences in per_chunk for sentence in sentences]
    vectors = embedder.embed(flat, batch_size) if flat else np.zeros((0, embedder.dim), np.float32)
    matrices, offset = [], 0
    for sentences in per_chunk:
        matrices.append(vectors[offset:offset + len(sentences)])
        offset += len(sentences)
    return matrices


def matching(stored: np.ndarray | None, sentences: Sequence[str]) -> np.ndarray | None:
    """The stored vectors when they are the vectors of these sentences (one per sentence), else None."""
    return stored if stored is not None and len(stored) == len(sentences) else None
