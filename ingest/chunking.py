"""Split text blocks into chunks that fit the text embedder, break at sentences, and overlap.

A chunk never spans two pages or two sections, so its citation (file, page, heading) is exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import NamedTuple

from ingest.parsed import TextBlock
from rag.records import NewChunk

# A sentence ends at . ! ? (optionally closed by quotes or brackets) before whitespace, or at a line break
# that follows such punctuation; and at blank lines. Abbreviations may split early, which costs little:
# the pieces are packed back together up to the token budget.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_WHITESPACE = re.compile(r"[ \t\r\f\v]+")

_STOPPED = re.compile(r"[.!?][\"')\]]*$")  # how a sentence that ends at its punctuation ends

TokenCounter = Callable[[list[str]], list[int]]


class _Piece(NamedTuple):
    text: str
    tokens: int
    after: str  # what separates it from the next piece of its chunk


@dataclass(frozen=True)
class ChunkBudget:
    max_tokens: int
    overlap_tokens: int


def split_sentences(text: str) -> list[str]:
    pieces = (_WHITESPACE.sub(" ", p).strip() for p in _SENTENCE_END.split(text))
    return [p for p in pieces if p]


def chunk_blocks(blocks: Iterable[TextBlock], count_tokens: TokenCounter, budget: ChunkBudget) -> Iterator[NewChunk]:
    """Chunks in document order; `count_tokens` gives the token count of each of a list of strings."""
    for (page, heading), group in groupby(blocks, key=lambda b: (b.page, b.heading)):
        group = list(group)
        ocr = any(b.ocr for b in group)
        sentences = [s for b in group for s in split_sentences(b.text)]
        for text in _pack(sentences, count_tokens, budget):
            yield NewChunk(page=page, text=text, heading=heading, ocr=ocr)


def _pack(sentences: list[str], count_tokens: TokenCounter, budget: ChunkBudget) -> Iterator[str]:
    pieces: list[_Piece] = []
    for sentence, tokens in zip(sentences, count_tokens(sentences) if sentences else []):
        if tokens <= budget.max_tokens:
            pieces.append(_piece(sentence, tokens))
        else:  # a "sentence" longer than the model sees (a table, a run-on list): cut it by words
            parts = _split_long(sentence, count_tokens, budget.max_tokens)
            pieces.extend(_Piece(text, size, " ") for text, size in parts[:-1])  # cut mid-sentence: no break
            pieces.append(_piece(*parts[-1]))
    current: list[_Piece] = []
    size = 0
    for piece in pieces:
        if current and size + piece[1] > budget.max_tokens:
            yield _joined(current)
            current = _overlap_tail(current, budget.overlap_tokens, budget.max_tokens - piece[1])
            size = sum(p[1] for p in current)
        current.append(piece)
        size += piece[1]
    if current:
        yield _joined(current)


def _joined(pieces: list[_Piece]) -> str:
    return "".join(text + after for text, _tokens, after in pieces[:-1]) + pieces[-1].text


def _piece(sentence: str, tokens: int) -> _Piece:
    """A sentence that ended without a full stop (at a blank line: a heading, a label, a list item) keeps a blank
    line after it in the chunk's text, so that sentence splitting of the stored text (rag.sentences) ends there."""
    return _Piece(sentence, tokens, " " if _STOPPED.search(sentence) else "\n\n")


def _overlap_tail(pieces: list[_Piece], overlap: int, room: int) -> list[_Piece]:
    """The last whole sentences of a chunk, up to `overlap` tokens, carried into the next chunk."""
    tail: list[_Piece] = []
    total = 0
    for piece in reversed(pieces):
        if total + piece[1] > min(overlap, room):
            break
        tail.insert(0, piece)
        total += piece[1]
    return tail


def _split_long(sentence: str, count_tokens: TokenCounter, max_tokens: int) -> list[tuple[str, int]]:
    words = sentence.split(" ")
    word_tokens = count_tokens(words)
    parts: list[tuple[str, int]] = []
    current: list[str] = []
    size = 0
    for word, tokens in zip(words, word_tokens):
        tokens = min(tokens, max_tokens)  # a single absurd "word" still has to go somewhere
        if current and size + tokens > max_tokens:
            parts.append((" ".join(current), size))
            current, size = [], 0
        current.append(word)
        size += tokens
    if current:
        parts.append((" ".join(current), size))
    return parts
