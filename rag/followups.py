"""Rewrite a follow-up question with the conversation so far, before retrieval.

A question such as "and how do I activate it?" means nothing to a retriever on its own, while "Why is 0.1 + 0.2
not exactly 0.3?" must be searched as asked even though it starts with "why". The small generator is too weak to
tell them apart reliably, so the rewrite is a transparent rule set that runs in well under a millisecond:

1. A question is a follow-up only when something in it points back and nothing in it answers the pointer:
   - an ordinal that names no noun of its own ("the second one", "the third?", but not "the first woman");
   - a pronoun with no antecedent in the question itself ("activate it", "is that true?", "which one", "where
     was he born?"; not "is it safe to ...", "what is it about ...", "the GIL that makes ...", nor "X and
     why does it ..."); "else", "same" and "a faster way" ("what else could I try?", "same question for cats");
   - a fragment without a verb that continues the previous question ("and on Windows?", "what about a duck?"),
     unless it names a subject of three or more new words;
   - nothing of its own at all ("Why?", "tell me more"), or a few words taken from the previous turn.
2. A follow-up is rewritten into a question that stands alone, built from the previous question as it was
   searched (so a chain of follow-ups keeps its subject):
   - a pronoun becomes the noun phrase it stands for: the topic of the previous question (after "about", else
     its subject or object, else what it asked for), for "he"/"she" the first name in the previous answer, and
     the name an answer gives to "what is the largest country in Africa?"; two kinds of pronoun get two
     phrases ("they refuse to return it"). "how do I activate it?" -> "how do I activate a virtual
     environment?": the old verb "create" is dropped, which is what a retriever needs;
   - a fragment replaces the matching part of the previous question: "and on Windows?" after "... on Linux?"
     swaps the place, "and for China?" swaps the name, "what about a duck?" the object, "and walking?" the verb;
   - an ordinal becomes the item of a list in the previous answer, and like a bare "why?", "what else?" or a
     fragment that matches nothing it is searched after the previous question ("What were the causes of the
     First World War? Tell me more about Alliances").
3. `Rewrite.explanation` says in one plain sentence what was read and what was searched.

There is no part-of-speech tagger (none installs here without a model download), so nouns and verbs are told
apart by position (see noun_phrases). Known misses: an elided verb ("why did the barons force him to?" keeps
"King John" but drops "the Magna Carta"), and long follow-ups that point back only through a noun of the
earlier answer ("the airline has ignored my emails ...").

Measured on benchmarks/data/followups.jsonl by benchmarks/followups.py (docs/EVALUATION.md, "Follow-up questions").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rag.conversations import Turn

MAX_ITEM_WORDS = 8
# The earlier question carried into a follow-up's search. It may itself be a rewritten follow-up, so without a
# bound a long run of follow-ups would grow the search string by a whole question each turn, until it passed
# the question length cap.
MAX_CONTEXT_CHARS = 300
# A verbless fragment naming this many words of its own that the previous turn lacks is a new subject
# ("what about small claims court filing fees in New York?"), not a change to the previous question.
MIN_NEW_SUBJECT_WORDS = 3

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing don't down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just let me more most my myself no nor not
now of off on once one ones only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves tell say says said
please thanks thank okay ok yes document documents don't doesn't didn't isn't aren't
two three four five six seven eight nine ten first second third many much several
must may might shall what's where's who's how's that's it's there's here's
""".split())

_SUBJECT_PRONOUNS = frozenset("i you we they".split())
_INVERTING = frozenset("do does did can could should would will must may might shall".split())
_BE = frozenset("is are was were".split())
_AUXILIARIES = _INVERTING | _BE | frozenset("be been am has have had".split())
_WH = frozenset("what which who whom whose when where why how".split())
_DETERMINERS = frozenset("a an the my your our his her its their some".split())
_PREPOSITIONS = frozenset("on in for at with without under over during after before from by near into about "
                          "than per via across".split())
_OPENERS = frozenset("and but also so or then plus".split())
_IT = frozenset("it its they them their theirs mine yours ours".split())  # "mine smells like ..."
_POSSESSIVES = frozenset("its their theirs".split())
_BINDABLE = frozenset("its their theirs his her hers he she they".split())  # see _bound_in_clause
_OWNERS = {"mine": "my", "yours": "your", "ours": "our"}
_DEMONSTRATIVES = frozenset("this that these those".split())
_PERSONS = frozenset("he she him her his hers".split())
# Pronouns of one kind stand for one thing; different kinds may stand for different things.
_POINTER_KINDS = {"its": "it", "them": "they", "their": "they", "theirs": "they", "this": "that", "these": "that",
                  "those": "that", "ones": "one", "yours": "mine", "ours": "mine",
                  **{person: "person" for person in _PERSONS}}
