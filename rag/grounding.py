"""Check each answer sentence against the passages: cite the one that supports it, flag the ones none does.

Support is lexical, so it can be explained to a user. The base score is the share of the sentence's content
words found in one passage (words match by their Snowball stem, "logged" is supported by "logs"; numbers
match exactly). Sharing words is not enough: a small model often glues a passage's predicate to another
subject ("The walrus operator is a short-circuit operator...") or swaps two of its facts. So a sentence is
supported only when, in that one passage, all of these hold too (each is a `reason` when it fails):

- its cited passage is the one checked (a sentence citing [2] must be supported by [2]);
- its key terms are there: names and code tokens; its subject (the first run of content words) whenever
  another passage has it (after an opening "To", the words of that run the question asks about); and the
  subject's first word in the passage sentence that best matches the sentence;
- each clause's neighbouring words sit in one passage sentence (not one word from here, one from there);
- no figure follows a word the passage ties to another figure ("bond length of 498" where it says 121);
- negation agrees ("cannot be represented" is not "can be represented"; "inefficient" is not "efficient");
- strong qualifiers it adds ("all", "always", "only", "largest") are in the passage.

Repeated sentences and looping phrases are flagged whatever their words. Measured on an adversarial set in
benchmarks/grounding.py (docs/EVALUATION.md, "Grounding check").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from rag import lexical_index
from rag.sentences import split_sentences

MIN_SUPPORT = 0.6
# Of a clause's neighbouring content-word pairs found in the passage, the share that must share a sentence.
MIN_COHESION = 0.5
NUMBER_WINDOW = 2  # content words between a figure and the word it belongs to, at most
MIN_NAME_PREFIX = 4  # letters a name and its other form ("German", "Germany") must share
REPEAT_OVERLAP = 0.8  # a sentence sharing this share of its stems with an earlier one repeats it
_WORD = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"\d")
_POSSESSIVE = re.compile(r"'s?$")
_CITATION = re.compile(r"\s*\[(\d+)\]")
# Words and clause breaks in reading order; a clause ends at punctuation or at a conjunction.
_TOKEN = re.compile(r"(?P<word>[^\W_]+(?:[.,'][^\W_]+)*)|(?P<stop>[,;:()\[\]!?]|\.(?!\d))", re.UNICODE)
# Tokenised corpora ("£ 1 . 3bn", "X . 25") write numbers with spaces; join them so "£1.3bn" matches.
_SPACED_NUMBER = re.compile(r"(?<=\d) ([.,]) (?=\d)")
# Code and command-line tokens: operators, calls, paths, flags, identifiers with "_".
_CODE = re.compile(r"[()\[\]{}=<>/\\_]|:\S|^--?[a-z]|^\.[a-z]")
# Function words carry no claim; a general English list, not tuned to any data set.
STOPWORDS = frozenset("""
a an the and or but if then else of to in on at by for with from as is are was were be been being am do does did
done have has had having it its this that these those there here he she they them his her their we you your our
i me my mine not no nor so than too very can could will would shall should may might must about into over under
again further once what which who whom whose when where why how all any both each few more most other some such
only own same just also up down out off above below between through during before after while because until
answer question context passage passages document documents according based text yes
""".split())
_NEGATORS = frozenset("not no never nor neither none cannot without".split())
_CONJUNCTIONS = frozenset("and or but because while so although though whereas unless if when which who".split())
_PRONOUNS = frozenset("it its he she they them his her their this these those".split())
# Words that make a claim stronger or more precise; a sentence may not add one the passage lacks.
_QUALIFIERS = frozenset("""
all every always only never entire entirely whole solely exclusively largest biggest smallest highest lowest
latest earliest first best worst most least
""".split())
_NUMBER_WORDS = frozenset("""
one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand million
billion
""".split())
_ANTONYM_PREFIXES = ("in", "un", "non", "im", "il", "ir", "dis")


@dataclass(frozen=True)
class SentenceSupport:
    text: str
    passage: int | None  # 1-based number of the best-supporting passage (the cited one when it cites)
    support: float  # share of content words found in that passage (capped under MIN_SUPPORT when a rule fails)
    supported: bool
    reason: str = ""  # why it is not supported, in words a user can check; empty when supported


def content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


def _stems(words: list[str]) -> list[str]:
    stemmer = lexical_index.stemmer()
    if stemmer is None:
        return words
    return [w if _NUMBER.search(w) else stem for w, stem in zip(words, stemmer.stemWords(words))]


def _is_number(word: str) -> bool:
    """A figure ("1959", "1.3bn", "four"); "O2" is a name."""
    return word[:1].isdigit() or word in _NUMBER_WORDS


@dataclass(frozen=True)
class _Token:
    word: str  # lower case
    stem: str
    run: int  # tokens with the same run are adjacent, with no function word or punctuation between them
    clause: int  # index of its clause in the text
    sentence: int  # index of its sentence in the text
    negated: bool  # inside the scope of a "not" / "never" / "n't" (to the end of its clause)


class _Text:
    """A text as content tokens with their clause, sentence and polarity, for the checks beyond word overlap."""

    def __init__(self, text: str) -> None:
        self.raw = _SPACED_NUMBER.sub(r"\1", text)
        self.tokens, self.pronoun_openers = _tokenise(self.raw)
        self.stems = {t.stem for t in self.tokens}
        self.words = {t.word for t in self.tokens}

    @cached_property
    def code(self) -> set[str]:
        return _code_tokens(self.raw)

    @cached_property
    def sentences(self) -> list[set[str]]:
        count = self.tokens[-1].sentence + 1 if self.tokens else 0
        stems: list[set[str]] = [set() for _ in range(count)]
        for token in self.tokens:
            stems[token.sentence].add(token.stem)
        return stems


    @cached_property
    def units(self) -> list[set[str]]:
        """The sentences, each joined to the one before when it opens with a pronoun."""
        return [stems | self.sentences[i - 1] if i in self.pronoun_openers and i > 0 else stems
                for i, stems in enumerate(self.sentences)]


def _tokenise(text: str) -> tuple[list[_Token], set[int]]:
    """The content tokens, and the sentences that open with a pronoun (their subject is in the one before)."""
    matches = list(_TOKEN.finditer(text))
    # "Sky's" is Sky: the stemmer makes "ski" of it
    words = [_POSSESSIVE.sub("", m.group("word").lower()) if m.group("word") else m.group("stop") for m in matches]
    tokens: list[_Token] = []
    pronoun_openers = set()
    run = clause = sentence = 0
    negated, opening = False, True
    for word, stem, match in zip(words, _stems(words), matches):
        if opening and match.group("word"):
            opening = False
            if word in _PRONOUNS:
                pronoun_openers.add(sentence)
        if match.group("stop") or word in _CONJUNCTIONS:
            clause, negated = clause + 1, False
            if match.group("stop") in {".", "!", "?"}:
                sentence, opening = sentence + 1, True
        elif word in _NEGATORS or word.endswith("n't"):
            negated = True
        elif word not in STOPWORDS:
            tokens.append(_Token(word, stem, run, clause, sentence, negated))
            continue
        run += 1
    return tokens, pronoun_openers


def _code_tokens(text: str) -> set[str]:
    tokens = set()
    for token in text.lower().split():
        token = token.strip("\"'`").rstrip(".,;!?")
        token = token[:-1] if token.endswith(":") and len(token) > 1 else token
        if token and _CODE.search(token):
            tokens.add(token)
    return tokens


def check_sentence(sentence: str, passages: Sequence[str], question: str | None = None) -> SentenceSupport:
    """The sentence's support by its cited passages (all passages when it cites none); the best one wins."""
    return _check(sentence, _claim(sentence), [_Text(p) for p in passages], _asked(question))


