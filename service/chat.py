"""Answers: answer questions against a knowledge base, rewriting follow-ups with the conversation so far, and keep
each browser session's turns; and show a cited passage in its document."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from rag.answering import Answer, check_question, final_answer
from rag.conversations import Conversations, Turn
from rag.errors import NotFound
from rag.followups import Rewrite, rewrite
from rag.records import ChunkRecord
from rag.settings import ANSWER_MODES, Settings
from service.errors import ServiceError
from service.knowledge_bases import KnowledgeBases

MAX_K = 20


class Answers:
    def __init__(self, settings: Settings, knowledge_bases: KnowledgeBases, conversations: Conversations) -> None:
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self.conversations = conversations

    @property
    def concurrency(self) -> int:
        """Questions the web surfaces let run at once: all reach the generator, which batches what it can, queues
        the rest and answers Busy past that (Gradio's own queue would hold them back without a word)."""
        return self.settings.generation_batch + self.settings.max_waiting_questions

    def chat(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None,
             session: str | None = None, stop: threading.Event | None = None) -> Iterator[Rewrite | str | Answer]:
        """The Rewrite first (what is searched), then pieces of text, then the Answer; a session's turns
        feed the follow-up rewrite, and the finished turn is stored under the session unless `stop` was set
        meanwhile (the user stopped it: the page shows it as stopped, and so must a reload)."""
        name = kb or self.knowledge_bases.default
        turns = self.conversations.turns(session, name) if session else []
        asked = Rewrite(question, question)
        for event in self.answer_with_history(name, question, turns, k, mode):
            if isinstance(event, Rewrite):
                asked = event
            elif isinstance(event, Answer) and session and not (stop and stop.is_set()):
                # stored before the answer is shown: a reload right after it must find the turn, and a closed
                # page cancels the event, so code after the last yield might never run
                self.conversations.add_turn(session, name, asked.question, event.text, answer_meta(event, asked))
            yield event

    def answer_with_history(self, kb: str | None, question: str, turns: Sequence[Turn], k: int | None = None,
                            mode: str | None = None) -> Iterator[Rewrite | str | Answer]:
        """chat() for a client that keeps the conversation itself (the OpenAI-compatible API sends it with each
        question): the Rewrite given `turns` (oldest first), then pieces of text, then the Answer."""
        question = check_question(str(question or ""), self.settings)  # one cap for every surface, before any work
        k, mode = self.check_options(k, mode)
        asked = rewrite(question, turns)
        if len(asked.search) > self.settings.max_question_chars:
            asked = Rewrite(question, question)  # the carried-over context would pass the cap: search as asked
        yield asked
        yield from self.knowledge_bases.assistant(kb).stream(asked.search, k, mode)

    def ask(self, kb: str | None, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        return final_answer(self.chat(kb, question, k, mode))

    def check_options(self, k: int | None, mode: str | None) -> tuple[int, str]:
        k = int(k) if k else self.settings.top_k
        if not 1 <= k <= MAX_K:
            raise ServiceError(f"k must be between 1 and {MAX_K}")
        mode = mode or self.settings.answer_mode
        if mode not in ANSWER_MODES:
            raise ServiceError(f"mode must be one of {', '.join(ANSWER_MODES)}")
        return k, mode

    def passage(self, kb: str | None, chunk_id: int, around: int = 1) -> list[tuple[ChunkRecord, bool]]:
        """The cited chunk with its neighbours in the document, each marked True when it is the cited one."""
        store = self.knowledge_bases.open(kb)
        chunk = store.chunks([int(chunk_id)]).get(int(chunk_id))
        if chunk is None:
            raise NotFound("that passage is no longer in the knowledge base (its document was deleted)")
        neighbours = store.chunks_of_document(chunk.document_id, max(0, chunk.ordinal - around), chunk.ordinal + around)
        return [(c, c.id == chunk.id) for c in neighbours]


def answer_meta(answer: Answer, asked: Rewrite) -> dict:
    """What the UI needs to show an answer again after a reload: sources, images, flags."""
    return {
        "searched": asked.search if asked.rewritten else "",
        "reason": asked.reason,
        "explanation": asked.explanation,
        "mode": answer.mode,
        "grounded": answer.grounded,
        "unsupported": list(answer.unsupported),
        "sources": [asdict(s) for s in answer.sources],
        "images": [asdict(i) for i in answer.images],
        "seconds": {k: round(v, 3) for k, v in answer.seconds.items()},
    }