# Words that mark a follow-up but stand for nothing that could replace them: the question is searched after
# the earlier one ("what else could I try?", "same question for cats", "is there a faster way?").
_WAYS = frozenset("way ways method option alternative".split())
_SIGNALS = frozenset({"else", "same"} | _WAYS)
_NAMING_ELSE = frozenset("besides than apart except but".split())
_AFTER_SAME = frozenset("question questions thing for with in on goes applies answer".split())
# "What is the largest country in Africa?" - "Algeria, at about ...": later, "its" means Algeria.
_IDENTIFYING_QUESTION = re.compile(r"(?:what|which|who)(?:'s| is| was| are| were) the\b", re.IGNORECASE)
_ANSWER_NAME = re.compile(r"([A-Z][\w-]*(?: [A-Z][\w-]*)*)(?:,| is\b| was\b| has\b)")
# Words after "this"/"that" that show it stands alone ("is that true?", "how long does this keep?").
_AFTER_STANDALONE = _AUXILIARIES | _PREPOSITIONS | frozenset(
    "one ones mean means work works apply applies happen happens cost costs take takes keep keeps last lasts "
    "change changes help helps matter matters affect include true right correct safe possible normal enough "
    "necessary better worse faster slower bad good okay ok legal also too again instead still".split())
# Words that ask for more without naming anything ("tell me more", "why exactly?", "give an example").
_FILLERS = frozenset("tell more explain details detail elaborate come really example examples go give else "
                     "exactly sure again show continue".split())
_PARTICIPLES = frozenset("kept built made held done given taken known found sold used written born paid set put "
                         "run seen spent meant".split())
_EXPLETIVE_IT = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\b(?:is|was|would|will) it (?:be )?\w+ (?:to|that|if)\b",  # "is it safe to eat ...", "is it true that"
    r"\bit(?:'s| is| was) \w+ (?:to|that|if)\b",  # "it's hard to ..."
    r"\bit takes?\b",  # "how long does it take to ..."
    r"\bdoes it mean (?:when|if|that)\b",  # "what does it mean when a series diverges?"
    r"\b(?:make|makes|made|making) it (?:\w+ )?\w+ (?:to|for)\b",  # "what makes it hard for colonists to ..."
    r"\b(?:is|was) it (?:about|like)\b"))  # "what is it about the GIL ..."
_CLAUSE_BREAK = re.compile(r",|;|\b(?:and|but|or|so|if|when|because|while|before|after|until|since|where|"
                           r"whether|than)\b", re.IGNORECASE)

_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
             "ninth": 9, "9th": 9, "tenth": 10, "10th": 10, "last": -1, "latter": -1, "former": 1}
_ORDINAL_PHRASE = re.compile(
    r"\b(?:the\s+)?(" + "|".join(_ORDINALS) + r")(\s+(?:one|ones|item|option|point|step|mode|kind|type|way|thing|"
    r"cause|reason|choice|answer))?\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'+#.-]*[A-Za-z0-9+#]|[A-Za-z0-9]")
_CITATION = re.compile(r"\s*\[\d+\]")
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+)$")
_PROPER_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]*\.?)*\s+[A-Z][a-z]+\b")


@dataclass(frozen=True)
class Rewrite:
    question: str  # what the user typed
    search: str  # what goes to retrieval and the generator
    reason: str = ""  # why it was read as a follow-up, in plain words; empty when it was not
    follows: str = ""  # the earlier question it was read as a follow-up to, as the user typed it

    @property
    def rewritten(self) -> bool:
        return self.search != self.question

    @property
    def explanation(self) -> str:
        """One plain sentence for the user; empty when the question was searched as asked."""
        if not self.rewritten:
            return ""
        why = f" ({self.reason})" if self.reason else ""
        return f'Read as a follow-up to "{self.follows}"{why}: searched for "{self.search}".'


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()


@dataclass(frozen=True)
class _Phrase:
    text: str
    kind: str  # "about" (the topic after "about"), "core" (subject/object), "wh" (what was asked for), "pp"
    end: int  # character offset in the question


