"""The words the generator sees.

Measured on SmolLM2-135M-Instruct (see docs/EVALUATION.md): a short system line and the context as plain
text work best. Numbered passages and "cite [n]" instructions made it copy list markers or invent numbers,
so citations are attached afterwards by rag.grounding, which checks each sentence against the passages
instead of trusting the model's own brackets. The context is the passages' best sentences for the question
(rag.answering picks them), not the whole passages: the small model strays less with less to read.
"""

from __future__ import annotations

from rag.retrieval import Passage

NOT_IN_DOCUMENTS = "The documents don't say."

SYSTEM = ("You are a helpful assistant. Answer the question in one short sentence, using only the context. "
          f"If the context does not contain the answer, reply: {NOT_IN_DOCUMENTS}")


def build_messages(question: str, passages: list[Passage], sentences: list[str] | None = None) -> list[dict[str, str]]:
    """The chat for one question; `sentences` (in reading order) replace the whole passages as the context."""
    context = " ".join(sentences) if sentences else "\n\n".join(p.chunk.text for p in passages)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Context: {context}\n\nQuestion: {question}"},
    ]
