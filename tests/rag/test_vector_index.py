"""The vector index alone: exact below the threshold, HNSW above it, recall against exact search, and removed ids
that never come back (tombstones), through a save and a load and a compaction too."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from rag.vector_index import VectorIndex, tombstones_path

DIM = 32


def clustered(count: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Unit vectors around random centres, like embeddings of a few topics: near neighbours exist."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    vectors = centres[rng.integers(0, clusters, count)] + rng.standard_normal((count, DIM)) * 0.9
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(6000)
    return np.arange(1, 6001, dtype=np.int64), vectors, clustered(100, seed=1)


def exact_top(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist())) / truth.size


def test_auto_switches_to_hnsw_at_the_threshold_and_flat_never_does(data):
    ids, vectors, _ = data
    index = VectorIndex(DIM, use_gpu=False, ann="auto", ann_threshold=1000)
    index.add(ids[:999], vectors[:999])
    assert index.kind == "flat"
    index.add(ids[999:1001], vectors[999:1001])
    assert index.kind == "hnsw" and index.size == 1001
    assert sorted(index.ids().tolist()) == ids[:1001].tolist()  # nothing lost in the rebuild
    flat = VectorIndex(DIM, use_gpu=False, ann="flat", ann_threshold=10)
    flat.add(ids[:100], vectors[:100])
    assert flat.kind == "flat"
    with pytest.raises(ValueError, match="ann must be one of"):
        VectorIndex(DIM, ann="ivf")


def test_hnsw_recall_at_10_against_exact_search(data):
    ids, vectors, queries = data
    index = VectorIndex(DIM, use_gpu=False, ann="hnsw")
    index.add(ids, vectors)
    _, found = index.search(queries, 10)
    assert recall(found, exact_top(ids, vectors, queries, 10)) >= 0.95
    # one query at a time (the app's case, searched on one thread) finds the same
    single = np.stack([index.search(q[None], 10)[1][0] for q in queries[:10]])
    assert (single == found[:10]).all()


def test_removed_ids_never_come_back_from_hnsw(tmp_path, data):
    ids, vectors, queries = data
    index = VectorIndex(DIM, use_gpu=False, ann="hnsw")
    index.add(ids, vectors)
    # remove the exact top 3 of every query: the ids most likely to come back
    removed = np.unique(exact_top(ids, vectors, queries, 3))
    index.remove(removed)
    assert index.size == len(ids) - len(removed) and index.tombstones == len(removed)
    assert not np.isin(index.ids(), removed).any()
    live = ~np.isin(ids, removed)
    for candidate in (index, _reloaded(index, tmp_path)):
        _, found = candidate.search(queries, 50)
        assert not np.isin(found, removed).any()
        assert (found >= 0).all()  # k live hits still: the filter runs inside the graph search
        assert recall(found[:, :10], exact_top(ids[live], vectors[live], queries, 10)) >= 0.95


def test_compaction_drops_the_tombstones_and_keeps_the_rest(data):
    ids, vectors, queries = data
    index = VectorIndex(DIM, use_gpu=False, ann="hnsw")
    index.add(ids[:2000], vectors[:2000])
    index.remove(ids[:600])
    assert index.needs_compaction
    index.compact()
    assert index.tombstones == 0 and index.size == 1400 and not index.needs_compaction
    assert sorted(index.ids().tolist()) == ids[600:2000].tolist()
    _, found = index.search(queries, 10)
    assert not np.isin(found, ids[:600]).any()


def test_a_saved_hnsw_index_needs_its_tombstones_file(tmp_path, data):
    ids, vectors, _ = data
    index = VectorIndex(DIM, use_gpu=False, ann="hnsw")
    index.add(ids[:100], vectors[:100])
    index.remove(ids[:5])
    path = tmp_path / "text-3.faiss"
    index.save(path)
    assert np.load(tombstones_path(path)).tolist() == ids[:5].tolist()
    tombstones_path(path).unlink()
    with pytest.raises(FileNotFoundError):  # the store then rebuilds from the catalog, never serves removed ids
        VectorIndex.load(path, DIM, use_gpu=False, ann="hnsw")


def test_a_changed_setting_converts_a_loaded_index(tmp_path, data):
    ids, vectors, queries = data
    index = VectorIndex(DIM, use_gpu=False, ann="hnsw")
    index.add(ids[:500], vectors[:500])
    index.remove(ids[:10])
    index.save(tmp_path / "text-1.faiss")
    flat = VectorIndex.load(tmp_path / "text-1.faiss", DIM, use_gpu=False, ann="flat")
    assert flat.kind == "flat" and flat.size == 490
    assert isinstance(faiss.downcast_index(flat._cpu.index), faiss.IndexFlatIP)
    assert sorted(flat.ids().tolist()) == ids[10:500].tolist()


def _reloaded(index: VectorIndex, folder) -> VectorIndex:
    path = folder / "text-9.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, DIM, use_gpu=False, ann="hnsw")
    assert loaded.kind == "hnsw" and loaded.tombstones == index.tombstones
    return loaded


@pytest.mark.skipif(not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0,
                    reason="no GPU: FAISS sees none here, so the GPU copy of the index cannot be searched")
def test_on_a_gpu_auto_stays_exact_and_searches_a_gpu_copy_that_forgets_removed_ids(data):
    ids, vectors, queries = data
    index = VectorIndex(DIM, use_gpu=True, ann="auto", ann_threshold=1000)
    index.add(ids, vectors)
    assert index.kind == "flat" and index.on_gpu  # above the threshold: a GPU scans it exactly, faster than HNSW
    _, found = index.search(queries, 10)
    assert recall(found, exact_top(ids, vectors, queries, 10)) >= 0.99  # exact, up to float32 near-ties
    gone = found[:, 0]
    index.remove(gone)
    _, after = index.search(queries, 10)
    assert not set(after.ravel().tolist()) & set(gone.tolist())  # the GPU copy is rebuilt without them
