"""The words the generator sees. Short, because a 135M-parameter model follows short prompts best."""

from __future__ import annotations

from rag.retrieval import Passage

NOT_IN_DOCUMENTS = "The documents don't say."

SYSTEM = (
    "You answer questions using only the numbered passages. "
    "Answer in one or two sentences and cite the passage numbers in brackets, like [1]. "
    f"If the passages do not contain the answer, reply exactly: {NOT_IN_DOCUMENTS}"
)


def passage_label(passage: Passage) -> str:
    chunk = passage.chunk
    return f"{chunk.file}, page {chunk.page}"


def build_messages(question: str, passages: list[Passage]) -> list[dict[str, str]]:
    numbered = "\n\n".join(f"[{n}] ({passage_label(p)}) {p.chunk.text}" for n, p in enumerate(passages, start=1))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Passages:\n{numbered}\n\nQuestion: {question}"},
    ]