def rewrite(question: str, history: Sequence[Turn]) -> Rewrite:
    """The question to search for, given the earlier turns of the conversation (oldest first)."""
    question = " ".join(question.split())
    if not history or not question:
        return Rewrite(question, question)
    previous = history[-1]
    reading = _read_as_follow_up(question, previous)
    if reading is None:
        return Rewrite(question, question)
    search, reason = reading
    return Rewrite(question, search, reason, previous.question)


def _read_as_follow_up(question: str, previous: Turn) -> tuple[str, str] | None:
    """(search, reason) when `question` continues `previous`; None when it stands alone."""
    earlier = _clip(previous.searched or previous.question, MAX_CONTEXT_CHARS)
    for reader in (_read_ordinal, _read_pronouns, _read_fragment, _read_bare):
        reading = reader(question, earlier, previous)
        if reading is not None:
            return reading
    return None


# --- the four readings ------------------------------------------------------------------------------------------
def _read_ordinal(question: str, earlier: str, previous: Turn) -> tuple[str, str] | None:
    match = _ordinal_reference(question)
    if match is None:
        return None
    items = list_items(previous.answer)
    position = _ORDINALS[match.group(1).lower()]
    index = position - 1 if position > 0 else len(items) + position
    if not 0 <= index < len(items):
        return _after(earlier, question), f'"{match.group(0)}" refers to the earlier answer'
    item = items[index]
    # the item alone ("Alliances") loses the subject, so it is searched after the earlier question
    resolved = question[:match.start()] + item + question[match.end():]
    return _after(earlier, resolved), f'"{match.group(0)}" taken to mean "{item}"'


def _read_pronouns(question: str, earlier: str, previous: Turn) -> tuple[str, str] | None:
    tokens = _tokens(question)
    pointers = _unresolved_pointers(question, tokens, previous)
    if not pointers:
        return None
    first = tokens[pointers[0]]
    referents = _referents([tokens[i].low for i in pointers], earlier, previous.answer)
    if first.low in _SIGNALS or first.low not in referents or _is_determiner(tokens, pointers[0]):
        return _after(earlier, question), f'"{first.text}" refers to the earlier question'
    resolved = question
    for index in reversed(pointers):  # from the end, so earlier offsets stay valid
        token = tokens[index]
        if token.low in referents:
            replacement = _in_place_of(tokens, index, referents[token.low])
            replacement = replacement[0].upper() + replacement[1:] if token.start == 0 else replacement
            resolved = resolved[:token.start] + replacement + resolved[token.end:]
    return _drop_opener(resolved), f'"{first.text}" taken to mean "{referents[first.low]}"'


def _referents(pronouns: list[str], earlier: str, answer: str) -> dict[str, str]:
    """What each pronoun stands for; different kinds of pronoun get different phrases when there are enough
    ("what if they refuse to return it?": they = "my landlord", it = "my deposit")."""
    chosen: dict[str, str] = {}
    by_kind: dict[str, str] = {}
    for pronoun in pronouns:
        kind = _POINTER_KINDS.get(pronoun, pronoun)
        if pronoun in _SIGNALS or pronoun in chosen:
            continue
        if kind not in by_kind:
            found = _referent(pronoun, earlier, answer, taken=set(by_kind.values()))
            if found is None:
                continue
            by_kind[kind] = found
        chosen[pronoun] = by_kind[kind]
    return chosen


def _in_place_of(tokens: list[_Token], index: int, referent: str) -> str:
    """The words that replace a pronoun: "its" -> "X's", "mine" -> "my X", "which one" -> "which of the X",
    "the largest one" -> "the largest of the X"."""
    low, before = tokens[index].low, tokens[index - 1].low if index else ""
    first, _, rest = referent.partition(" ")
    bare = rest if first.lower() in _DETERMINERS and rest else referent
    if low in _POSSESSIVES:
        return f"{referent}'s"
    if low in _OWNERS:
        return f"{_OWNERS[low]} {bare}"
    if low in ("one", "ones") and (before in ("which", "each", "either") or _is_content(before)):
        return f"of the {bare}"
    return referent


