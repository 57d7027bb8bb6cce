"""Follow-up questions are rewritten into questions that stand alone; questions that name their own subject are
searched as asked, even when they start with "why", "and" or "what about"."""

from __future__ import annotations

import pytest

from benchmarks.followups import judge, load_set, scores
from rag.conversations import Turn
from rag.followups import list_items, noun_phrases, rewrite


def turn(question: str, answer: str = "It is in the documents. [1]", searched: str = "") -> Turn:
    return Turn(question, answer, searched or question, "default")


MODES = turn("What answer modes does Loupe have?", "Loupe has two answer modes, generate and extractive. [1]")
WALRUS = turn("What does the walrus operator do?",
              "The walrus operator := assigns a value to a name inside an expression. [1]")
VENV = turn("How do I create a virtual environment?", "Run `python -m venv .venv` in your project folder. [1]")
STEPS = turn("How do I add files?", "1. Open the Documents tab\n2. Drop the files\n3. Press Add [2]")


# --- the two conversations ------------------------------------------------------------------------------
def test_a_why_question_with_its_own_subject_is_not_read_as_a_follow_up():
    """Issue 8: after the walrus question, this was answered about the walrus operator."""
    result = rewrite("Why is 0.1 + 0.2 not exactly 0.3?", [WALRUS])
    assert not result.rewritten and result.search == "Why is 0.1 + 0.2 not exactly 0.3?"
    assert result.reason == "" and result.explanation == ""


def test_activate_it_searches_for_activating_the_virtual_environment_not_creating_it():
    """Issue 8: "and how do I activate it?" got the create command, because "create" was searched too."""
    result = rewrite("and how do I activate it?", [VENV])
    assert result.search == "how do I activate a virtual environment?"
    assert "create" not in result.search.lower()
    assert result.explanation == ('Read as a follow-up to "How do I create a virtual environment?" ("it" taken to '
                                  'mean "a virtual environment"): searched for "how do I activate a virtual '
                                  'environment?".')


# --- questions that stand alone ---------------------------------------------------------------------------------
@pytest.mark.parametrize("question", [
    "Why is vitamin D called the sunshine vitamin?",  # "why", and the earlier turn's subject, named
    "And what is the difference between baking soda and baking powder?",
    "And what ended the Second World War in the Pacific?",  # "and", and an ordinal with a noun of its own
    "What about small claims court filing fees in New York?",  # "what about" with a whole subject of its own
    "Is it safe to eat raw cookie dough?",  # an "it" that stands for nothing
    "What is the GIL and why does it exist?",  # an "it" whose noun is in the question
    "What does this error mean: TypeError: unhashable type: 'list'?",  # a "this" that points forward
    "Who was the first woman to win a Nobel Prize?",
    "What is umami?",  # three words, but its own subject
    "What did Toyota rebrand its Forte as?",  # a possessive bound to a name before it
])
def test_a_question_that_names_its_own_subject_is_searched_as_asked(question):
    result = rewrite(question, [MODES])
    assert not result.rewritten and result.search == question and result.reason == ""


def test_the_first_question_is_never_rewritten():
    assert not rewrite("and what about it?", []).rewritten


# --- pronouns ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("earlier, question, searched", [
    (WALRUS, "Which Python version added it?", "Which Python version added the walrus operator?"),
    (turn("At what temperature is the seed vault kept?"), "and who may open it?", "who may open the seed vault?"),
    (turn("What does the GDPR say about the right to erasure?"), "Are there exceptions to it?",
     "Are there exceptions to the right to erasure?"),
    (turn("What is the TDP of the Intel Core i9-13900K?"), "Is that a lot for an air cooler?",
     "Is the TDP of the Intel Core i9-13900K a lot for an air cooler?"),
    (turn("Who invented the telephone?", "Alexander Graham Bell was granted the first US patent for it. [1]"),
     "Where was he born?", "Where was Alexander Graham Bell born?"),
    (turn("What is the largest country in Africa?", "Algeria, at about 2.38 million square kilometres. [1]"),
     "What's its capital?", "What's Algeria's capital?"),
    (turn("Can my landlord keep my deposit for normal wear and tear?"), "What if they refuse to return it?",
     "What if my landlord refuse to return my deposit?"),
    (MODES, "Which one is faster?", "Which of the answer modes is faster?"),
])
def test_a_pronoun_is_replaced_by_the_noun_phrase_it_stands_for(earlier, question, searched):
    result = rewrite(question, [earlier])
    assert result.search == searched
    assert result.follows == earlier.question and " taken to mean " in result.reason


def test_a_long_follow_up_with_a_pronoun_is_still_a_follow_up():
    question = "How much does it cost and how long is it valid for, if I only fly a small camera drone at weekends?"
    result = rewrite(question, [turn("Do I need a license to fly a drone in the UK?")])
    assert result.search.startswith("How much does a license cost and")


