"""The generator interface: what answering needs from a language model, whatever serves it.

Two backends implement it, built from Settings in one place (`build_generator`):
- `local`: a causal LM run in this process through transformers (rag.local_generator), the default;
- `openai`: any server speaking the OpenAI chat-completions format (Ollama, llama.cpp's server, vLLM,
  LM Studio, OpenAI itself, another Loupe), in rag.openai_generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from rag.devices import ComputeGate
from rag.settings import Settings

Message = dict[str, str]


class Generator(Protocol):
    name: str  # the model, as the backend knows it

    def stream(self, messages: list[Message], max_new_tokens: int = 200) -> Iterator[str]:
        """Yield the answer's text piece by piece. Closing the iterator early ends the generation.

        Raises rag.errors.Busy when the backend cannot take another question now, TooLarge when the prompt
        does not fit the model's context, and LoupeError (naming the server) when a remote backend fails."""
        ...

    def fits(self, messages: list[Message], max_new_tokens: int) -> bool:
        """Whether the prompt plus `max_new_tokens` fit in the model's context window (as far as it is known)."""
        ...

    def prompt_tokens(self, messages: list[Message]) -> int:
        """The prompt's length in the model's tokens (an estimate where the backend has no tokenizer)."""
        ...

    def text_tokens(self, text: str) -> int:
        """The length of an answer's text in the model's tokens (an estimate where the backend has no tokenizer)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (threads, connections); answers in flight may finish."""
        ...


def build_generator(settings: Settings, device: str, gate: ComputeGate | None = None) -> Generator:
    """The generator the settings ask for. Backends are imported here, so a process loads only its own.
    `gate` is the process's ComputeGate, which a local model shares with the text embedder."""
    if settings.generator_backend == "openai":
        from rag.openai_generator import OpenAIGenerator

        return OpenAIGenerator.from_settings(settings)
    from rag.local_generator import LocalGenerator

    return LocalGenerator.from_settings(settings, device, gate)