def _read_fragment(question: str, earlier: str, previous: Turn) -> tuple[str, str] | None:
    fragment, opened = _fragment(question)
    if not fragment:
        return None
    known = {_singular(w) for w in _words_lower(previous.searched + " " + previous.question + " " + previous.answer)}
    own = [w for w in _content_words(fragment) if _singular(w.lower()) not in known]
    if len(own) >= MIN_NEW_SUBJECT_WORDS:
        return None
    if not opened:  # a few bare words: a follow-up only when they come from the earlier turn ("extractive mode")
        if own or not _content_words(fragment):
            return None
        return _after(earlier, question), "its words all come from the earlier answer"
    spliced = _splice(earlier, fragment)
    if spliced is None:
        return _after(earlier, question), f'"{fragment}" continues the earlier question'
    return spliced, f'"{fragment}" taken as a change to the earlier question'


def _read_bare(question: str, earlier: str, previous: Turn) -> tuple[str, str] | None:
    if [w for w in _content_words(question) if w.lower() not in _FILLERS]:
        return None
    return _after(earlier, question), "it names nothing of its own"


# --- what points back --------------------------------------------------------------------------------------------
def _ordinal_reference(question: str) -> re.Match | None:
    """An ordinal that points into a list ("the second one", "the third?"), not one with a noun of its own
    ("the first woman", "the Second World War", "in the first place")."""
    for match in _ORDINAL_PHRASE.finditer(question):
        if match.group(2):
            return match
        following = _WORD.match(question[match.end():].lstrip())
        bare = following is None or following.group(0).lower() in STOPWORDS
        if bare and (match.group(0).lower().startswith("the") or match.group(1).lower() in ("former", "latter")):
            return match  # "the third?", "the latter"; not "how long does copyright last in ..."
    return None


def _unresolved_pointers(question: str, tokens: list[_Token], previous: Turn) -> list[int]:
    """Positions of the words that point outside the question: pronouns without an antecedent in it."""
    lows = [t.low for t in tokens]
    found = []
    for index, low in enumerate(lows):
        if low in _IT:
            points = not (_expletive(question, tokens[index]) or _antecedent_before(question, tokens[index])
                          or _bound_in_clause(question, tokens, index))
        elif low in _DEMONSTRATIVES:
            points = _demonstrative_points_back(question, tokens, index, previous)
        elif low in ("one", "ones"):
            points = _one_points_back(question, tokens, index)
        elif low in _PERSONS:
            points = not _bound_in_clause(question, tokens, index)
        elif low == "same":  # "same question for cats", "the same for Windows?"
            points = tokens[index + 1].low in _AFTER_SAME if index + 1 < len(tokens) else True
        elif low in _WAYS:  # "is there a faster way?"
            points = index + 1 == len(tokens) and index > 0 and _comparative(lows[index - 1])
        else:  # "what else could I try?", but not "who else besides Genoa ..."
            points = low == "else" and not (_NAMING_ELSE & set(lows[index + 1:index + 2])
                                            or {"besides", "except"} & set(lows[:index]))
        if points:
            found.append(index)
    return found


def _comparative(word: str) -> bool:
    return word in ("other", "another", "different", "better", "worse") or (word.endswith("er") and len(word) > 4)


def _expletive(question: str, token: _Token) -> bool:
    """'it' that stands for nothing: "is it safe to ...", "how long does it take to ...", "what is it about"."""
    window = question[max(0, token.start - 8):token.end + 40]
    return token.low == "it" and any(pattern.search(window) for pattern in _EXPLETIVE_IT)


def _antecedent_before(question: str, token: _Token) -> bool:
    """A noun phrase in an earlier clause of the question itself: "What is the GIL and why does it exist?"."""
    breaks = list(_CLAUSE_BREAK.finditer(question, 0, token.start))
    return bool(breaks) and any(p.end <= breaks[-1].start() for p in noun_phrases(question))


def _bound_in_clause(question: str, tokens: list[_Token], index: int) -> bool:
    """A subject or possessive pronoun after a name or a noun phrase of the question itself: "What did Toyota
    rebrand its Forte as?", "when did BSkyB announce their goal?". An object pronoun is not bound this way
    ("Who set the world record for it?": "it" is not the record)."""
    if tokens[index].low not in _BINDABLE:
        return False
    named = any(t.text[0].isupper() and t.low != "i" for t in tokens[1:index])
    return named or any(p.kind != "wh" and p.end <= tokens[index].start for p in noun_phrases(question))


