"""Chat history in SQLite: kept per session, in order, across reopening (a server restart)."""

from __future__ import annotations

import threading

import pytest

from rag.conversations import Conversations, Turn, check_session, new_session_id


@pytest.fixture
def store(tmp_path) -> Conversations:
    conversations = Conversations(tmp_path / "conversations.sqlite3")
    yield conversations
    conversations.close()


def test_turns_come_back_in_order_with_their_meta(store):
    session = new_session_id()
    store.add_turn(session, "default", "What is Loupe?", "A local assistant. [1]", {"sources": [{"file": "a.md"}]})
    store.add_turn(session, "default", "and the modes?", "generate and extractive", {"searched": "modes of Loupe"})
    messages = store.messages(session)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "What is Loupe?"), ("assistant", "A local assistant. [1]"),
        ("user", "and the modes?"), ("assistant", "generate and extractive")]
    assert messages[1].meta == {"sources": [{"file": "a.md"}]}
    assert messages[0].meta == {}
    assert store.turns(session) == [
        Turn("What is Loupe?", "A local assistant. [1]", "What is Loupe?", "default"),
        Turn("and the modes?", "generate and extractive", "modes of Loupe", "default")]


def test_history_survives_reopening_and_sessions_stay_apart(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    first = Conversations(path)
    mine, theirs = new_session_id(), new_session_id()
    first.add_turn(mine, "default", "q1", "a1")
    first.add_turn(theirs, "work", "q2", "a2")
    first.set_kb(mine, "work")
    first.close()
    second = Conversations(path)
    assert [m.content for m in second.messages(mine)] == ["q1", "a1"]
    assert [m.content for m in second.messages(theirs)] == ["q2", "a2"]
    assert second.kb_of(mine) == "work" and second.kb_of(theirs) == "work"
    assert second.kb_of(new_session_id()) is None
    second.close()


def test_turns_filter_by_knowledge_base_and_keep_the_last(store):
    session = new_session_id()
    for n in range(5):
        store.add_turn(session, "a" if n % 2 == 0 else "b", f"q{n}", f"a{n}")
    assert [t.question for t in store.turns(session, "a")] == ["q0", "q2", "q4"]
    assert [t.question for t in store.turns(session, "a", last=2)] == ["q2", "q4"]
    assert [t.question for t in store.turns(session, last=0)] == ["q0", "q1", "q2", "q3", "q4"]


def test_clear_forgets_one_session_only(store):
    mine, theirs = new_session_id(), new_session_id()
    store.add_turn(mine, "default", "q", "a")
    store.add_turn(theirs, "default", "q", "a")
    assert store.clear(mine) == 2
    assert store.messages(mine) == [] and len(store.messages(theirs)) == 2


@pytest.mark.parametrize("session", ["", "short", "../../etc/passwd", "x" * 65, "a b c d e f g h", None, 42])
def test_malformed_session_ids_are_refused(store, session):
    with pytest.raises(ValueError, match="invalid session id"):
        store.messages(session)
    with pytest.raises(ValueError):
        check_session(session)


def test_concurrent_writers_lose_nothing(store):
    sessions = [new_session_id() for _ in range(4)]

    def chat(session):
        for n in range(25):
            store.add_turn(session, "default", f"q{n}", f"a{n}")

    threads = [threading.Thread(target=chat, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session in sessions:
        assert [t.question for t in store.turns(session, last=0)] == [f"q{n}" for n in range(25)]
