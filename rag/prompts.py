"""The words the generator sees.

Measured on SmolLM2-135M-Instruct (see docs/EVALUATION.md): a short system line and the passages as
plain context work best. Numbered passages and "cite [n]" instructions made it copy list markers or
invent numbers, so citations are attached afterwards by rag.grounding, which checks each sentence
against the passages instead of trusting the model's own brackets.
"""

from __future__ import annotations

from rag.retrieval import Passage

NOT_IN_DOCUMENTS = "The documents don't say."

SYSTEM = "You are a helpful assistant. Answer only from the context. Keep it short."


def build_messages(question: str, passages: list[Passage]) -> list[dict[str, str]]:
    context = "\n\n".join(p.chunk.text for p in passages)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Context: {context}\n\nQuestion: {question}"},
    ]
