"""Each chunk's sentences, embedded once at ingest, so that answering ranks them without running the model.

Ranking the sentences of a question's passages was the largest share of a question's model time: about 300 ms of
MiniLM a question on 2 cores, queued behind every other question's under load (docs/BENCHMARKS.md). Embedded at
ingest, a question needs only its own vector.

The catalog keeps a chunk's sentence vectors in one blob, with the length of each sentence they were made from:
a later Loupe that splits sentences differently finds the lengths changed and embeds that chunk's sentences when
asked, instead of pairing a sentence with another one's vector. A chunk stored before them has none, and is
treated the same.

Every store (folder or PostgreSQL) gets them in a pass after its documents are committed (fill_missing, through the
store's two narrow methods), not with the chunks: embedding every sentence costs about as much as embedding the
chunks, so a document becomes searchable in half the time, and the few questions asked before the pass ends embed
their passages' sentences on the fly, as for an older store. The app runs the pass in the background, after the
upload's job has ended (service.sentence_pass).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from rag.sentences import split_sentences

if TYPE_CHECKING:
    from rag.embedder import Embedder
    from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

FILL_BATCH = 256  # chunks whose sentences are embedded and written together: one short transaction each

# float16: ranking needs cosines to about 1e-3, and a chunk has several sentences, so float32 would make them
# most of the catalog
_DTYPE = np.dtype("<f2")
_LENGTHS = np.dtype("<u4")


def embed_chunk_sentences(embedder: Embedder, texts: Sequence[str], batch_size: int = 0) -> list[np.ndarray]:
    """One (sentences x dim) matrix per chunk text, from one embedding call for all of them."""
    per_chunk = [split_sentences(text) for text in texts]
    flat = [sentence for sentences in per_chunk for sentence in sentences]
    vectors = embedder.embed(flat, batch_size) if flat else np.zeros((0, embedder.dim), np.float32)
    matrices, offset = [], 0
    for sentences in per_chunk:
        matrices.append(vectors[offset:offset + len(sentences)])
        offset += len(sentences)
    return matrices


def pack(text: str, vectors: np.ndarray) -> bytes:
    """The blob for a chunk's text and its sentence vectors: count, each sentence's length, the vectors."""
    lengths = [len(sentence) for sentence in split_sentences(text)]
    if len(lengths) != len(vectors):
        raise ValueError(f"{len(vectors)} sentence vectors for {len(lengths)} sentences")
    return (np.array([len(lengths), *lengths], _LENGTHS).tobytes()
            + np.ascontiguousarray(vectors, _DTYPE).tobytes())


def unpack(blob: bytes, text: str, dim: int) -> np.ndarray | None:
    """float32 vectors, one per sentence of `text`; None when they were made from other sentences."""
    count = int(np.frombuffer(blob, _LENGTHS, 1)[0])
    lengths = np.frombuffer(blob, _LENGTHS, count, offset=_LENGTHS.itemsize).tolist()
    if lengths != [len(sentence) for sentence in split_sentences(text)]:
        return None
    start = _LENGTHS.itemsize * (count + 1)
    return np.frombuffer(blob, _DTYPE, count * dim, offset=start).reshape(count, dim).astype(np.float32)


def fill_missing(store: KnowledgeBaseStore, load_embedder: Callable[[], Embedder],
                 document_ids: Iterable[int] | None = None, batch_size: int = 0,
                 progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> int:
    """Embed and store the sentence vectors of the store's chunks that have none: those of `document_ids`, or every
    chunk. `load_embedder` gives the store's own text embedder, called only when a chunk needs it. Each batch is
    written in its own short transaction (store.set_sentence_vectors), so a kill loses at most one batch, and leaves
    chunks without sentence vectors, which answering embeds when asked; a chunk deleted meanwhile is skipped.
    `progress(done)` hears the chunks done; `stop`, once set, ends the pass before its next batch. Returns how many
    chunks were filled."""
    documents = None if document_ids is None else sorted(set(document_ids))
    embedder: Embedder | None = None
    filled = done = last_id = 0
    while stop is None or not stop.is_set():
        # paged by id: each chunk is read once, even one a batch could not fill (deleted, or filled meanwhile)
        part = store.chunks_without_sentence_vectors(documents, FILL_BATCH, last_id)
        if not part:
            break
        embedder = embedder or load_embedder()
        matrices = embed_chunk_sentences(embedder, [text for _, text in part], batch_size)
        filled += store.set_sentence_vectors({chunk_id: pack(text, vectors)
                                              for (chunk_id, text), vectors in zip(part, matrices)})
        last_id, done = part[-1][0], done + len(part)
        if progress is not None:
            progress(done)
    return filled
