"""Check each answer sentence against the passages: cite the one that supports it, flag the ones none does.

Support is lexical, so it can be explained to a user: the share of the sentence's content words found in
the passage, and every number in the sentence must appear there too (small models invent figures). Words
match by their Snowball stem ("logged" is supported by "logs"); numbers must match exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag import lexical_index

MIN_SUPPORT = 0.6
_WORD = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"\d")
_CITATION = re.compile(r"\s*\[\d+\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
# Function words carry no claim; a general English list, not tuned to any data set.
STOPWORDS = frozenset("""
a an the and or but if then else of to in on at by for with from as is are was were be been being am do does did
done have has had having it its this that these those there here he she they them his her their we you your our
i me my mine not no nor so than too very can could will would shall should may might must about into over under
again further once what which who whom whose when where why how all any both each few more most other some such
only own same just also up down out off above below between through during before after while because until
answer question context passage passages document documents according based text yes
""".split())


@dataclass(frozen=True)
class SentenceSupport:
    text: str
    passage: int | None  # 1-based number of the best-supporting passage
    support: float  # share of content words found in that passage
    supported: bool


def content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _stems(words: list[str]) -> list[str]:
    stemmer = lexical_index.stemmer()
    if stemmer is None:
        return words
    return [w if _NUMBER.search(w) else stem for w, stem in zip(words, stemmer.stemWords(words))]


def check_sentence(sentence: str, passages: list[str]) -> SentenceSupport:
    words = content_words(_CITATION.sub("", sentence))
    if not words:
        return SentenceSupport(sentence, None, 1.0, True)  # nothing claimed ("Yes.", "See below.")
    stems = _stems(words)
    best, best_score = None, -1.0
    for number, passage in enumerate(passages, start=1):
        vocabulary = set(_stems(content_words(passage)))
        found = sum(w in vocabulary for w in stems) / len(stems)
        numbers_ok = all(w in vocabulary for w in stems if _NUMBER.search(w))
        score = found if numbers_ok else min(found, MIN_SUPPORT - 0.01)
        if score > best_score:
            best, best_score = number, score
    return SentenceSupport(sentence, best, best_score, best_score >= MIN_SUPPORT)


def check_answer(text: str, passages: list[str]) -> list[SentenceSupport]:
    return [check_sentence(s, passages) for s in split_sentences(text)]


def cite(checks: list[SentenceSupport]) -> str:
    """The answer with [n] after each supported sentence that does not already carry a citation."""
    parts = []
    for check in checks:
        sentence = check.text
        if check.supported and check.passage is not None and not _CITATION.search(sentence):
            sentence = f"{sentence} [{check.passage}]"
        parts.append(sentence)
    return " ".join(parts)
