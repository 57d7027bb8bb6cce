"""The text embedder's interface, the batching every backend shares, and the one place embedders are built.

Backends (the `embedder` setting):
    sbert      sentence-transformers in this process (rag.text_embedder): any model id or local path; the default
    onnx       the same model exported once to ONNX and run by onnxruntime (rag.onnx_embedder)
    onnx-int8  that export with its weights quantised to int8, per channel (rag.onnx_embedder)
    openai     an OpenAI-compatible /v1/embeddings server (rag.openai_embedder): OpenAI, Ollama, vLLM,
               text-embeddings-inference, LM Studio, another Loupe

Every backend returns unit-length float32 rows, so an inner product is a cosine. Texts past `max_tokens` are
cut there (what the model reads of them; the chunker keeps chunks within it), an empty text is refused
(LoupeError), and so is one past MAX_TEXT_CHARS (TooLarge): nothing a model reads is that long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rag.devices import ComputeGate
from rag.errors import LoupeError, TooLarge
from rag.records import ModelId
from rag.settings import Settings

logger = logging.getLogger(__name__)

# Far past any model's window (512 tokens is about 2,500 characters): text this long is a mistake, not a passage.
MAX_TEXT_CHARS = 100_000
INT8_SUFFIX = "+onnx-int8"  # int8 vectors differ a little from fp32's: a store records them as another model
# Prefixes some model families were trained with (query, passage). Sentence-transformers models that declare
# "query"/"document" prompts in their own config use those instead (rag.text_embedder).
FAMILY_PREFIXES = {"e5": ("query: ", "passage: "),
                   "bge": ("Represent this sentence for searching relevant passages: ", "")}


@runtime_checkable
class Embedder(Protocol):
    """What ingest, retrieval and answering need of a text embedder."""

    model_id: ModelId  # recorded in a store, which then refuses vectors from any other model
    max_tokens: int  # the model reads this many tokens of a text, not counting its own special tokens
    gate: ComputeGate | None  # what local model work takes turns through (the generator shares it); None: remote

    @property
    def dim(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]: ...

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray: ...


def family_prefixes(name: str) -> tuple[str, str]:
    """The (query, passage) prefixes of a model family named in `name`, e.g. intfloat/e5-small-v2; else none."""
    lowered = name.lower().rsplit("/", 1)[-1]
    for family, prefixes in FAMILY_PREFIXES.items():
        if lowered.startswith(family) or f"-{family}" in lowered:
            return prefixes
    return "", ""


def check_texts(texts: Sequence[str]) -> None:
    """Refuse what no backend can embed meaningfully; the message names the text by its position."""
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise LoupeError(f"text {index + 1} of {len(texts)} is empty: there is nothing to embed")
        if len(text) > MAX_TEXT_CHARS:
            raise TooLarge(f"text {index + 1} of {len(texts)} is {len(text):,} characters long; the embedder takes "
                           f"at most {MAX_TEXT_CHARS:,}")


class BatchedEmbedder:
    """What the backends share: checks, prefixes, batches of similar length, one batch a turn at the gate, and
    unit-length rows in the callers' order. A backend supplies `_encode` (one batch) and `count_tokens_batch`."""

    model_id: ModelId
    max_tokens: int
    batch_size: int  # the backend's default when a caller passes 0
    query_prefix: str = ""
    passage_prefix: str = ""
    gate: ComputeGate | None = None  # local backends share it with the generator; a remote one needs none

    @property
    def dim(self) -> int:
        return self.model_id.dim

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text. batch_size 0 means the backend's default. `urgent` is
        for a question's own embeddings: they take their turn at the model before background work (an ingest,
        the generator) does (rag.devices.ComputeGate). `query` marks search queries, for models whose queries
        and passages carry different prefixes."""
        check_texts(texts)
        prefix = self.query_prefix if query else self.passage_prefix
        size = batch_size or self.batch_size
        # Longest first, as sentence-transformers orders a batch itself: similar lengths pad least.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            # One batch a turn: a question waits for one batch of an ingest, never for the whole document.
            with self.gate.turn(urgent) if self.gate else nullcontext():
                encoded = self._encode([prefix + texts[i] for i in rows])
            vectors[rows] = normalized(encoded)
        return vectors

    def count_tokens(self, text: str) -> int:
        return self.count_tokens_batch([text])[0]

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        raise NotImplementedError

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def tokenizer_counts(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens per text by a Hugging Face tokenizer, without the model's special tokens."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def recorded_model_name(settings: Settings) -> str:
    """The model name a store records for the settings' embedder, known without loading it (list, delete). With
    embed_dims, the name of the reduction the store's own PCA projection makes (rag.pca)."""
    if settings.embed_dims:
        from rag.pca import projection_for

        base = recorded_model_name(settings.with_(embed_dims=0))
        return projection_for(settings.store, settings.embed_dims, base).model_id().name
    if settings.embedder == "openai":
        return settings.openai_model
    return settings.text_model + (INT8_SUFFIX if settings.embedder == "onnx-int8" else "")


