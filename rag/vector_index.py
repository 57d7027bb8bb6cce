"""A FAISS inner-product index keyed by catalog ids, mirrored on the GPU when FAISS has one.

The catalog holds every vector too, so this index is a cache: it is saved under the catalog's
generation number and rebuilt from the catalog whenever that number does not match (a crash between
the catalog commit and the index save, or another process writing the store).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import faiss
import numpy as np

from rag.devices import faiss_gpu_count

_SCRATCH = re.compile(r".+\.tmp-(\d+)-\d+")


def scratch_path(path: Path) -> Path:
    """Where to write `path` before renaming it into place. Unique to this process and thread, so two
    writers never interleave in one file; and a leftover names its owner, so it can be removed once that
    process is dead."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def scratch_owner(path: Path) -> int | None:
    """The process id in a name made by scratch_path, else None."""
    match = _SCRATCH.fullmatch(path.name)
    return int(match.group(1)) if match else None


class VectorIndex:
    def __init__(self, dim: int, use_gpu: bool = True) -> None:
        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._use_gpu = use_gpu and faiss_gpu_count() > 0  # use_gpu False: --device cpu
        self._gpu: faiss.Index | None = None  # rebuilt lazily: GPU flat indexes cannot remove ids
        self._gpu_resources = faiss.StandardGpuResources() if self._use_gpu else None

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._use_gpu

    @property
    def size(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._cpu.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._cpu.remove_ids(np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._cpu.id_map).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.size))
        if self.size == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self._searcher().search(queries, k)

    def _searcher(self) -> faiss.Index:
        if not self._use_gpu:
            return self._cpu
        if self._gpu is None:
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file, even if the process dies mid-write."""
        tmp = scratch_path(path)
        try:
            faiss.write_index(self._cpu, str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, dim: int, use_gpu: bool = True) -> VectorIndex:
        index = cls(dim, use_gpu)
        loaded = faiss.read_index(str(path))
        if loaded.d != dim:
            raise ValueError(f"{path}: index has dimension {loaded.d}, expected {dim}")
        index._cpu = loaded  # read_index already returns the concrete IndexIDMap2, which owns its storage
        return index