def _claim(sentence: str) -> _Text:
    return _Text(_CITATION.sub("", sentence))


def _asked(question: str | None) -> set[str]:
    return _Text(question).stems if question else set()


def _check(sentence: str, claim: _Text, passages: list[_Text], asked: set[str]) -> SentenceSupport:
    if not claim.tokens:
        return SentenceSupport(sentence, None, 1.0, True)  # nothing claimed ("Yes.", "See below.")
    cited = [int(n) for n in _CITATION.findall(sentence) if 1 <= int(n) <= len(passages)]
    best = SentenceSupport(sentence, None, -1.0, False, "no passage")
    for number in cited or range(1, len(passages) + 1):
        others = set().union(*(p.stems for n, p in enumerate(passages, start=1) if n != number))
        support, reason = _support(claim, passages[number - 1], _Context(asked, others))
        score = support if not reason else min(support, MIN_SUPPORT - 0.01)
        if score > best.support:
            best = SentenceSupport(sentence, number, score, not reason, reason)
    return best


@dataclass(frozen=True)
class _Context:
    asked: set[str]  # the question's stems
    others: set[str]  # the stems of the other passages


def _support(claim: _Text, passage: _Text, context: _Context) -> tuple[float, str]:
    """The share of the claim's words in the passage, and the first failed rule ('' when none fails)."""
    stems = [t.stem for t in claim.tokens]
    found = sum(s in passage.stems for s in stems) / len(stems)
    if found < MIN_SUPPORT:
        return found, "shares too few words with the passage"
    for rule in (_missing_numbers, _missing_key_terms, _scattered, _misplaced_numbers, _negation_differs,
                 _added_qualifier):
        reason = rule(claim, passage, context)
        if reason:
            return found, reason
    return found, ""