# --- fragments and bare follow-ups ------------------------------------------------------------------------------
@pytest.mark.parametrize("earlier, question, searched", [
    ("How do I activate a virtual environment on Linux?", "and on Windows?",
     "How do I activate a virtual environment on Windows?"),
    ("At what temperature should I roast a chicken?", "What about a duck?",
     "At what temperature should I roast a duck?"),
    ("Do I need a visa to visit Japan as a Canadian?", "and for China?",
     "Do I need a visa to visit China as a Canadian?"),
    ("How long is a US patent valid?", "And a design patent?", "How long is a design patent valid?"),
    ("How many calories does running a mile burn?", "And walking?", "How many calories does walking a mile burn?"),
])
def test_a_fragment_replaces_the_matching_part_of_the_earlier_question(earlier, question, searched):
    result = rewrite(question, [turn(earlier)])
    assert result.search == searched and result.reason.endswith(" taken as a change to the earlier question")


@pytest.mark.parametrize("question", ["Why?", "tell me more", "What else could I try?", "Is there a faster way?"])
def test_a_follow_up_that_names_nothing_is_searched_after_the_earlier_question(question):
    result = rewrite(question, [turn("Should I salt pasta water?")])
    assert result.search == f"Should I salt pasta water? {question}"


def test_words_taken_from_the_earlier_answer_are_a_follow_up_and_new_words_are_not():
    assert rewrite("extractive mode", [MODES]).search == "What answer modes does Loupe have? extractive mode"
    assert not rewrite("python decorators", [MODES]).rewritten


# --- ordinals and lists -----------------------------------------------------------------------------------------
def test_an_ordinal_names_the_item_and_keeps_the_topic():
    result = rewrite("and what about the second one?", [MODES])
    assert result.search == "What answer modes does Loupe have? what about extractive?"
    assert result.reason == '"the second one" taken to mean "extractive"'


def test_the_last_item_and_bulleted_lists():
    assert list_items(STEPS.answer) == ["Open the Documents tab", "Drop the files", "Press Add"]
    assert rewrite("explain the last step", [STEPS]).search == "How do I add files? explain Press Add"
    assert rewrite("more on the 2nd one", [STEPS]).search == "How do I add files? more on Drop the files"


def test_inline_lists_after_a_colon_or_a_comma():
    assert list_items("Loupe has two answer modes, generate and extractive. [1]") == ["generate", "extractive"]
    assert list_items("It reads: PDF, Word, HTML or text.") == ["PDF", "Word", "HTML", "text"]
    assert list_items("Press Enter, and the answer appears.") == []
    assert list_items("No list here.") == []


def test_a_comma_list_may_begin_before_its_first_comma():
    assert list_items("George Washington, John Adams and Thomas Jefferson. [1]") == [
        "George Washington", "John Adams", "Thomas Jefferson"]
    assert list_items("In March you can sow broad beans, peas, spinach and radishes. [1]") == [
        "broad beans", "peas", "spinach", "radishes"]


def test_an_ordinal_past_the_list_keeps_the_earlier_question():
    result = rewrite("what about the fifth one?", [MODES])
    assert result.search == "What answer modes does Loupe have? what about the fifth one?"


def test_noun_phrases_tell_verbs_from_nouns_by_position():
    assert [p.text for p in noun_phrases("How do I create a virtual environment?")] == ["a virtual environment"]
    assert [(p.text, p.kind) for p in noun_phrases("Which socket does the Ryzen 7 7800X3D use?")] == [
        ("socket", "wh"), ("the Ryzen 7 7800X3D", "core")]


# --- conversations longer than two turns ------------------------------------------------------------------------
def test_a_chain_of_follow_ups_keeps_its_subject():
    second = rewrite("and how do I activate it?", [VENV])
    history = [VENV, turn(second.question, "Run `source .venv/bin/activate`. [1]", second.search)]
    third = rewrite("and on Windows?", history)
    assert third.search == "how do I activate a virtual environment on Windows?"
    assert third.follows == "and how do I activate it?"


def test_a_long_run_of_follow_ups_keeps_the_search_bounded():
    """Each rewrite carries the previous search along: clipped, or 40 follow-ups pass the question cap."""
    history = [MODES]
    for number in range(40):
        asked = rewrite("and why?", history)
        assert asked.rewritten
        history.append(turn("and why?", f"Because of reason number {number} with words.", asked.search))
    assert len(history[-1].searched) < 500, len(history[-1].searched)
    assert history[1].searched == "What answer modes does Loupe have? why?"


# --- the whole set ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outcomes():
    return [judge(conversation, rewrite) for conversation in load_set()]


def test_the_set_is_large_and_balanced(outcomes):
    follow_ups = sum(o.follow_up for o in outcomes)
    assert len(outcomes) >= 40 and follow_ups == len(outcomes) - follow_ups


def test_the_set_is_read_at_least_as_well_as_measured(outcomes):
    """The figures benchmarks/followups.py printed for docs/EVALUATION.md (all 110 conversations), less a
    margin of a few conversations: a rule change that loses more fails here."""
    measured = scores(outcomes)
    assert measured["follow-up precision"] >= 0.95, measured
    assert measured["follow-up recall"] >= 0.93, measured
    assert measured["new topic searched as asked"] >= 0.95, measured
    assert measured["follow-up referent found"] >= 0.90, measured
    assert measured["all conversations right"] >= 0.93, measured
