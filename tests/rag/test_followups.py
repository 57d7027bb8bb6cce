"""Follow-up questions are rewritten with the conversation before retrieval; standalone ones are not."""

from __future__ import annotations

import pytest

from rag.conversations import Turn
from rag.followups import follow_up_reason, key_terms, list_items, rewrite

MODES = Turn("What answer modes does Loupe have?",
             "Loupe has two answer modes, generate and extractive. [1]",
             "What answer modes does Loupe have?", "default")


def test_an_ordinal_follow_up_names_the_item_and_keeps_the_topic():
    result = rewrite("and what about the second one?", [MODES])
    assert result.rewritten and result.reason == "starts like a follow-up"
    assert result.search.startswith("and what about extractive?")
    assert "What answer modes does Loupe have" in result.search


def test_the_last_item_and_bulleted_lists():
    steps = Turn("How do I add files?", "1. Open the Documents tab\n2. Drop the files\n3. Press Add [2]",
                 "How do I add files?", "default")
    assert list_items(steps.answer) == ["Open the Documents tab", "Drop the files", "Press Add"]
    assert rewrite("explain the last step", [steps]).search.startswith("explain Press Add (")
    assert rewrite("more on the 2nd one", [steps]).search.startswith("more on Drop the files (")


def test_inline_lists_after_a_colon_or_a_comma():
    assert list_items("Loupe has two answer modes, generate and extractive. [1]") == ["generate", "extractive"]
    assert list_items("It reads: PDF, Word, HTML or text.") == ["PDF", "Word", "HTML", "text"]
    assert list_items("Press Enter, and the answer appears.") == []
    assert list_items("No list here.") == []


def test_an_ordinal_past_the_list_is_left_alone():
    assert rewrite("what about the fifth one?", [MODES]).search.startswith("what about the fifth one? (")


@pytest.mark.parametrize("question", [
    "How do I delete a document?", "Which file types can Loupe read from a folder of scanned contracts?",
    "Where does Loupe store the catalog?"])
def test_standalone_questions_are_searched_as_asked(question):
    result = rewrite(question, [MODES])
    assert not result.rewritten and result.search == question and result.reason == ""


@pytest.mark.parametrize("question, reason", [
    ("Why?", "starts like a follow-up"), ("and for PDFs?", "starts like a follow-up"),
    ("How fast is it?", "refers back with 'it'"), ("Is that one offline?", "refers back with 'that'"),
    ("extractive mode", "too short to stand alone"), ("the third", "refers to an item by its position")])
def test_follow_ups_are_recognised_with_a_reason(question, reason):
    assert follow_up_reason(question) == reason


def test_the_first_question_is_never_rewritten():
    assert not rewrite("and what about it?", []).rewritten


def test_a_chain_of_follow_ups_carries_the_rewritten_search():
    second = Turn("and the second one?", "Extractive mode copies sentences. [1]",
                  "and extractive? (follow-up to: What answer modes does Loupe have)", "default")
    result = rewrite("why is it faster?", [MODES, second])
    assert "What answer modes does Loupe have" in result.search
    assert result.search.startswith("why is it faster? (follow-up to: and extractive")


def test_key_terms_skip_stopwords_and_citations():
    terms = key_terms("The vault is cold. The vault holds seeds [1] and the seeds are alpine. [2]")
    assert terms[:2] == ["vault", "seeds"]
    assert not {"the", "and", "are", "[1]", "1"} & {t.lower() for t in terms}


def test_a_long_run_of_follow_ups_keeps_the_search_bounded():
    """Each rewrite carries the previous search along: clipped, or 40 follow-ups pass the question cap."""
    history = [MODES]
    for turn in range(40):
        asked = rewrite("and why?", history)
        assert asked.rewritten
        history.append(Turn("and why?", f"Because of reason number {turn} with words.", asked.search, "default"))
    assert len(history[-1].searched) < 500, len(history[-1].searched)
    assert history[1].searched.startswith("and why? (follow-up to: What answer modes does Loupe have")
