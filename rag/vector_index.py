"""A FAISS inner-product index keyed by catalog ids: exact (flat) for small stores, HNSW above a size.

The catalog holds every vector too, so this index is a cache: the store saves it now and then under the
catalog's generation number, and on open replays what the catalog's change log says happened since
(rag.store).

Kinds (`ann`):
- flat: exact search, a scan of every vector. Below `ann_threshold` vectors it is fast enough on 2 cores
  (docs/BENCHMARKS.md: about 63 ms a query at 100k vectors on a busy machine, an HNSW graph under 2 ms).
- hnsw: faiss.IndexHNSWFlat (M=32, efSearch=128); recall@10 against exact search 0.99+ on the scale benchmark.
  HNSW cannot remove vectors: a removed id becomes a tombstone, filtered out of every search (an IDSelector,
  so a query still gets k live hits), and the graph is rebuilt from the live vectors once tombstones pass
  COMPACT_FRACTION of it (compact()).
- auto (the default): flat below ann_threshold vectors, hnsw from there; on a GPU always flat, searched by a
  GPU copy (a GPU scans a million vectors in about a millisecond, exactly; FAISS has no GPU HNSW).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from rag.devices import faiss_gpu_count
from rag.settings import ANN_KINDS, ANN_THRESHOLD

logger = logging.getLogger(__name__)

HNSW_M = 32  # neighbours per node: 16 lost recall on clustered vectors, 32 keeps 0.99+ (docs/BENCHMARKS.md)
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
COMPACT_FRACTION = 0.2  # tombstones, as a share of an HNSW graph's vectors, that make it worth rebuilding
# A search of a few queries is faster on one thread: OpenMP's hand-off costs more than the work it splits, and
# on a busy machine its spinning threads slow everyone (measured: 63 ms against 170 ms on 100k flat vectors).
_FEW_QUERIES = 8
_OMP_THREADS = faiss.omp_get_max_threads()

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


def tombstones_path(path: Path) -> Path:
    """Where the removed ids of the HNSW index saved at `path` are kept (text-7.faiss -> text-7.removed.npy)."""
    return path.with_name(f"{path.stem}.removed.npy")


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """write(scratch) then fsync and rename into place: a reader never sees half a file, even if the process
    dies mid-write."""
    tmp = scratch_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class VectorIndex:
    def __init__(self, dim: int, use_gpu: bool = True, *, ann: str = "auto",
                 ann_threshold: int = ANN_THRESHOLD) -> None:
        if ann not in ANN_KINDS:
            raise ValueError(f"ann must be one of {ANN_KINDS}, not {ann!r}")
        self.dim = dim
        self.ann = ann
        self.ann_threshold = ann_threshold
        self._use_gpu = use_gpu and faiss_gpu_count() > 0  # use_gpu False: --device cpu
        self._cpu: faiss.Index = _flat(dim)
        self._removed: set[int] = set()  # tombstones of an HNSW index (a flat one removes ids at once)
        self._selector: tuple[faiss.IDSelector, ...] | None = None  # excludes the tombstones; made once per change
        self._gpu: faiss.Index | None = None  # rebuilt lazily: GPU flat indexes cannot remove ids
        self._gpu_resources = faiss.StandardGpuResources() if self._use_gpu else None
        self._conform()

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._use_gpu and self.kind == "flat"

    @property
    def kind(self) -> str:
        """'flat' (exact) or 'hnsw' (approximate)."""
        return "hnsw" if isinstance(faiss.downcast_index(self._cpu.index), faiss.IndexHNSW) else "flat"

    @property
    def size(self) -> int:
        """Live vectors (tombstones not counted)."""
        return int(self._cpu.ntotal) - len(self._removed)

    @property
    def tombstones(self) -> int:
        return len(self._removed)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._cpu.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        self._gpu = None
        self._conform()

    def remove(self, ids: np.ndarray) -> None:
        """Remove these ids (each must be in the index); an HNSW index keeps them as tombstones."""
        if len(ids) == 0:
            return
        if self.kind == "hnsw":
            self._removed.update(int(i) for i in ids)
            self._selector = None
        else:
            self._cpu.remove_ids(np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def ids(self) -> np.ndarray:
        """The live ids."""
        stored = faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
        return stored[~np.isin(stored, self._removed_array())] if self._removed else stored

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self.size == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        k = max(1, min(k, self.size))
        with _threads_for(len(queries)):
            if self.on_gpu:
                return self._gpu_index().search(queries, k)
            if self.kind == "flat":
                return self._cpu.search(queries, k)
            if not self._removed:
                return self._cpu.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k)))
            return self._cpu.search(queries, k, params=faiss.SearchParametersHNSW(
                efSearch=max(HNSW_EF_SEARCH, k), sel=self._tombstone_filter()))

    def _tombstone_filter(self) -> faiss.IDSelector:
        """A selector of every id but the tombstones. IndexIDMap2 translates it to its own ids, so tombstones
        are named by catalog id. Both selectors are kept referenced here: FAISS holds plain pointers to them."""
        if self._selector is None:
            batch = faiss.IDSelectorBatch(self._removed_array())
            self._selector = (batch, faiss.IDSelectorNot(batch))
        return self._selector[1]

    def _gpu_index(self) -> faiss.Index:
        if self._gpu is None:
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu

    # --- the kind of index --------------------------------------------------------------------
    def wanted_kind(self) -> str:
        if self.ann != "auto":
            return self.ann
        return "hnsw" if not self._use_gpu and self.size >= self.ann_threshold else "flat"

    def _conform(self) -> None:
        """Rebuild as the kind the settings and the size call for (once, when a store crosses the threshold)."""
        wanted = self.wanted_kind()
        if wanted != self.kind:
            logger.info("%d vectors: rebuilding the vector index as %s", self.size, wanted)
            self._rebuild(wanted)

    @property
    def needs_compaction(self) -> bool:
        return self.kind == "hnsw" and self.tombstones > COMPACT_FRACTION * max(1, int(self._cpu.ntotal))

    def compact(self) -> None:
        """Rebuild without the tombstones (the cost of an HNSW build, so only now and then)."""
        self._rebuild(self.wanted_kind())

    def _rebuild(self, kind: str) -> None:
        ids, vectors = self._live_vectors()
        self._cpu = _hnsw(self.dim) if kind == "hnsw" else _flat(self.dim)
        self._removed, self._selector, self._gpu = set(), None, None
        for start in range(0, len(ids), 65_536):  # in slices: one copy of the vectors in memory at a time
            self._cpu.add_with_ids(vectors[start:start + 65_536], ids[start:start + 65_536])

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        stored = faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
        vectors = self._cpu.index.reconstruct_n(0, len(stored)) if len(stored) else np.zeros((0, self.dim),
                                                                                                 np.float32)
        keep = ~np.isin(stored, self._removed_array())
        return stored[keep], np.ascontiguousarray(vectors[keep])

    def _removed_array(self) -> np.ndarray:
        return np.fromiter(self._removed, np.int64, len(self._removed))

    # --- files --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically; an HNSW index's tombstones go first to their own file (tombstones_path), so that
        an index file is never there without them."""
        self._write(path, lambda tmp: faiss.write_index(self._cpu, str(tmp)), self._tombstones_to_save())

    def frozen(self) -> Callable[[Path], None]:
        """A copy of the index as it is now (its serialised bytes: one memory copy, no disk), and a function that
        saves that copy as save() would: the store writes a big base in a background thread with it, while the
        index itself goes on changing."""
        data = faiss.serialize_index(self._cpu)
        removed = self._tombstones_to_save()
        return lambda path: self._write(path, lambda tmp: data.tofile(str(tmp)), removed)

    def _tombstones_to_save(self) -> np.ndarray | None:
        return self._removed_array() if self.kind == "hnsw" else None

    @staticmethod
    def _write(path: Path, write_index: Callable[[Path], object], removed: np.ndarray | None) -> None:
        if removed is not None:
            write_atomically(tombstones_path(path), lambda tmp: _save_array(tmp, removed))
        write_atomically(path, write_index)

    @classmethod
    def load(cls, path: Path, dim: int, use_gpu: bool = True, *, ann: str = "auto",
             ann_threshold: int = ANN_THRESHOLD) -> VectorIndex:
        index = cls(dim, use_gpu, ann=ann, ann_threshold=ann_threshold)
        loaded = faiss.read_index(str(path))
        if loaded.d != dim:
            raise ValueError(f"{path.name}: index has dimension {loaded.d}, expected {dim}")
        index._cpu = loaded  # read_index already returns the concrete IndexIDMap2, which owns its storage
        if index.kind == "hnsw":
            faiss.downcast_index(loaded.index).hnsw.efSearch = HNSW_EF_SEARCH
            index._removed = set(np.load(tombstones_path(path), allow_pickle=False).tolist())
        index._conform()  # the settings may have changed since it was saved
        return index


def _flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _hnsw(dim: int) -> faiss.Index:
    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    graph.hnsw.efSearch = HNSW_EF_SEARCH
    return faiss.IndexIDMap2(graph)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would append .npy to the scratch name
        np.save(handle, array)


@contextmanager
def _threads_for(queries: int) -> Iterator[None]:
    if queries >= _FEW_QUERIES:
        yield
        return
    faiss.omp_set_num_threads(1)  # OpenMP keeps this per calling thread: other threads' searches keep theirs
    try:
        yield
    finally:
        faiss.omp_set_num_threads(_OMP_THREADS)
