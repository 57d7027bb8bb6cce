"""Chat history in SQLite, keyed by a session id the browser keeps, so it survives a reload and a restart.

One file (conversations.sqlite3 in the knowledge-base root) holds every session's messages, each tagged
with the knowledge base it was asked against, plus the knowledge base a session last used. The store is
safe to share between threads: each call takes a lock around one connection, and a turn (question plus
answer) is written in one transaction.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")  # whole string (fullmatch): `$` would take a final newline

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    kb TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session, id);
CREATE TABLE IF NOT EXISTS sessions (session TEXT PRIMARY KEY, kb TEXT NOT NULL, updated REAL NOT NULL);
"""


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    content: str
    kb: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One question and its answer; `searched` is the question as it went to retrieval (after rewriting)."""

    question: str
    answer: str
    searched: str
    kb: str


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def check_session(session: str) -> str:
    if not isinstance(session, str) or not SESSION_PATTERN.fullmatch(session):
        raise ValueError("invalid session id")
    return session


class Conversations:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def add_turn(self, session: str, kb: str, question: str, answer: str,
                 meta: dict[str, Any] | None = None) -> None:
        """Store a question and its answer together; `meta` (JSON-able) goes with the answer."""
        check_session(session)
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT INTO messages (session, kb, role, content, created) VALUES (?, ?, ?, ?, ?)",
                                   (session, kb, "user", question, now))
                self._conn.execute("INSERT INTO messages (session, kb, role, content, meta, created) "
                                   "VALUES (?, ?, ?, ?, ?, ?)",
                                   (session, kb, "assistant", answer, json.dumps(meta or {}), now))
                self._set_kb(session, kb, now)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def messages(self, session: str) -> list[Message]:
        check_session(session)
        with self._lock:
            rows = self._conn.execute("SELECT role, content, kb, meta FROM messages WHERE session = ? ORDER BY id",
                                      (session,)).fetchall()
        return [Message(role, content, kb, json.loads(meta)) for role, content, kb, meta in rows]

    def turns(self, session: str, kb: str | None = None, last: int = 3) -> list[Turn]:
        """The last `last` complete turns of a session (oldest first), optionally only those asked of `kb`."""
        messages = self.messages(session)
        turns = []
        for question, answer in zip(messages, messages[1:]):
            if question.role == "user" and answer.role == "assistant" and (kb is None or question.kb == kb):
                turns.append(Turn(question.content, answer.content,
                                  str(answer.meta.get("searched") or question.content), question.kb))
        return turns[-last:] if last else turns

    def forget_document(self, kb: str, document_id: int, name: str, image_names: Collection[str] = ()) -> int:
        """Scrub a deleted document from every stored answer asked of `kb`: its sources and images leave the
        answer's meta, and an answer that cited it is replaced by a note. Returns how many answers changed."""
        changed = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._conn.execute("SELECT id, content, meta FROM messages WHERE kb = ? AND role = 'assistant'",
                                          (kb,)).fetchall()
                for message_id, content, raw in rows:
                    scrubbed = _without_document(json.loads(raw), content, document_id, name, image_names)
                    if scrubbed is not None:
                        self._conn.execute("UPDATE messages SET content = ?, meta = ? WHERE id = ?",
                                           (scrubbed[0], json.dumps(scrubbed[1]), message_id))
                        changed += 1
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return changed

    def clear(self, session: str) -> int:
        check_session(session)
        with self._lock:
            return self._conn.execute("DELETE FROM messages WHERE session = ?", (session,)).rowcount

    def set_kb(self, session: str, kb: str) -> None:
        check_session(session)
        with self._lock:
            self._set_kb(session, kb, time.time())

    def _set_kb(self, session: str, kb: str, now: float) -> None:
        self._conn.execute("INSERT INTO sessions (session, kb, updated) VALUES (?, ?, ?) "
                           "ON CONFLICT(session) DO UPDATE SET kb = excluded.kb, updated = excluded.updated",
                           (session, kb, now))

    def kb_of(self, session: str) -> str | None:
        check_session(session)
        with self._lock:
            row = self._conn.execute("SELECT kb FROM sessions WHERE session = ?", (session,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _without_document(meta: dict[str, Any], content: str, document_id: int, name: str,
                      image_names: Collection[str]) -> tuple[str, dict[str, Any]] | None:
    """(content, meta) of an answer with a document's passages and images taken out; None when it had none."""
    sources = meta.get("sources") or []
    kept = [s for s in sources if s.get("document_id") != document_id]
    images = meta.get("images") or []
    kept_images = [i for i in images if Path(str(i.get("path", ""))).name not in image_names]
    if len(kept) == len(sources) and len(kept_images) == len(images):
        return None
    cited = any(s.get("cited") for s in sources if s.get("document_id") == document_id)
    meta = {**meta, "sources": kept, "images": kept_images}
    if cited:  # the answer quotes the document: nothing of it may stay
        content = f"(This answer came from {name}, which has been deleted from the knowledge base.)"
        meta["unsupported"] = []
    return content, meta
