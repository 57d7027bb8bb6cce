"""PCA for a knowledge base's text vectors: fewer dimensions, fitted on the knowledge base's own chunks.

A projection is fitted by `python -m rag reembed --embed-dims N` on the full vectors of every chunk, and saved in
the knowledge base's folder (PROJECTION_FILE), so it travels with the vectors it made. Queries go through the same
projection (ProjectedEmbedder). The store records the reduced model as `<model>+pca<N>:<fingerprint>`: a store
reduced by another fit (another knowledge base's, or a later one) is refused like a store of another model.

Why not fit at the first ingest of a new knowledge base: the first files are a poor sample of what comes later,
and a projection cannot be changed without re-embedding everything. So --embed-dims on a knowledge base that has
no projection is refused, with the command to run: ingest with full dimensions, then `reembed --embed-dims N`.

Figures (explained variance, index size, nDCG@10 per size on Disfl-QA): docs/BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedder import Embedder, EmbedderWrapper
from rag.errors import LoupeError
from rag.records import ModelId
from rag.store_api import is_database_url
from rag.vector_index import scratch_path

logger = logging.getLogger(__name__)

PROJECTION_FILE = "pca.npz"
# Fitting on more chunks than this changes the components by less than float noise; SVD time grows with them.
MAX_FIT_VECTORS = 200_000


class ProjectionError(LoupeError):
    """No projection that fits the settings: the message says which command makes one."""


def reduced_name(base_name: str, dims: int, fingerprint: str) -> str:
    """The model name a store records for vectors reduced by a projection."""
    return f"{base_name}+pca{dims}:{fingerprint}"


@dataclass(frozen=True)
class Projection:
    """Centre on `mean`, keep the first `dims` principal components, re-normalise (cosines stay inner products)."""

    base_model: str  # the name of the model whose vectors it reduces
    mean: np.ndarray  # (base dim,)
    components: np.ndarray  # (dims, base dim), orthonormal rows
    explained_variance: float  # the share of the fitted vectors' variance the kept components hold

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def fingerprint(self) -> str:
        """Eight hex digits of the fit itself: two fits of one size are told apart."""
        digest = hashlib.sha256(self.mean.astype("<f4").tobytes() + self.components.astype("<f4").tobytes())
        return digest.hexdigest()[:8]

    def model_id(self) -> ModelId:
        return ModelId(reduced_name(self.base_model, self.dims, self.fingerprint), self.dims)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Unit-length reduced rows; an all-zero row (the mean itself) stays zero rather than dividing by 0."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"expected {self.mean.shape[0]}-d vectors to project, got {vectors.shape[-1]}-d")
        reduced = (vectors.reshape(-1, self.mean.shape[0]) - self.mean) @ self.components.T
        norms = np.linalg.norm(reduced, axis=1, keepdims=True)
        return (reduced / np.maximum(norms, 1e-12)).astype(np.float32).reshape(*vectors.shape[:-1], self.dims)

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int, base_model: str, seed: int = 0) -> Projection:
        """PCA of `vectors` (rows), keeping `dims` components. Needs more rows than dims: n rows span at most n - 1
        directions around their mean."""
        vectors = np.asarray(vectors, np.float32)
        count, width = vectors.shape
        if not 0 < dims < width:
            raise ProjectionError(f"--embed-dims {dims}: keep between 1 and {width - 1} of the model's {width} "
                                  "dimensions (0 keeps them all)")
        if count <= dims:
            raise ProjectionError(f"--embed-dims {dims} needs more than {dims} chunks to fit PCA on; the knowledge "
                                  f"base has {count}. Add documents first, or keep every dimension")
        if count > MAX_FIT_VECTORS:
            rows = np.random.default_rng(seed).choice(count, MAX_FIT_VECTORS, replace=False)
            vectors = vectors[np.sort(rows)]
        mean = vectors.mean(axis=0)
        # float64 for the decomposition: float32 loses the small components' directions
        _, singular, components = np.linalg.svd((vectors - mean).astype(np.float64), full_matrices=False)
        variance = singular ** 2
        return cls(base_model, mean.astype(np.float32), components[:dims].astype(np.float32),
                   float(variance[:dims].sum() / variance.sum()))

    def save(self, folder: Path) -> Path:
        """Write atomically into the knowledge base's folder: a reader never sees half a projection."""
        path = Path(folder) / PROJECTION_FILE
        tmp = scratch_path(path)
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, base_model=np.array(self.base_model), mean=self.mean, components=self.components,
                         explained_variance=np.array(self.explained_variance))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, folder: Path) -> Projection | None:
        """The projection saved in a knowledge base's folder; None when it has none."""
        path = Path(folder) / PROJECTION_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(str(data["base_model"]), data["mean"].astype(np.float32),
                       data["components"].astype(np.float32), float(data["explained_variance"]))


def projection_for(folder: Path, dims: int, base_model: str) -> Projection:
    """The knowledge base's projection to `dims` dimensions of `base_model`'s vectors, or ProjectionError saying
    what to run. The message names the folder by its name only."""
    if is_database_url(folder):
        raise ProjectionError(f"--embed-dims {dims}: PCA is kept in a knowledge base's folder, and a PostgreSQL "
                              "knowledge base has none; use every dimension (--embed-dims 0)")
    projection = Projection.load(folder)
    name = Path(folder).name
    remedy = f"run `python -m rag reembed --store ... --embed-dims {dims}` to fit one on its chunks"
    if projection is None:
        raise ProjectionError(f"--embed-dims {dims}: the knowledge base '{name}' has no PCA projection yet (PCA is "
                              f"fitted on a knowledge base's own chunks); ingest with every dimension, then {remedy}")
    if projection.dims != dims or projection.base_model != base_model:
        raise ProjectionError(f"--embed-dims {dims}: the knowledge base '{name}' was reduced to {projection.dims} "
                              f"dimensions of '{projection.base_model}', not {dims} of '{base_model}'; set "
                              f"--embed-dims {projection.dims}, or {remedy}")
    return projection


class ProjectedEmbedder(EmbedderWrapper):
    """An embedder whose vectors go through a knowledge base's projection: the same texts, fewer dimensions."""

    def __init__(self, base: Embedder, projection: Projection) -> None:
        if projection.base_model != base.model_id.name:
            raise ProjectionError(f"the PCA projection reduces '{projection.base_model}', not "
                                  f"'{base.model_id.name}'")
        super().__init__(base)
        self.projection = projection
        self.model_id = projection.model_id()

    def __repr__(self) -> str:
        return f"ProjectedEmbedder({self.base!r}, dims={self.projection.dims})"

    @property
    def dim(self) -> int:
        return self.projection.dims

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray:
        return self.projection.project(self.base.embed(texts, batch_size, urgent=urgent, query=query))