def _missing_numbers(claim: _Text, passage: _Text, context: _Context) -> str:
    missing = [t.word for t in claim.tokens if _NUMBER.search(t.word) and t.word not in passage.words]
    return f"the passage does not give {', '.join(missing)}" if missing else ""


def _missing_key_terms(claim: _Text, passage: _Text, context: _Context) -> str:
    """Names and code must be in the passage ("German" for "Germany" will do). The subject must be too when
    another passage has it: then this passage is about something else (the walrus operator's sentence cited
    to the passage on `and`/`or`). A word no passage has is a paraphrase's own word."""
    names = {m.group(0).lower() for m in _WORD.finditer(claim.raw) if m.group(0)[0].isupper() and m.start() > 0}
    subject = {t.stem for t in _subject(claim, context.asked)}
    missing = [t.word for t in claim.tokens if t.stem not in passage.stems
               and ((t.word in names and not _named(t.stem, passage))
                    or (t.stem in subject and t.stem in context.others))]
    missing += sorted(claim.code - passage.code)
    if missing:
        return f"the passage does not mention {', '.join(dict.fromkeys(missing))}"
    # the subject's first word: later ones may be its verb ("Kaidu secured"), said anywhere
    first = _subject(claim, context.asked)[:1]
    if first and not _in_matching_sentence(first[0], claim, passage):
        return f"the passage does not say this about {first[0].word}"
    return ""


def _named(stem: str, passage: _Text) -> bool:
    """Whether the passage has this name, or a longer or shorter form of it ("German", "Germany")."""
    return len(stem) >= MIN_NAME_PREFIX and any(
        len(other) >= MIN_NAME_PREFIX and (other.startswith(stem) or stem.startswith(other)) for other in passage.stems)


def _subject(claim: _Text, asked: set[str]) -> list[_Token]:
    """The first run of content words ("walrus operator"). None when the sentence opens with a pronoun
    (resolving one is beyond a lexical check); after an opening "To", only its words the question asks about
    ("To activate ..." answering "how do I activate it?")."""
    first = _TOKEN.search(claim.raw)
    opener = (first.group("word") or "").lower() if first else ""
    if opener in _PRONOUNS:
        return []
    run = [t for t in claim.tokens if t.run == claim.tokens[0].run]
    return [t for t in run if t.stem in asked] if opener == "to" else run


def _in_matching_sentence(subject: _Token, claim: _Text, passage: _Text) -> bool:
    """Whether the subject is in the passage sentence (or pair of sentences) that shares most of the claim's
    words, or in the sentence before it when that one opens with a pronoun ("He started teaching ..."):
    "Kaidu secured the border" is not what the sentence about Kublai says."""
    sentences = passage.sentences
    windows = []
    for i, sentence in enumerate(sentences):
        window = sentence | (sentences[i + 1] if i + 1 < len(sentences) else set())
        antecedent = sentences[i - 1] if i > 0 and i in passage.pronoun_openers else set()
        windows.append((window, antecedent))
    best = max(len(claim.stems & window) for window, _ in windows)
    return any(subject.stem in window | antecedent for window, antecedent in windows
               if len(claim.stems & window) == best)


def _scattered(claim: _Text, passage: _Text, context: _Context) -> str:
    """Each clause's neighbouring words must mostly sit together in one passage sentence (with the one before
    when it opens with a pronoun): "Tuples are mutable" takes "tuples" from one sentence, "mutable" from the
    next."""
    for clause in sorted({t.clause for t in claim.tokens}):
        words = [t.stem for t in claim.tokens if t.clause == clause and t.stem in passage.stems]
        pairs = list(zip(words, words[1:]))
        together = sum(any(a in s and b in s for s in passage.units) for a, b in pairs)
        if pairs and together / len(pairs) < MIN_COHESION:
            return "its words come from different sentences of the passage"
    return ""


def _misplaced_numbers(claim: _Text, passage: _Text, context: _Context) -> str:
    """A number must not follow a word the passage ties to another number: swapped figures ("bond length of
    498" where the passage has length 121 and energy 498) keep every word and every number."""
    for i, token in enumerate(claim.tokens):
        if not _is_number(token.word) or i == 0 or token.word not in passage.words:
            continue
        before = claim.tokens[i - 1]
        if before.clause != token.clause or _is_number(before.word):
            continue
        figures = {t.word for j, t in enumerate(passage.tokens)
                   if _is_number(t.word) and _near(passage, j, before.stem)}
        if figures and token.word not in figures:
            return f"the passage gives {before.word} {', '.join(sorted(figures))}, not {token.word}"
    return ""


