"""Rewrite a follow-up question with the conversation so far, before retrieval.

A question such as "and what about the second one?" means nothing to a retriever on its own. The small
generator is too weak to rewrite it reliably, so the rewrite is a transparent rule set that runs in
microseconds on a CPU:

1. A question is a follow-up when it starts like one ("and ...", "what about ...", "why?"), points back
   with a pronoun ("it", "they", "that one") or an ordinal ("the second one", "the last"), or is very
   short (three words or fewer).
2. An ordinal is replaced by the matching item of a list in the previous answer, when it has one
   (numbered or bulleted lines, or "A, B and C" after a colon or a comma): "the second one" -> "extractive".
3. The previous question (as it was searched) and the previous answer's key terms are added as context.

The result reads like a question and is shown to the user ("Searched for: ..."), so nothing is hidden.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rag.conversations import Turn

MAX_SHORT_WORDS = 3
MAX_KEY_TERMS = 5
MAX_ITEM_WORDS = 8
# The earlier question carried into a follow-up's search. It may itself be a rewritten follow-up, so without a
# bound a long run of follow-ups would grow the search string by a whole question each turn, until it passed
# the question length cap.
MAX_CONTEXT_CHARS = 300

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing don't down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just let me more most my myself no nor not
now of off on once one ones only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves tell say says said
please thanks thank okay ok yes document documents don't doesn't didn't isn't aren't
two three four five six seven eight nine ten first second third many much several
""".split())

_PRONOUNS = frozenset("it its it's they them their theirs this that these those he she him her his one ones "
                      "former latter other another same".split())
MAX_PRONOUN_WORDS = 10  # a long question that says "that" is usually a question of its own
_OPENERS = ("and ", "and,", "what about", "how about", "what else", "also ", "but ", "so ", "then ", "why",
            "how come", "tell me more", "more about", "same for", "or ")
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
             "ninth": 9, "9th": 9, "tenth": 10, "10th": 10, "last": -1, "latter": -1, "former": 1}
_ORDINAL_PHRASE = re.compile(
    r"\b(?:the\s+)?(" + "|".join(_ORDINALS) + r")(?:\s+(?:one|ones|item|option|point|step|mode|kind|type|way))?\b",
    re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'+#.-]*[A-Za-z0-9+#]|[A-Za-z0-9]")
_CITATION = re.compile(r"\s*\[\d+\]")
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+)$")


@dataclass(frozen=True)
class Rewrite:
    question: str  # what the user typed
    search: str  # what goes to retrieval and the generator
    reason: str = ""  # why it was rewritten; empty when it was not

    @property
    def rewritten(self) -> bool:
        return self.search != self.question


def rewrite(question: str, history: Sequence[Turn]) -> Rewrite:
    """The question to search for, given the earlier turns of the conversation (oldest first)."""
    question = " ".join(question.split())
    if not history or not question:
        return Rewrite(question, question)
    reason = follow_up_reason(question)
    if not reason:
        return Rewrite(question, question)
    previous = history[-1]
    resolved = _resolve_ordinal(question, list_items(previous.answer))
    context = [_clip(previous.searched.rstrip("?.! "), MAX_CONTEXT_CHARS)]
    terms = [t for t in key_terms(previous.answer) if t.lower() not in _words_lower(previous.searched + " " + resolved)]
    if terms:
        context.append(", ".join(terms))
    return Rewrite(question, f"{resolved} (follow-up to: {'; '.join(context)})", reason)


def follow_up_reason(question: str) -> str:
    """Why `question` looks like a follow-up; empty when it reads as a question of its own."""
    lowered = question.lower().strip()
    words = _WORD.findall(lowered)
    if any(lowered.startswith(opener) for opener in _OPENERS):
        return "starts like a follow-up"
    if _ORDINAL_PHRASE.search(lowered):
        return "refers to an item by its position"
    pronouns = [w for w in words if w in _PRONOUNS]
    if pronouns and len(words) <= MAX_PRONOUN_WORDS:
        return f"refers back with '{pronouns[0]}'"
    if len(words) <= MAX_SHORT_WORDS:
        return "too short to stand alone"
    return ""


def list_items(answer: str) -> list[str]:
    """The items of a list in an answer: numbered or bulleted lines, else 'A, B and C' after a colon
    (or after the first comma: "two modes, generate and extractive")."""
    answer = _CITATION.sub("", answer)
    lines = [m.group(1).strip() for line in answer.splitlines() if (m := _LIST_LINE.match(line))]
    if len(lines) >= 2:
        return [_short_item(line) for line in lines]
    for sentence in re.split(r"(?<=[.!?])\s+", answer):
        separator = ":" if ":" in sentence else ","  # "modes: A and B" or "two modes, A and B"
        if separator not in sentence:
            continue
        tail = sentence.split(separator, 1)[1].strip().rstrip(".!?")
        parts = [p.strip() for p in re.split(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", tail) if p.strip()]
        if len(parts) >= 2 and all(len(p.split()) <= MAX_ITEM_WORDS for p in parts):
            return parts
    return []


def key_terms(text: str, limit: int = MAX_KEY_TERMS) -> list[str]:
    """The content words of a text, most frequent first (ties in order of appearance)."""
    words = [w for w in _WORD.findall(_CITATION.sub("", text)) if w.lower() not in STOPWORDS and len(w) > 2
             and not w.isdigit()]
    counts = Counter(w.lower() for w in words)
    first: dict[str, str] = {}
    for word in words:
        first.setdefault(word.lower(), word)
    order = {key: index for index, key in enumerate(first)}
    ranked = sorted(first, key=lambda key: (-counts[key], order[key]))
    return [first[key] for key in ranked[:limit]]


def _resolve_ordinal(question: str, items: list[str]) -> str:
    if not items:
        return question

    def replace(match: re.Match) -> str:
        position = _ORDINALS[match.group(1).lower()]
        index = position - 1 if position > 0 else len(items) + position
        return items[index] if 0 <= index < len(items) else match.group(0)

    return _ORDINAL_PHRASE.sub(replace, question, count=1)


def _short_item(line: str) -> str:
    """A list line's label: the part before a colon or dash, at most MAX_ITEM_WORDS words."""
    label = re.split(r":|\s[-\u2013\u2014]\s", line, maxsplit=1)[0].strip().rstrip(".")
    return " ".join(label.split()[:MAX_ITEM_WORDS])


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters of `text`, cut at a word boundary."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _words_lower(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}