def _one_points_back(question: str, tokens: list[_Token], index: int) -> bool:
    """"which one", "into one": a stand-in for a noun of the previous turn; not "one machine", "no one", nor
    "which one is better, an SSD or a hard drive?" that names its own options."""
    before = tokens[index - 1].low if index else ""
    after = tokens[index + 1].low if index + 1 < len(tokens) else ""
    if after == "of" or before in ("no", "any", "every", "some", "the"):
        return False
    if after and _is_content(after) and before not in ("this", "that", "which"):
        return False  # "one machine"; but "is that one offline?"
    return " or " not in question[tokens[index].end:]


def _demonstrative_points_back(question: str, tokens: list[_Token], index: int, previous: Turn) -> bool:
    """"this"/"that" standing alone ("is that normal?", "after that the service ...", "fix that?") with nothing
    for it in the question itself, or before a noun of the previous turn ("this recipe"); not a relative "that"
    after a noun ("the GIL that makes"), nor "this error: <text>" that points forward."""
    before = tokens[index - 1].low if index else ""
    after = tokens[index + 1].low if index + 1 < len(tokens) else ""
    if (after and before and before not in STOPWORDS) or after in ("one", "ones"):
        return False  # a relative "that", or "that one" (the "one" is what gets replaced)
    standalone = (not after or after in _AFTER_STANDALONE or after in ("a", "an")
                  or (before in _PREPOSITIONS and not _is_content(after)))
    if standalone:
        return not _antecedent_before(question, tokens[index])
    return after in _words_lower(previous.question + " " + previous.answer)


def _is_determiner(tokens: list[_Token], index: int) -> bool:
    """"this recipe": the noun is already there, so the pronoun cannot simply be replaced."""
    after = tokens[index + 1].low if index + 1 < len(tokens) else ""
    return tokens[index].low in _DEMONSTRATIVES and _is_content(after) and after not in _AFTER_STANDALONE


def _fragment(question: str) -> tuple[str, bool]:
    """The verbless rest of a question ("on Windows" from "and on Windows?") and whether an opener or a
    preposition led it; ("", False) when the question has a verb or a question word."""
    text = question.strip().rstrip("?.! ")
    opened = False
    lowered = text.lower()
    for opener in ("what about ", "how about ", *(f"{word} " for word in _OPENERS)):
        if lowered.startswith(opener):
            text, opened = text[len(opener):].lstrip(" ,"), True
            break
    lows = [t.low for t in _tokens(text)]
    if not lows or any(w in _WH or w in _AUXILIARIES or w in _SUBJECT_PRONOUNS for w in lows):
        return "", False
    return text, opened or lows[0] in _PREPOSITIONS


def _splice(earlier: str, fragment: str) -> str | None:
    """The earlier question with the fragment in place of its matching part: a phrase with the same
    preposition ("on Linux" -> "on Windows"), a name ("Iceland" -> "Norway"), a verb ending in -ing ("running"
    -> "walking"), else its main noun phrase ("a chicken" -> "a duck")."""
    stem = earlier.rstrip("?.! ")
    first, _, rest = fragment.partition(" ")
    if first.lower() in _PREPOSITIONS:
        return _splice_preposition(stem, fragment) or _swap_name(stem, rest) or f"{stem} {fragment}?"
    if fragment[:1].isupper():  # "and Norway?" after "... to visit Iceland?"
        return _swap_name(stem, fragment)
    verb = re.search(r"\b\w+ing\b", stem)
    if verb and " " not in fragment and fragment.lower().endswith("ing"):  # "and walking?"
        return f"{stem[:verb.start()]}{fragment}{stem[verb.end():]}?"
    return _splice_phrase(stem, fragment)


def _splice_preposition(stem: str, fragment: str) -> str | None:
    """"on Windows" in place of the last "on ..." of the earlier question, up to its next preposition."""
    same = list(re.finditer(rf"\b{re.escape(fragment.split()[0])}\b", stem, re.IGNORECASE))
    if not same:
        return None
    following = re.search(rf"\s\b(?:{'|'.join(_PREPOSITIONS)})\b", stem[same[-1].end():], re.IGNORECASE)
    end = same[-1].end() + following.start() if following else len(stem)
    return f"{stem[:same[-1].start()]}{fragment}{stem[end:]}?"


