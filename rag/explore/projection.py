"""A 2-D map of a knowledge base's chunks: their stored vectors projected with PCA, or UMAP when it is installed.

Above MAX_POINTS chunks the map draws an even random sample (the same one each time, seeded), and says so: a
browser draws 20k points smoothly, not a million, and the shape of the clouds survives sampling. A question and
its retrieved passages are placed with the same projection (on a UMAP map: among their nearest map points), so
they land where their neighbours are. UMAP's fit costs a minute or two of CPU on 2 cores (README, Explore).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.errors import LoupeError, NotFound
from rag.records import ChunkRecord, place
from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

MAX_POINTS = 20_000
PLACING_NEIGHBOURS = 10
METHODS = ("pca", "umap")
SNIPPET_CHARS = 160
READ_BATCH = 4096  # chunk ids per catalog read: well under SQLite's bound variables per statement


def umap_available() -> bool:
    """UMAP is optional (umap-learn pulls numba and llvmlite); PCA needs nothing beyond numpy."""
    return importlib.util.find_spec("umap") is not None


def available_methods() -> list[str]:
    return [m for m in METHODS if m != "umap" or umap_available()]


@dataclass(frozen=True)
class MapPoint:
    chunk_id: int
    document: str  # the file name: the map's colour
    where: str  # rag.records.place: page and section, as citations say it
    snippet: str  # the start of the passage
    x: float
    y: float


@dataclass(frozen=True)
class ChunkMap:
    points: list[MapPoint]
    method: str
    total: int  # chunks in the knowledge base; more than len(points) when sampled
    projector: Projector

    @property
    def sampled(self) -> bool:
        return self.total > len(self.points)

    def note(self) -> str:
        """What the map shows, in one line (the sampling said plainly)."""
        shown = f"{len(self.points):,} passages" if not self.sampled else (
            f"a random sample of {len(self.points):,} of {self.total:,} passages (a map draws at most "
            f"{MAX_POINTS:,})")
        return f"{shown}, projected to 2-D with {self.method.upper()}; colour: document"


class Projector:
    """A 2-D projection fitted on the map's vectors, which places other vectors (a question) the same way."""

    def __init__(self, method: str, vectors: np.ndarray, seed: int = 0) -> None:
        if method not in METHODS:
            raise LoupeError(f"projection must be one of {', '.join(METHODS)}, not {method!r}")
        if method == "umap" and not umap_available():
            raise LoupeError("UMAP is not installed (pip install umap-learn); PCA needs nothing more")
        self.method = method
        vectors = np.asarray(vectors, dtype=np.float32)
        self.mean = vectors.mean(axis=0)
        if method == "pca":
            self.components = _principal_axes(vectors - self.mean)
            self.coordinates = (vectors - self.mean) @ self.components.T
        else:
            self.coordinates = self._fit_umap(vectors, seed)

    def _fit_umap(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        import umap

        # cosine: the stored vectors are compared by cosine everywhere else in Loupe
        neighbours = max(2, min(15, len(vectors) - 1))
        self._fitted = _unit(vectors)  # for placing other vectors (transform)
        # The exact neighbours, from FAISS: UMAP's own search is a numba function compiled anew in every process
        # (about 10 CPU s before the first map).
        reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, metric="cosine", random_state=seed,
                            precomputed_knn=_cosine_neighbours(self._fitted, neighbours))
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, len(self.mean))
        if self.method == "pca":
            return (vectors - self.mean) @ self.components.T
        return self._place_among_neighbours(vectors)

    def _place_among_neighbours(self, vectors: np.ndarray) -> np.ndarray:
        """Each vector at the cosine-weighted mean of its nearest fitted points' places, where UMAP's own transform
        starts a new point. Not UMAP's transform itself: it first builds a search index, which took 94 CPU s here
        to place one question on a 5,000-point map."""
        cosines = _unit(vectors) @ self._fitted.T
        count = min(PLACING_NEIGHBOURS, cosines.shape[1])
        nearest = np.argpartition(-cosines, count - 1, axis=1)[:, :count]
        weights = np.clip(np.take_along_axis(cosines, nearest, axis=1), 1e-6, None)
        return ((weights[..., None] * self.coordinates[nearest]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
                ).astype(np.float32)


def _cosine_neighbours(unit: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `count` nearest rows by cosine, itself first (as UMAP's precomputed_knn wants them, even where a
    duplicate row ties with it), and their cosine distances."""
    import faiss

    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(np.ascontiguousarray(unit, dtype=np.float32))
    cosines, ids = index.search(np.ascontiguousarray(unit, dtype=np.float32), count)
    rows = np.arange(len(unit))[:, None]
    is_self = ids == rows
    order = np.argsort(is_self, axis=1, kind="stable")[:, :count - 1]  # the others, nearest first
    ids = np.hstack([rows, np.take_along_axis(ids, order, axis=1)]).astype(np.int32)
    cosines = np.hstack([np.ones_like(rows, dtype=np.float32), np.take_along_axis(cosines, order, axis=1)])
    return ids, np.clip(1.0 - cosines, 0.0, None).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _principal_axes(centred: np.ndarray) -> np.ndarray:
    """The two directions of largest variance (rows), sign-fixed so the same vectors always draw the same map.

    From the d x d covariance (eigh), not an SVD of the n x d rows: 20,000 MiniLM rows take a fraction of a second
    this way against 20-odd seconds (rag.pca fits by SVD, for every component; a map needs two)."""
    if len(centred) < 2:
        return np.eye(2, centred.shape[1], dtype=np.float32)
    rows = centred.astype(np.float64)  # float64: float32 sums over many rows lose the small directions
    _, vectors = np.linalg.eigh(rows.T @ rows)  # ascending eigenvalues
    axes = vectors[:, ::-1][:, :2].T
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    return (axes * signs[:, None]).astype(np.float32)


def sample_ids(ids: Sequence[int], max_points: int = MAX_POINTS, seed: int = 0) -> list[int]:
    """All ids when they fit; else an even random sample of max_points, the same for the same ids."""
    ids = sorted(int(i) for i in ids)
    if len(ids) <= max_points:
        return ids
    chosen = np.random.default_rng(seed).choice(len(ids), size=max_points, replace=False)
    return [ids[i] for i in sorted(chosen)]


def read_chunks(kb: KnowledgeBaseStore, ids: Sequence[int]) -> tuple[list[ChunkRecord], np.ndarray]:
    """The chunks and their stored vectors, in batches; a chunk deleted meanwhile is left out of both."""
    records: list[ChunkRecord] = []
    vectors: list[np.ndarray] = []
    for start in range(0, len(ids), READ_BATCH):
        batch = list(ids[start:start + READ_BATCH])
        chunks, stored = kb.chunks(batch), kb.chunk_vectors(batch)
        for chunk_id in batch:
            if chunk_id in chunks and chunk_id in stored:
                records.append(chunks[chunk_id])
                vectors.append(stored[chunk_id])
    return records, (np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, kb.text_model.dim)))


def point(chunk: ChunkRecord, xy: Sequence[float]) -> MapPoint:
    snippet = " ".join(chunk.text.split())
    snippet = snippet if len(snippet) <= SNIPPET_CHARS else snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return MapPoint(chunk.id, chunk.file, place(chunk.file, chunk.page, chunk.heading), snippet,
                    float(xy[0]), float(xy[1]))


def build_map(kb: KnowledgeBaseStore, method: str = "pca", max_points: int = MAX_POINTS) -> ChunkMap:
    """The map of every chunk of `kb` (a sample above max_points)."""
    ids = [chunk_id for chunk_id, _, _ in kb.chunk_texts()]  # every store backend lists its chunks this way
    if not ids:
        raise NotFound(f"{kb.folder.name} has no passages yet: add documents to draw a map")
    records, vectors = read_chunks(kb, sample_ids(ids, max_points))
    projector = Projector(method, vectors)
    points = [point(chunk, xy) for chunk, xy in zip(records, projector.coordinates)]
    logger.info("%s: map of %d of %d chunks (%s)", kb.folder.name, len(points), len(ids), method)
    return ChunkMap(points, method, len(ids), projector)


@dataclass(frozen=True)
class PlacedQuestion:
    """A question on the map, and its retrieved passages where the map draws them."""

    question: str
    x: float
    y: float
    hits: list[MapPoint]
    scores: list[float]


def place_question(chunk_map: ChunkMap, kb: KnowledgeBaseStore, question: str, query_vector: np.ndarray,
                   hits: Sequence[tuple[int, float]]) -> PlacedQuestion:
    """The question's vector and its hits (chunk id, score) projected; a hit outside the sample is placed too."""
    xy = chunk_map.projector.transform(query_vector)[0]
    shown = {p.chunk_id: p for p in chunk_map.points}
    missing = [chunk_id for chunk_id, _ in hits if chunk_id not in shown]
    if missing:
        records, vectors = read_chunks(kb, missing)
        shown |= {c.id: point(c, xy_) for c, xy_ in zip(records, chunk_map.projector.transform(vectors))}
    kept = [(shown[chunk_id], score) for chunk_id, score in hits if chunk_id in shown]
    return PlacedQuestion(question, float(xy[0]), float(xy[1]), [p for p, _ in kept], [s for _, s in kept])
