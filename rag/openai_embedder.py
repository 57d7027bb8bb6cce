"""The OpenAI-compatible embeddings backend: OpenAI's text-embedding-3-small, or a self-hosted server (Ollama,
vLLM, text-embeddings-inference, LM Studio, another Loupe's /v1/embeddings) embeds the texts.

Through the `openai` client, as the generator's backend (rag.openai_generator): a connect and a read timeout,
and a bounded number of retries with exponential back-off on a refused connection, a 429 or a 5xx (the client's
own retry loop). What still fails becomes a ModelServerError (502) that names the server's URL and the HTTP
status; the key is neither logged nor put in a message nor in repr.

The server does not say how many tokens its model reads or how it counts them, so this backend assumes
ASSUMED_MAX_TOKENS and counts tokens with rag.openai_server.approximate_tokens, which errs high for English,
so chunks cut by this count fit the model's window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import openai

from rag.embedder import BatchedEmbedder
from rag.errors import ModelServerError
from rag.openai_generator import CONNECT_TIMEOUT_S, MAX_RETRIES, NO_KEY
from rag.openai_server import ServerClient, approximate_tokens
from rag.records import ModelId
from rag.settings import Settings

logger = logging.getLogger(__name__)

ASSUMED_MAX_TOKENS = 512  # what common embedding models read (bge, e5, gte, nomic: 512; OpenAI's: 8,191)
BATCH_SIZE = 64  # texts per request: far under OpenAI's 2,048, small enough for a slow server's timeout
TIMEOUT_S = 60.0


class OpenAIEmbedder(ServerClient, BatchedEmbedder):
    """Vectors from the /embeddings route of an OpenAI-compatible server at `base_url` (ending in /v1)."""

    what = "The embeddings server"
    url_flag, model_flag, key_variable = "--openai-base-url", "--openai-model", "LOUPE_OPENAI_API_KEY"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = TIMEOUT_S,
                 max_retries: int = MAX_RETRIES) -> None:
        self.name = model
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or NO_KEY, max_retries=max_retries,
                                     timeout=openai.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))
        self.timeout_s = timeout_s
        self.max_tokens = ASSUMED_MAX_TOKENS
        self.batch_size = BATCH_SIZE
        # The dimension is the server's to say: one short request when the embedder is built.
        self.model_id = ModelId(model, int(self._request(["dimension"]).shape[1]))

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEmbedder:
        return cls(settings.openai_base_url, settings.openai_model, settings.openai_api_key)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIEmbedder(base_url={self.base_url!r}, model={self.name!r})"

    def close(self) -> None:
        self._client.close()

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        return [approximate_tokens(text) for text in texts]

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._request(texts)

    def _request(self, texts: list[str]) -> np.ndarray:
        try:
            reply = self._client.embeddings.create(model=self.name, input=texts, encoding_format="float")
        except openai.APIError as error:
            raise self._translated(error) from None
        rows = sorted(reply.data, key=lambda item: item.index)
        if len(rows) != len(texts):
            raise ModelServerError(f"The embeddings server at {self.base_url} returned {len(rows)} vectors for "
                                   f"{len(texts)} texts.")
        return np.asarray([row.embedding for row in rows], np.float32)