def _near(text: _Text, index: int, stem: str) -> bool:
    sentence = text.tokens[index].sentence
    around = text.tokens[max(0, index - NUMBER_WINDOW): index + NUMBER_WINDOW + 1]
    return any(t.stem == stem and t.sentence == sentence for t in around)


def _negation_differs(claim: _Text, passage: _Text, context: _Context) -> str:
    """A word negated in a clause of the claim but only affirmed in the passage sentence that best matches
    that clause (or the reverse), or a word the passage has only with a negative prefix ("efficient" against
    "inefficient")."""
    for clause in sorted({t.clause for t in claim.tokens}):
        said = [t for t in claim.tokens if t.clause == clause]
        stems = {t.stem for t in said}
        # the clause's words first; the whole claim's break ties between sentences
        best = max(range(len(passage.sentences)),
                   key=lambda i: (len(stems & passage.sentences[i]), len(claim.stems & passage.sentences[i])))
        written = [t for t in passage.tokens if t.sentence == best]
        for stem in stems & passage.sentences[best]:
            if not {t.negated for t in said if t.stem == stem} & {t.negated for t in written if t.stem == stem}:
                return f"the passage says the opposite about {next(t.word for t in said if t.stem == stem)}"
    # A denial needs a denial: when the passage has words a clause of the claim negates but negates none of them
    # anywhere, it affirmed them ("ONNX Runtime does not collect telemetry" against "builds with telemetry"),
    # whichever sentence matched best. One of them negated is enough: a denial may be worded around other words.
    negated_somewhere = {t.stem for t in passage.tokens if t.negated}
    for clause in sorted({t.clause for t in claim.tokens if t.negated}):
        denied = [t for t in claim.tokens if t.clause == clause and t.negated and t.stem in passage.stems]
        if denied and not any(t.stem in negated_somewhere for t in denied):
            return f"the passage says the opposite about {denied[0].word}"
    for token in claim.tokens:
        if token.stem not in passage.stems and any(p + token.stem in passage.stems for p in _ANTONYM_PREFIXES):
            return f"the passage says the opposite of {token.word}"
    return ""


def _added_qualifier(claim: _Text, passage: _Text, context: _Context) -> str:
    said = {m.group(0).lower() for m in _WORD.finditer(claim.raw)} & _QUALIFIERS
    written = {m.group(0).lower() for m in _WORD.finditer(passage.raw)}
    added = sorted(said - written)
    return f"the passage does not say {', '.join(added)}" if added else ""


class AnswerChecker:
    """Checks an answer's sentences in order, one at a time, so that a streamed answer can be checked and cited
    as each sentence is written. A sentence that repeats an earlier one, or loops on a phrase, is unsupported
    whatever its words: a looping answer must not read as grounded."""

    def __init__(self, passages: Sequence[str], question: str | None = None) -> None:
        self._passages = [_Text(p) for p in passages]
        self._asked = _asked(question)
        self._earlier: list[set[str]] = []

    def check(self, sentence: str) -> SentenceSupport:
        claim = _claim(sentence)
        stems = claim.stems
        if stems and any(len(stems & e) >= REPEAT_OVERLAP * len(stems | e) for e in self._earlier):
            support = SentenceSupport(sentence, None, 0.0, False, "repeats an earlier sentence")
        elif _loops(sentence):
            support = SentenceSupport(sentence, None, 0.0, False, "repeats a phrase")
        else:
            support = _check(sentence, claim, self._passages, self._asked)
        self._earlier.append(stems)
        return support


def check_answer(text: str, passages: Sequence[str], question: str | None = None) -> list[SentenceSupport]:
    """Each sentence's support (AnswerChecker, over the whole text at once)."""
    checker = AnswerChecker(passages, question)
    return [checker.check(sentence) for sentence in split_sentences(text)]


def _loops(sentence: str) -> bool:
    """A phrase of 1 to 6 words said three times in a row ("survival, survival, survival")."""
    words = [m.group(0).lower() for m in _WORD.finditer(sentence)]
    for size in range(1, 7):
        for start in range(len(words) - 3 * size + 1):
            phrase = words[start:start + size]
            if phrase == words[start + size:start + 2 * size] == words[start + 2 * size:start + 3 * size]:
                return True
    return False


def cite(checks: list[SentenceSupport]) -> str:
    """The answer with [n] after each supported sentence that does not already carry a citation."""
    return " ".join(cited(check) for check in checks)


def cited(check: SentenceSupport) -> str:
    """The sentence with [n] after it when it is supported and does not already carry a citation."""
    if check.supported and check.passage is not None and not _CITATION.search(check.text):
        return f"{check.text} [{check.passage}]"
    return check.text