def settings_for_model(settings: Settings, recorded: str, store: Path | str) -> Settings:
    """The settings whose embedder makes the vectors a store records as `recorded`: the inverse of
    recorded_model_name, for a knowledge base made by another model than the configured one. A plain name is that
    model on the configured backend (fp32 when that is onnx-int8; the server's model name when it is openai);
    `+onnx-int8` is the int8 export; `+pca<N>:<fit>` is the projection saved in `store`."""
    base, pca, fit = recorded.partition("+pca")
    dims = int(fit.split(":", 1)[0]) if pca and fit.split(":", 1)[0].isdigit() else 0
    if pca and not dims:  # "+pca" inside a model's own name: no reduction
        base, dims = recorded, 0
    embedder = "sbert" if settings.embedder == "onnx-int8" else settings.embedder
    if base.endswith(INT8_SUFFIX):
        base, embedder = base[:-len(INT8_SUFFIX)], "onnx-int8"
    model = {"openai_model": base} if embedder == "openai" else {"text_model": base}
    return settings.with_(embedder=embedder, embed_dims=dims, store=store, **model)


class EmbedderWrapper:
    """An embedder built on another (`base`): the same model, tokens and gate unless a subclass says otherwise; a
    subclass changes what `embed` gives (a projection, a cache, a test's distortion)."""

    def __init__(self, base: Embedder) -> None:
        self.base = base
        self.model_id, self.max_tokens, self.gate = base.model_id, base.max_tokens, base.gate

    @property
    def dim(self) -> int:
        return self.base.dim

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        return self.base.count_tokens_batch(texts)

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray:
        return self.base.embed(texts, batch_size, urgent=urgent, query=query)


def build_embedder(settings: Settings, device: str = "cpu", gate: ComputeGate | None = None) -> Embedder:
    """The text embedder the settings ask for: the one place embedders are built from Settings. With embed_dims,
    its vectors go through the PCA projection saved in settings.store (rag.pca); ProjectionError when that
    knowledge base has none of that size yet (`python -m rag reembed --embed-dims N` fits one)."""
    builders: dict[str, Callable[[], Embedder]] = {
        "sbert": lambda: _sbert(settings, device, gate),
        "onnx": lambda: _onnx(settings, gate, quantized=False),
        "onnx-int8": lambda: _onnx(settings, gate, quantized=True),
        "openai": lambda: _openai(settings),
    }
    if not settings.embed_dims:
        return _loaded(settings, builders[settings.embedder])
    from rag.pca import ProjectedEmbedder, projection_for

    # Checked before the model loads: a missing projection is known in a millisecond, the model takes seconds.
    projection = projection_for(settings.store, settings.embed_dims, recorded_model_name(settings.with_(embed_dims=0)))
    return ProjectedEmbedder(_loaded(settings, builders[settings.embedder]), projection)


class ModelNotLoadable(LoupeError):
    """The text model cannot be loaded on this machine; the message names it and says why in words. The loader's
    own message (it may name server paths) and its traceback go to the log."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"the text model '{model}' cannot be loaded here: {reason}")
        self.model, self.reason = model, reason


def _loaded(settings: Settings, build: Callable[[], Embedder]) -> Embedder:
    try:
        return build()
    except LoupeError:
        raise
    # transformers and huggingface_hub report a missing model as an OSError, an unreadable one as a ValueError
    except (OSError, ValueError) as error:
        model = recorded_model_name(settings)
        known = _why_not_loadable(error, model)
        # A cause said in words needs no traceback on the console (the CLI's is one line); an unknown one does.
        logger.log(logging.DEBUG if known else logging.ERROR, "cannot load the text model %r", model, exc_info=True)
        reason = known or f"reading it failed ({type(error).__name__}; the server log has the details)"
        shown = Path(model).name if Path(model).is_absolute() else model  # a server path names only its folder
        raise ModelNotLoadable(shown, reason) from error


def _why_not_loadable(error: Exception, model: str) -> str | None:
    """Why the model cannot be loaded, in words; None for a cause not recognised here."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    causes = _causes(error)
    if any(isinstance(cause, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for cause in causes):
        return "it is not downloaded on this machine, and Loupe is offline (the Hugging Face Hub cannot be reached)"
    if any(isinstance(cause, GatedRepoError) for cause in causes):
        return "it is gated on the Hugging Face Hub: accept its terms there and log in with a token"
    if any(isinstance(cause, RepositoryNotFoundError) for cause in causes):
        return "the Hugging Face Hub has no model of that name (check its spelling; a private one needs a token)"
    folder = Path(model)
    if folder.exists():
        return "its folder holds no model that Loupe can read"
    if folder.is_absolute():
        return "its folder does not exist"
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """The error and those it was raised from or while handling, nearest first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _sbert(settings: Settings, device: str, gate: ComputeGate | None) -> Embedder:
    from rag.text_embedder import TextEmbedder

    return TextEmbedder(settings.text_model, device, gate)


def _onnx(settings: Settings, gate: ComputeGate | None, quantized: bool) -> Embedder:
    from rag.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder.from_settings(settings, gate, quantized)


def _openai(settings: Settings) -> Embedder:
    from rag.openai_embedder import OpenAIEmbedder

    return OpenAIEmbedder.from_settings(settings)
