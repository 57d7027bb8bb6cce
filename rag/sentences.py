"""Splitting text into sentences: for the grounding check, the answer's quotes and the stored sentence vectors.

Its own module because the catalog stores vectors per sentence (rag.sentence_vectors) and must not depend on
what the grounding check depends on.
"""

from __future__ import annotations

import re

# A sentence ends at . ! or ? before a space, with the citations that follow it ("... operator. [2] It ..."),
# but not inside a number that a tokenised corpus spaced out ("46 . 8 ° F"), nor after a title, a common
# abbreviation or an initial ("St. Paul", "e.g. this", "J. S. Bach").
_NOT_AN_END = "".join(rf"(?<!\b{a})" for a in ("Mr", "Mrs", "Ms", "Dr", "St", "Mt", "Prof", "Jr", "Sr", "vs",
                                                 r"e\.g", r"i\.e", "cf", "Fig", "[A-Z]"))
# A sentence also ends before a blank line: the chunker keeps one after a heading, a label or an OCR'd row that
# ends without a full stop (ingest.chunking), which would otherwise run on into the next sentence.
_SENTENCE = re.compile(rf"\S.*?(?:(?!(?<=\d )\. \d){_NOT_AN_END}[.!?]+(?:\s*\[\d+\])*(?=\s|$)|(?=\n[ \t]*\n)|$)",
                       re.DOTALL)


def split_sentences(text: str) -> list[str]:
    return [m.group(0).strip() for m in _SENTENCE.finditer(text.strip())]


def whole_sentences(text: str) -> tuple[list[str], str]:
    """Of a text still being written: the sentences known to be whole, and the rest, to wait for more.

    A sentence is whole once another has begun after it; the last one may still grow. One that a citation may
    still join ("... operator. [" while "[2]" is on its way) waits too, so that sentences come out as
    split_sentences would cut the finished text."""
    matches = list(_SENTENCE.finditer(text))
    if len(matches) < 2 or matches[-1].group(0).startswith("["):
        return [], text
    return [m.group(0).strip() for m in matches[:-1]], text[matches[-1].start():]
