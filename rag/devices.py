"""Where models and indexes run: the GPU when one is there, the CPU otherwise."""

from __future__ import annotations

from functools import lru_cache


def torch_device(setting: str = "auto") -> str:
    """Resolve the `device` setting to a torch device string."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu, or faiss-gpu on a machine without one)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def apply_torch_threads(threads: int) -> None:
    """torch's intra-op threads for this process; 0 leaves torch's default (one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