def _splice_phrase(stem: str, fragment: str) -> str | None:
    """The fragment in place of the earlier question's main noun phrase; when both end in the same noun, only up
    to it: "a design patent" after "How long is a US patent valid?" keeps "valid"."""
    phrase = _main_phrase(noun_phrases(stem), ("about", "core", "wh", "pp"))
    if phrase is None:
        return None
    start, end = phrase.end - len(phrase.text), phrase.end
    shared = re.search(rf"\b{re.escape(fragment.split()[-1])}\b", phrase.text, re.IGNORECASE)
    if shared:
        end = start + shared.end()
    return f"{stem[:start]}{fragment}{stem[end:]}?"


def _swap_name(stem: str, name: str) -> str | None:
    """The earlier question with its first name replaced ("for China" after "visit Japan as a Canadian")."""
    span = _first_name(stem)
    if span is None or not name[:1].isupper():
        return None
    return f"{stem[:span[0]]}{name}{stem[span[1]:]}?"


def _first_name(text: str) -> tuple[int, int] | None:
    """Where the first capitalised run of words after the first word is ("Japan" in "Do I need a visa to visit
    Japan?")."""
    tokens = _tokens(text)
    starts = [i for i, t in enumerate(tokens) if i and t.text[0].isupper() and t.low != "i"]
    if not starts:
        return None
    end = starts[0]
    while end + 1 < len(tokens) and tokens[end + 1].text[0].isupper():
        end += 1
    return tokens[starts[0]].start, tokens[end].end


# --- what it points to -------------------------------------------------------------------------------------------
def _referent(pronoun: str, earlier: str, answer: str, taken: Collection[str] = ()) -> str | None:
    """The words a pronoun stands for: a person's name from the answer for he/she; the name an answer gives to
    "what is the largest country in Africa?"; a member of what was asked for for "one"; else the topic of the
    earlier question. Phrases in `taken` already stand for another pronoun."""
    answer = _CITATION.sub("", answer)
    if pronoun in _PERSONS:
        name = _PROPER_NAME.search(answer) or _PROPER_NAME.search(earlier)
        if name and name.group(0) not in taken:
            return name.group(0)
    identified = _IDENTIFYING_QUESTION.match(earlier) and _ANSWER_NAME.match(answer)
    if identified and identified.group(1).lower() not in STOPWORDS and identified.group(1) not in taken:
        return identified.group(1)
    order = ("wh", "about", "core", "pp") if pronoun in ("one", "ones") else ("about", "core", "wh", "pp")
    phrase = _main_phrase([p for p in noun_phrases(earlier) if p.text not in taken], order)
    return phrase.text if phrase else None


def _main_phrase(phrases: list[_Phrase], order: Sequence[str]) -> _Phrase | None:
    for kind in order:
        for phrase in phrases:
            if phrase.kind == kind:
                return phrase
    return None


def noun_phrases(question: str) -> list[_Phrase]:
    """The noun phrases of a question, in order, each with its role (see _Phrase.kind). Without a tagger, a
    word is taken as a verb when it comes before a determiner ("create a"), after a subject pronoun or a bare
    "to" ("I create", "to fly"), or ends an inverted subject ("does the Ryzen 7 7800X3D use")."""
    tokens = _tokens(question)
    lows = [t.low for t in tokens]
    nominal = [_is_content(low) for low in lows]
    for index in _verbs(tokens, lows, nominal):
        nominal[index] = False
    for index in range(len(lows) - 1):  # "how long", "how deep": an adverb, not a noun
        if lows[index] == "how":
            nominal[index + 1] = False
    wh_starts = {i + 1 for i, low in enumerate(lows) if low in ("what", "which", "whose")}
    wh_starts |= {i + 2 for i, low in enumerate(lows) if low == "how"}
    phrases = []
    index = 0
    while index < len(tokens):
        if not nominal[index]:
            index += 1
            continue
        start, index = index, _phrase_end(lows, nominal, index)
        phrases.append(_phrase(question, tokens, lows, start, index, start in wh_starts))
    return phrases


def _phrase_end(lows: list[str], nominal: list[bool], index: int) -> int:
    """One past the last word of the noun phrase starting at `index`, joined through "of" and "to" ("the speed
    of light", "the TDP of the Intel Core i9-13900K", "the right to erasure")."""
    while index < len(lows):
        if nominal[index]:
            index += 1
            continue
        joined = index + 2 if index + 2 < len(lows) and lows[index + 1] in _DETERMINERS else index + 1
        if lows[index] in ("of", "to") and joined < len(lows) and nominal[joined] and nominal[index - 1]:
            index = joined
        else:
            break
    return index


