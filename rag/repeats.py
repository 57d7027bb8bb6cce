"""Keep degenerate repetition out of a streamed answer: a repeated sentence, or a phrase looping to the token limit.

Small models loop ("X is Y. X is Y. X is Y. ..."). A check after the answer is finished would be too late: the
loop would already be on the user's screen. So the guard sits between the generator and the reader. As soon as
the text's last words repeat words that came earlier, they are held back; if the repeat goes on, it is a loop:
the guard says stop, and the held words are never shown. If the text moves on, the held words were an ordinary
recurring phrase ("the walrus operator") and are released. Text that repeats nothing passes at once, so the
first words of an answer are never delayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A run of this many words seen before is held back until the text moves on. Two: word pairs recur all the time
# ("of the") and cost a token of delay; a single repeated word is let through.
HOLD_WORDS = 2
# A run this long is a loop: stop. Sentences a small model repeats are usually longer; a shorter repeated
# sentence is caught at the end (`finish`), when the held run is a whole earlier sentence.
LOOP_WORDS = 10
# A loop with variations ("The document is referring to a specific species of X ... of Y ..."): a phrase of this
# many words said a third time is a loop too, whatever comes between.
PHRASE_WORDS = 8
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def _normal(word: str) -> str:
    return word.strip(".,;:!?\"'()[]").lower()


@dataclass
class RepeatGuard:
    """Feed it the generator's pieces; show what `feed` returns; stop when `looping` turns true."""

    text: str = ""  # everything fed so far
    shown: int = 0  # characters of `text` released to the reader
    looping: bool = False
    _starts: list[int] = field(default_factory=list)  # character offset of each word
    _words: list[str] = field(default_factory=list)

    def feed(self, piece: str) -> str:
        """The part of the text that is now safe to show (maybe empty)."""
        if self.looping:
            return ""
        self.text += piece
        self._index_words()
        # The last word may still be growing; judge repetition on the complete ones.
        complete = len(self._words) - (0 if self.text[-1:].isspace() else 1)
        run = _repeat_run(self._words[:complete])
        if run >= LOOP_WORDS or _said_before(self._words[:complete], PHRASE_WORDS) >= 2:
            self.looping = True
            return ""
        hold_from = self._starts[complete - run] if run >= HOLD_WORDS else len(self.text)
        if run < HOLD_WORDS and complete < len(self._words):
            hold_from = self._starts[complete]  # the growing word: wait until it is whole
        return self._release(hold_from)

    def finish(self) -> str:
        """The rest of the text once the generator is done: held words, unless they repeat a whole sentence."""
        if self.looping:
            return ""
        run = _repeat_run(self._words)
        if run >= HOLD_WORDS and len(self._last_sentence()) <= run:  # a whole sentence said again
            self.looping = True
            return ""
        return self._release(len(self.text))

    @property
    def kept(self) -> str:
        """The answer to keep: the text released so far, cut back to its last whole sentence after a loop (the
        loop's first word or two may have been shown before it was one)."""
        visible = self.text[:self.shown]
        if not self.looping:
            return visible
        ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s)", visible)]
        return visible[:ends[-1]] if ends else visible

    def _release(self, end: int) -> str:
        if end <= self.shown:
            return ""
        released, self.shown = self.text[self.shown:end], end
        return released

    def _index_words(self) -> None:
        self._starts = [m.start() for m in _WORD.finditer(self.text)]
        self._words = [_normal(m.group(0)) for m in _WORD.finditer(self.text)]

    def _last_sentence(self) -> list[str]:
        """The words of the last sentence (after the last word that ends one)."""
        words = self.text.split()
        ends = [i for i, word in enumerate(words[:-1]) if _SENTENCE_END.search(word)]
        return words[ends[-1] + 1:] if ends else words


def _repeat_run(words: list[str]) -> int:
    """The length of the longest run of words ending the text that also occurs earlier (overlap allowed)."""
    n, best = len(words), 0
    for end in range(n - 1):  # an earlier occurrence ending at `end`
        length = 0
        while length <= end and words[end - length] == words[n - 1 - length]:
            length += 1
        best = max(best, length)
    return best


def _said_before(words: list[str], size: int) -> int:
    """How many times the last `size` words occurred earlier (overlap allowed)."""
    if len(words) < size:
        return 0
    tail = words[-size:]
    return sum(words[i:i + size] == tail for i in range(len(words) - size))
