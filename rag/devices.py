"""Where models and indexes run: the GPU when one is there, the CPU otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


class ComputeGate:
    """One model computation at a time in the process, question-time work first.

    On a CPU with few cores, torch work run from several threads at once is slower than the same work run one
    piece after another: each thread starts its own team of torch threads and they fight over the cores (10
    questions at once took 4x longer than one after another, docs/BENCHMARKS.md). So the text embedder's batches
    and the generator's forward passes take turns through this gate. A question's own embeddings (the query,
    its sentences) are urgent: they go before the generator's next step and before an ingest's next batch, so a
    question's first words do not wait behind other people's answers. Each turn is one batch or one step, so
    background work waits at most for the urgent pieces queued ahead of it.
    """

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Computations waiting for their turn."""
        with self._turn:
            return self._waiting

    @contextmanager
    def turn(self, urgent: bool = False) -> Iterator[None]:
        with self._turn:
            self._urgent_waiting += urgent
            self._waiting += 1
            try:
                while self._busy or (not urgent and self._urgent_waiting):
                    self._turn.wait()
            finally:
                self._urgent_waiting -= urgent
                self._waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()
