"""Turn a question into a grounded answer: retrieve, then generate from the passages (or extract from them).

An answer carries its sources (file, page, snippet, score) and the images that go with them. When no
passage is close enough to the question, the answer is the plain NOT_IN_DOCUMENTS line: the generator
is not asked to improvise.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Generator as Generator_
from contextlib import closing
from dataclasses import dataclass, field, replace

import numpy as np

from rag.calibration import cutoffs_for
from rag.errors import LoupeError, TooLarge
from rag.generator import Generator
from rag.grounding import AnswerChecker, SentenceSupport, check_answer, cite, cited, content_words, split_sentences
from rag.lexical_index import bm25_scores
from rag.prompts import NOT_IN_DOCUMENTS, build_messages
from rag.records import ImageRecord
from rag.repeats import RepeatGuard
from rag.retrieval import Passage, Retriever, fuse
from rag.sentences import whole_sentences
from rag.settings import Settings
from rag.store import KnowledgeBase

logger = logging.getLogger(__name__)

# The cosines under which the best passage is taken to be off-topic, and under which a sentence is not quoted, are
# calibrated for each text embedder (rag.calibration; all-MiniLM-L6-v2 gets 0.25 and 0.3).
SENTENCE_MARGIN = 1.0  # in fused z-score units: about one standard deviation of each method
MAX_EXTRACTED_SENTENCES = 3
# answer-first: the model's own line after the quote is one short sentence.
PHRASING_TOKENS = 48
# A sentence with at most this many content words beyond one quoted sentence, and at least this share of its
# words, only restates the quote.
RESTATE_NEW_WORDS = 1
RESTATE_SHARE = 0.6
# The generator sees the best sentences of the passages, not the whole passages (docs/EVALUATION.md).
CONTEXT_SENTENCES = 5
MAX_IMAGES = 6
# CLIP text-image cosine similarities sit low (about 0.2-0.35 for a match with ViT-B-32).
MIN_IMAGE_SIMILARITY = 0.25
_CITATION = re.compile(r"\[(\d+)\]")
# The first word of a sentence that leans on the one before it for what it is about; not the "it" of "It is
# possible to ...", which stands for what follows.
_ANAPHORIC_START = re.compile(r"(?!it(?: is|'s| was) \w+ (?:to|that)\b)(?:it|its|this|these|that|those|they|their|"
                              r"them|he|she|his|her|such|but|however|thus|therefore|hence|instead)\b", re.IGNORECASE)
# A line about the documents rather than the question ("The document does not contain...", "The answer is not
# provided"): the small model writes these as often for questions the passages answer as for ones they don't
# (docs/EVALUATION.md), so they tell the reader nothing and are not shown after a quote.
_META = re.compile(r"\s*(?:the|this) (?:documents?|context|text|passages?|answer)\b|.*\b(?:does not|doesn't|do not|"
                   r"don't) (?:contain|say|mention|provide|specify)\b|.*\bnot (?:specified|provided|mentioned|"
                   r"stated)\b", re.IGNORECASE)


@dataclass(frozen=True)
class RankedSentence:
    passage: int  # 1-based number of the passage it comes from
    text: str
    position: int  # order in the passages, for putting chosen sentences back in reading order
    score: float  # fused z-score
    cosine: float


@dataclass
class _Candidate:
    passage: int  # 1-based number of the passage it comes from
    text: str
    vector: np.ndarray | None
    reading: tuple[int, int, int]  # sorts the candidates in reading order


@dataclass
class Source:
    number: int  # the [n] the answer cites
    file: str
    page: int
    text: str
    score: float
    heading: str | None
    document_id: int
    chunk_id: int
    cited: bool = False


@dataclass
class AnswerImage:
    file: str
    page: int
    score: float
    path: str  # the stored copy, for display
    name: str


@dataclass(frozen=True)
class Retrieved:
    """The answer's sources, sent as soon as retrieval has decided there is an answer: shown before its text."""

    sources: list[Source]


