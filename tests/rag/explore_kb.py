"""Real text for the Explore tests: Disfl-QA paragraphs (SQuAD Wikipedia text; tests/data/README.md) written into a
real folder store with the real MiniLM vectors, one paragraph a chunk, a few documents."""

from __future__ import annotations

import json
from pathlib import Path

from rag.records import NewChunk, NewDocument

DISFLQA_PARAGRAPHS = Path(__file__).parents[1] / "data" / "disflqa-paragraphs-300.jsonl"


def disflqa_paragraphs(count: int) -> list[str]:
    """The first `count` (at most 300) paragraphs of the Disfl-QA corpus."""
    with DISFLQA_PARAGRAPHS.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for _, line in zip(range(count), lines)]


def add_text_document(kb, embedder, name: str, paragraphs: list[str]) -> int:
    """A document of `paragraphs`, one chunk each on page 1, embedded by `embedder`, committed in one write."""
    vectors = embedder.embed(paragraphs)
    document = NewDocument(path=str(Path("/docs") / name), name=name, kind="text", sha256=f"sha-{name}",
                           size_bytes=sum(map(len, paragraphs)), pages=1)
    with kb.write() as writer:
        document_id = writer.add_document(document)
        writer.add_chunks(document_id, 0, [NewChunk(1, p) for p in paragraphs], vectors)
    kb.flush()
    return document_id


def fill(kb, embedder, paragraphs: list[str], documents: int = 3) -> list[str]:
    """`paragraphs` split evenly over `documents` files named part0.txt, part1.txt, ...; returns their names."""
    names = [f"part{i}.txt" for i in range(documents)]
    size = -(-len(paragraphs) // documents)
    for i, name in enumerate(names):
        add_text_document(kb, embedder, name, paragraphs[i * size:(i + 1) * size])
    return names