def _phrase(question: str, tokens: list[_Token], lows: list[str], start: int, end: int, asked: bool) -> _Phrase:
    with_determiner = start - 1 if start and lows[start - 1] in _DETERMINERS else start
    before = lows[with_determiner - 1] if with_determiner else ""
    kind = "wh" if asked else "about" if before == "about" else "pp" if before in _PREPOSITIONS else "core"
    text = question[tokens[with_determiner].start:tokens[end - 1].end]
    return _Phrase(text, kind, tokens[end - 1].end)


def _verbs(tokens: list[_Token], lows: list[str], nominal: list[bool]) -> set[int]:
    verbs = set()
    for index, low in enumerate(lows):
        before = lows[index - 1] if index else ""
        after = lows[index + 1] if index + 1 < len(lows) else ""
        if not nominal[index]:
            continue
        subject = before in _SUBJECT_PRONOUNS or (before in _INVERTING and index > 1 and lows[index - 2] in
                                                  _SUBJECT_PRONOUNS)  # "I create", "you can sow"
        if after in _DETERMINERS or subject or (before == "who" and index == 1):
            verbs.add(index)
        elif before == "to" and (index < 2 or not nominal[index - 2]):
            verbs.add(index)
        elif _BE & set(lows) and (low in _PARTICIPLES or low.endswith("ed")) and index and nominal[index - 1]:
            verbs.add(index)  # a passive: "is the seed vault kept", "is capital gains tax calculated in"
    inverted_verb = _inverted_subject_verb(tokens, lows, nominal)
    if inverted_verb is not None:
        verbs.add(inverted_verb)
    return verbs


def _inverted_subject_verb(tokens: list[_Token], lows: list[str], nominal: list[bool]) -> int | None:
    """In "Which socket does the Ryzen 7 7800X3D use?" the word after the subject is the verb: the last word of
    the run that follows the auxiliary, when nothing verbal follows that run."""
    if _SUBJECT_PRONOUNS & set(lows):
        return None
    aux = next((i for i, low in enumerate(lows) if low in _INVERTING), None)
    if aux is None:
        return None
    start = next((i for i in range(aux + 1, len(lows)) if nominal[i]), None)
    if start is None:
        return None
    end = start
    while end + 1 < len(lows) and nominal[end + 1]:
        end += 1
    after = lows[end + 1] if end + 1 < len(lows) else ""
    last = tokens[end].text
    if end == start or after in _AUXILIARIES or last[0].isupper() or last[0].isdigit():
        return None
    return end if not after or after in _PREPOSITIONS or after in _DETERMINERS else None


# --- small helpers -----------------------------------------------------------------------------------------------
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
        head, tail = (part.strip().rstrip(".!?") for part in sentence.split(separator, 1))
        parts = [p.strip() for p in re.split(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", tail) if p.strip()]
        if separator == ",":
            parts = _with_first_item(head, tail, parts)
        if len(parts) >= 2 and all(len(p.split()) <= MAX_ITEM_WORDS for p in parts):
            return parts
    return []


def _with_first_item(head: str, tail: str, parts: list[str]) -> list[str]:
    """A comma list may begin before its first comma: "sow broad beans, peas, spinach and radishes" (two or
    more commas), "George Washington, John Adams and Thomas Jefferson" (the head is one noun phrase)."""
    lead = noun_phrases(head)
    if len(parts) >= 2 and lead and lead[-1].end == len(head) and ("," in tail or lead[-1].text == head):
        return [lead[-1].text, *parts]
    return parts


def _after(earlier: str, question: str) -> str:
    """The question searched after the earlier one, for follow-ups that replace nothing ("Why?")."""
    stem = earlier.rstrip()
    return f"{stem if stem.endswith(('?', '.', '!')) else stem + '?'} {_drop_opener(question)}"


def _drop_opener(question: str) -> str:
    """'and how do I ...' -> 'how do I ...': the opener only linked the question to the one before."""
    first, _, rest = question.partition(" ")
    return rest.lstrip(" ,") if first.lower().rstrip(",") in _OPENERS and rest else question


def _singular(word: str) -> str:
    """Enough of a stem to match "mode" with "modes"."""
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]


def _is_content(low: str) -> bool:
    return low not in STOPWORDS and (len(low) > 1 or low.isdigit())


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if _is_content(w.lower())]


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