@dataclass
class Answer:
    question: str
    text: str
    mode: str
    sources: list[Source] = field(default_factory=list)
    images: list[AnswerImage] = field(default_factory=list)
    grounded: bool = True  # False when the documents hold no answer
    unsupported: list[str] = field(default_factory=list)  # answer sentences no passage supports (shown, flagged)
    withheld: list[str] = field(default_factory=list)  # the model's sentences not shown: unsupported (answer-first)
    looped: bool = False  # the generator repeated itself and was stopped; the repeat was never shown
    seconds: dict[str, float] = field(default_factory=dict)  # retrieve, generate

    def to_json(self) -> dict:
        """The CLI's and API's stable shape."""
        return {
            "answer": self.text,
            "sources": [{"file": s.file, "page": s.page, "text": s.text, "score": round(s.score, 4),
                         "number": s.number, "cited": s.cited} for s in self.sources],
            "images": [{"file": i.file, "page": i.page, "score": round(i.score, 4)} for i in self.images],
            "grounded": self.grounded,
            "unsupported": self.unsupported,
            "withheld": self.withheld,
            "looped": self.looped,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


class Assistant:
    def __init__(self, settings: Settings, retriever: Retriever, generator: Callable[[], Generator]) -> None:
        self.settings = settings
        self.retriever = retriever
        self._generator = generator  # loaded on first use: extractive answers never need it

    def ask(self, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        return final_answer(self.stream(question, k, mode))

    def stream(self, question: str, k: int | None = None,
               mode: str | None = None) -> Iterator[Retrieved | str | Answer]:
        """Yield the sources once retrieval is done (Retrieved, only when there is an answer), pieces of answer text
        as they come, then the finished Answer.

        Whether the documents answer the question is decided before the first word, from the passages and their
        best sentences, so an answer never turns into a refusal at the end: what is shown stays shown.
        Closing the stream early (a client gone) ends the generation at its next step."""
        question = check_question(question, self.settings)
        k = k or self.settings.top_k
        mode = mode or self.settings.answer_mode
        start = time.perf_counter()
        question_vector = self.retriever.embed_query(question)  # once: retrieval and the sentence ranking use it
        passages = self.retriever.search(question, k, vector=question_vector)
        ranked: list[RankedSentence] = []
        cutoffs = cutoffs_for(self.retriever.text_embedder, self.settings.cache_dir)
        if _answerable(passages, cutoffs.passage):
            neighbours = self._neighbours(passages)
            ranked = self._rank_sentences(question, question_vector, passages, neighbours, cutoffs.sentence)
            passages, ranked = _with_used_neighbours(passages, neighbours, ranked)
        answer = Answer(question, "", mode, _sources(passages))
        quoted = _best_sentences(ranked, cutoffs.sentence)
        answer.seconds["retrieve"] = time.perf_counter() - start
        if quoted:
            yield Retrieved(list(answer.sources))
        start = time.perf_counter()
        if not quoted:
            answer.text, answer.grounded, answer.sources = NOT_IN_DOCUMENTS, False, []
            yield answer.text
        elif mode == "extractive":
            answer.text = _quote(quoted)
            yield answer.text
        elif mode == "answer-first":
            answer.text = _quote(quoted)
            yield answer.text
            yield from self._add_phrasing(question, passages, quoted, answer)
        else:
            yield from self._generate(question, passages, ranked, answer)
        if _is_refusal(answer.text):
            answer.grounded = False  # the model's own refusal, said from its first words
        answer.seconds["generate"] = time.perf_counter() - start
        _mark_cited(answer)
        if answer.grounded:
            answer.images = self._images(question, answer.sources)
        yield answer

    def _generate(self, question: str, passages: list[Passage], ranked: list[RankedSentence],
                  answer: Answer) -> Iterator[str]:
        """The model's answer from the best sentences, streamed a sentence at a time as each is written (a loop held
        back and cut), each checked against the whole passages first: supported ones are cited, the others
        flagged. What is streamed is the checked answer itself, so a reader (a chat client of /v1 too) never has
        to replace text it was sent."""
        checker = AnswerChecker([p.chunk.text for p in passages], question=question)
        checks: list[SentenceSupport] = []
        with closing(self._guarded(question, ranked[:CONTEXT_SENTENCES], self.settings.max_new_tokens)) as pieces:
            guard = yield from _checked_by_sentence(pieces, checker, checks)
        answer.looped = guard.looping
        answer.unsupported = [c.text for c in checks if not c.supported]
        answer.text = cite(checks)

    def _add_phrasing(self, question: str, passages: list[Passage], quoted: list[RankedSentence],
                      answer: Answer) -> Iterator[str]:
        """After the quoted sentences, the model's own short answer from them, shown only where the passages
        support it and it says more than the quote. It is checked whole before it is shown: the quote is on
        screen meanwhile, so nothing that would be withdrawn is ever streamed."""
        try:
            guard = yield from self._guarded(question, quoted, PHRASING_TOKENS, show=False)
        except LoupeError as error:  # busy, or a model server down: the quote is the answer, and it is shown
            logger.warning("No model line after the quote: %s", error)
            return
        answer.looped = guard.looping
        checks = check_answer(guard.kept, [p.chunk.text for p in passages], question=question)
        answer.withheld = [c.text for c in checks if not c.supported]
        keep = [c for c in checks if c.supported and not _META.match(c.text) and not _restates(c.text, quoted)]
        if keep:
            addition = "\n\n" + cite(keep)
            answer.text += addition
            yield addition

    def _guarded(self, question: str, context: list[RankedSentence], max_new_tokens: int,
                 show: bool = True) -> Generator_[str, None, RepeatGuard]:
        """Run the generator on `context` through a RepeatGuard, yield what the guard releases (unless not
        `show`), stop at a loop, and return the guard."""
        generator = self._generator()
        messages = fitted_messages(generator, question, context, max_new_tokens)
        guard = RepeatGuard()
        # closing(): when we stop early (a loop, a reader gone), the generator's stream is closed now, which frees
        # its batch row
        with closing(generator.stream(messages, max_new_tokens)) as stream:
            for piece in stream:
                released = guard.feed(piece)
                if guard.looping:
                    break
                if released and show:
                    yield released
        rest = guard.finish()
        if rest and show:
            yield rest
        return guard

    def _neighbours(self, passages: list[Passage]) -> list[Passage]:
        """The chunks just before and after the best passage that retrieval did not return, when
        settings.neighbour_chunks asks for them: in a long document the answer may sit across a chunk boundary from
        the part that matched. Their sentences compete with the passages' (docs/EVALUATION.md has the measure)."""
        reach = self.settings.neighbour_chunks
        if not reach:
            return []
        best = passages[0].chunk
        returned = {p.chunk.id for p in passages}
        around = self.retriever.kb.chunks_of_document(best.document_id, best.ordinal - reach, best.ordinal + reach)
        return [Passage(chunk, 0.0) for chunk in around if chunk.id not in returned]

    def _rank_sentences(self, question: str, question_vector: np.ndarray, passages: list[Passage],
                        neighbours: list[Passage], min_cosine: float) -> list[RankedSentence]:
        """The passages' sentences, best first; empty when none is at least `min_cosine` similar to the question.

        Sentences are ranked as retrieval used to rank chunks: the z-scores of their cosine similarity and of
        their BM25 score (the words they share with the question, rare words counting most) added with equal
        weights (chunk retrieval now also weights BM25 by question coverage; not measured for sentences).
        Either one alone picks the wrong sentence of the right passage more often (docs/EVALUATION.md).
        """
        candidates = self._candidate_sentences(passages, neighbours)
        if not candidates:
            return []
        sentences = [c.text for c in candidates]
        cosines = np.stack([c.vector for c in candidates]) @ question_vector
        if float(cosines.max()) < min_cosine:
            return []
        lexical = bm25_scores(question, sentences)
        fused = fuse([dict(enumerate(cosines.tolist())), {i: float(v) for i, v in enumerate(lexical) if v > 0}],
                     pool_size=len(sentences))
        return [RankedSentence(candidates[i].passage, candidates[i].text, i, score, float(cosines[i]))
                for i, score in fused]

    def _candidate_sentences(self, passages: list[Passage], neighbours: list[Passage]) -> list[_Candidate]:
        """The sentences of the passages, then of the best one's neighbours (numbered after the passages), in
        reading order, with their vectors: stored at ingest (rag.sentence_vectors), or embedded now for chunks
        stored without them."""
        context = [*passages, *neighbours]
        stored = self.retriever.kb.sentence_vectors([p.chunk.id for p in context])
        # A sentence seen before is skipped: chunks overlap, and documents repeat themselves, so the same sentence
        # would otherwise be quoted twice. The passages come first, so an overlap is cited to the passage.
        seen: set[str] = set()
        candidates = []
        for number, passage in enumerate(context, start=1):
            sentences = split_sentences(passage.chunk.text)
            vectors = stored.get(passage.chunk.id)
            # the best passage reads among its neighbours, in document order; the other passages follow
            group = (0, passage.chunk.ordinal) if number == 1 or number > len(passages) else (number, 0)
            candidates += [_Candidate(number, sentence, None if vectors is None else vectors[i], (*group, i))
                           for i, sentence in enumerate(sentences) if _first_time(sentence, seen)]
        candidates.sort(key=lambda c: c.reading)
        missing = [c for c in candidates if c.vector is None]
        if missing:
            embedded = self.retriever.text_embedder.embed([c.text for c in missing], self.settings.embed_batch_size,
                                                          urgent=True)
            for candidate, vector in zip(missing, embedded):
                candidate.vector = vector
        return candidates

    def _images(self, question: str, sources: list[Source]) -> list[AnswerImage]:
        """Images on the cited pages first, then CLIP's text-to-image matches."""
        kb = self.retriever.kb
        images: dict[int, AnswerImage] = {}
        for source in [s for s in sources if s.cited] or sources[:1]:
            for image in kb.images_on_pages(source.document_id, [source.page]):
                images.setdefault(image.id, _answer_image(kb, image, source.score))
        for hit in self.retriever.search_images(question, MAX_IMAGES):
            if hit.score >= MIN_IMAGE_SIMILARITY:
                images.setdefault(hit.image.id, _answer_image(kb, hit.image, hit.score))
        return list(images.values())[:MAX_IMAGES]


def _checked_by_sentence(pieces: Generator_[str, None, RepeatGuard], checker: AnswerChecker,
                         checks: list[SentenceSupport]) -> Generator_[str, None, RepeatGuard]:
    """The streamed pieces re-cut into whole sentences, each checked (appended to `checks`) and cited before it is
    passed on; returns the pieces' guard. After a loop, the unfinished sentence is where the loop began: dropped."""
    pending = ""
    while True:
        try:
            pending += next(pieces)
        except StopIteration as done:
            guard: RepeatGuard = done.value
            break
        whole, pending = whole_sentences(pending)
        for sentence in whole:
            yield _checked(sentence, checker, checks)
    for sentence in [] if guard.looping else split_sentences(pending):
        yield _checked(sentence, checker, checks)
    return guard


def _checked(sentence: str, checker: AnswerChecker, checks: list[SentenceSupport]) -> str:
    checks.append(checker.check(sentence))
    return ("" if len(checks) == 1 else " ") + cited(checks[-1])


def check_question(question: str, settings: Settings) -> str:
    """The question with its whitespace normalised; refused when empty or longer than the cap.

    Every path a question takes (chat, Gradio API, REST, CLI) goes through here, so that no question can hold
    the generator for long: its length bounds the prompt."""
    question = " ".join(question.split())
    if not question:
        raise LoupeError("Type a question first.")
    if len(question) > settings.max_question_chars:
        raise TooLarge(f"The question is {len(question):,} characters long; the limit is "
                       f"{settings.max_question_chars:,}. Ask a shorter question.")
    return question


def fitted_messages(generator: Generator, question: str, best: list[RankedSentence],
                    max_new_tokens: int) -> list[dict[str, str]]:
    """The prompt from the best sentences, dropping the least relevant until it and the answer fit the model's
    context window. With none left the context is empty; the generator refuses a prompt that still won't fit."""
    best = list(best)
    while True:
        context = [r.text for r in sorted(best, key=lambda r: r.position)]
        messages = build_messages(question, context)
        if not best or generator.fits(messages, max_new_tokens):
            return messages
        best.pop()  # the least relevant: `best` is ranked best first


def final_answer(events: Iterable[object]) -> Answer:
    """The Answer at the end of a stream of events (text pieces, and whatever else a caller adds)."""
    answer = None
    for event in events:
        if isinstance(event, Answer):
            answer = event
    if answer is None:
        raise RuntimeError("the answer stream ended without an Answer")
    return answer


def _with_used_neighbours(passages: list[Passage], neighbours: list[Passage],
                          ranked: list[RankedSentence]) -> tuple[list[Passage], list[RankedSentence]]:
    """The passages, plus the neighbours that any of the best CONTEXT_SENTENCES sentences come from (each then a
    source of its own, with its own page, numbered after the passages); the sentences of the other neighbours are
    dropped, so every number cited names a source shown."""
    used = sorted({r.passage for r in ranked[:CONTEXT_SENTENCES] if r.passage > len(passages)})
    numbers = {n: n for n in range(1, len(passages) + 1)}
    numbers.update({old: len(passages) + new for new, old in enumerate(used, start=1)})
    kept = [replace(r, passage=numbers[r.passage]) for r in ranked if r.passage in numbers]
    return passages + [neighbours[n - len(passages) - 1] for n in used], kept


def _best_sentences(ranked: list[RankedSentence], min_cosine: float) -> list[RankedSentence]:
    """The sentences that answer: up to MAX_EXTRACTED_SENTENCES near the best one and similar enough to the
    question. None means the documents don't say."""
    if not ranked:
        return []
    best = ranked[0].score
    chosen = [r for r in ranked[:MAX_EXTRACTED_SENTENCES]
              if r.score >= best - SENTENCE_MARGIN and r.cosine >= min_cosine]
    return _with_antecedents(chosen, ranked)


def _with_antecedents(chosen: list[RankedSentence], ranked: list[RankedSentence]) -> list[RankedSentence]:
    """The chosen sentences, each that opens by pointing back ("It is the fastest growing sector...", "This means
    ...") preceded by the sentence of its passage it points back to: quoted alone, it would not say what "it" is,
    and that is often the answer."""
    by_position = {r.position: r for r in ranked}
    quoted = {r.position for r in chosen}
    result = list(chosen)
    for sentence in chosen:
        before = by_position.get(sentence.position - 1)
        if (before and before.passage == sentence.passage and before.position not in quoted
                and _ANAPHORIC_START.match(sentence.text)):
            result.append(before)
            quoted.add(before.position)
    return result


def _quote(sentences: list[RankedSentence]) -> str:
    """The sentences in reading order, each with its citation, on one line each whatever the source's line
    breaks (an HTML page's or a PDF's lines would break the quote mid-sentence)."""
    return " ".join(f"{' '.join(r.text.split())} [{r.passage}]" for r in sorted(sentences, key=lambda r: r.position))


def _restates(sentence: str, quoted: list[RankedSentence]) -> bool:
    """Whether a sentence says nothing the quote doesn't: all but RESTATE_NEW_WORDS of its content words are in
    one quoted sentence, and it is not much shorter (a short phrase that picks the answer out adds something)."""
    words = set(content_words(sentence))
    for quote in quoted:
        quoted_words = set(content_words(quote.text))
        if len(words - quoted_words) <= RESTATE_NEW_WORDS and len(words) >= RESTATE_SHARE * len(quoted_words):
            return True
    return False


def _first_time(sentence: str, seen: set[str]) -> bool:
    key = " ".join(content_words(sentence))
    if key in seen:
        return False
    seen.add(key)
    return True


def _is_refusal(text: str) -> bool:
    return text.strip().lower().startswith(NOT_IN_DOCUMENTS.rstrip(".").lower())


def _answer_image(kb: KnowledgeBase, image: ImageRecord, score: float) -> AnswerImage:
    return AnswerImage(image.file, image.page, score, str(kb.image_path(image)), image.name)


def _sources(passages: list[Passage]) -> list[Source]:
    return [Source(n, p.chunk.file, p.chunk.page, p.chunk.text, p.score, p.chunk.heading, p.chunk.document_id,
                   p.chunk.id) for n, p in enumerate(passages, start=1)]


def _answerable(passages: list[Passage], min_cosine: float) -> bool:
    if not passages:
        return False
    similarities = [p.dense_score for p in passages if p.dense_score is not None]
    return not similarities or max(similarities) >= min_cosine


def _mark_cited(answer: Answer) -> None:
    cited = {int(n) for n in _CITATION.findall(answer.text)}
    for source in answer.sources:
        source.cited = source.number in cited
