"""The faithfulness check: each answer sentence is cited when a passage supports it and flagged when none does;
`python -m rag ask` shows the flag."""

from __future__ import annotations

import pytest

from benchmarks.grounding import after_checker, load_items, score
from ingest.pipeline import Ingestor
from rag.cli import main
from rag.grounding import check_answer, check_sentence, cite, split_sentences
from tests.conftest import TEST_CACHE

PASSAGES = [
    "The museum opens at nine in the morning from Tuesday to Sunday.",
    "The lighthouse keeper logs 412 ships in the winter of 1911.",
]


def test_a_copied_sentence_is_supported_by_its_passage():
    check = check_sentence("The lighthouse keeper logs 412 ships.", PASSAGES)
    assert (check.passage, check.supported, check.support) == (2, True, 1.0)


def test_other_word_forms_still_match():
    # "logged" / "logs" and "ship" / "ships" share their stems
    check = check_sentence("The keeper logged 412 ship.", PASSAGES)
    assert check.supported and check.passage == 2


def test_an_invented_number_is_flagged_even_when_the_words_match():
    check = check_sentence("The lighthouse keeper logs 500 ships in the winter of 1911.", PASSAGES)
    assert not check.supported and check.support < 0.6


def test_an_invented_claim_is_flagged():
    check = check_sentence("Visitors can buy ice cream in the gift shop.", PASSAGES)
    assert not check.supported and check.support == 0.0


def test_sentences_without_content_words_claim_nothing():
    assert check_sentence("Yes.", PASSAGES).supported
    assert check_sentence("It is so.", PASSAGES).supported


def test_cite_adds_the_supporting_passage_once():
    checks = check_answer("The museum opens at nine. Tickets cost 40 euros. Ships were logged [2].", PASSAGES)
    assert [c.supported for c in checks] == [True, False, True]
    assert cite(checks) == "The museum opens at nine. [1] Tickets cost 40 euros. Ships were logged [2]."
    assert split_sentences("  One.  Two?\nThree!  ") == ["One.", "Two?", "Three!"]


def test_a_title_an_abbreviation_or_an_initial_does_not_end_a_sentence():
    text = "The choir sang at St. Paul's, e.g. on Sundays. J. S. Bach wrote the music. Dr. Smith led it."
    assert split_sentences(text) == ["The choir sang at St. Paul's, e.g. on Sundays.", "J. S. Bach wrote the music.",
                                     "Dr. Smith led it."]


def test_cli_ask_shows_the_unsupported_flag(models, tmp_path, monkeypatch, capsys, tiny_clip_dir, tiny_generator_dir):
    """A random 2-layer LM says things no passage holds: the human output flags each such sentence."""
    (tmp_path / "harbour.txt").write_text(PASSAGES[1] + " " + PASSAGES[0])
    kb = models.open_store()
    assert not Ingestor(kb, models.settings, models.text_embedder).ingest([tmp_path / "harbour.txt"]).failed
    kb.close()
    for name, value in {"HF_HUB_OFFLINE": "1", "LOUPE_CACHE_DIR": str(TEST_CACHE), "LOUPE_STORE": str(kb.folder),
                        "LOUPE_CLIP_MODEL": f"local-dir:{tiny_clip_dir}", "LOUPE_GENERATOR": str(tiny_generator_dir),
                        "LOUPE_MAX_NEW_TOKENS": "24", "LOUPE_ANSWER_MODE": "generate"}.items():
        monkeypatch.setenv(name, value)
    assert main(["ask", "How many ships did the lighthouse keeper log?"]) == 0
    out = capsys.readouterr().out
    flags = [line for line in out.splitlines() if line.startswith("⚠ not supported by the sources: \"")]
    assert flags, out
    assert all(line.endswith('"') for line in flags)


# The Python tutorial's wording, as retrieved in issue 8's walrus example.
WALRUS = ("Note that in Python, unlike C, assignment inside expressions must be done explicitly with the walrus "
          "operator :=. This avoids a common class of problems encountered in C programs.")
SHORT_CIRCUIT = ("The Boolean operators and and or are so-called short-circuit operators: their arguments are "
                 "evaluated from left to right, and evaluation stops as soon as the outcome is determined. When used "
                 "as a general value and not as a Boolean, the return value of a short-circuit operator is the last "
                 "evaluated argument.")
TUTORIAL = [WALRUS, SHORT_CIRCUIT]


def test_the_issues_walrus_sentence_is_flagged():
    """Most of its words are in the `and`/`or` passage it cites; its subject is not: that passage is not about it."""
    sentence = ("The walrus operator in Python is a short-circuit operator that allows you to evaluate the last "
                "argument of a short-circuit operator. [2]")
    without_question = check_answer(sentence, TUTORIAL)[0]
    assert not without_question.supported and "walrus" in without_question.reason
    assert not check_answer(sentence, TUTORIAL, question="What does the walrus operator do?")[0].supported


def test_a_sentence_citing_the_wrong_passage_is_flagged():
    check = check_sentence("Assignment inside expressions must be done explicitly with the walrus operator :=. [2]",
                           TUTORIAL)
    assert (check.supported, check.passage) == (False, 2)
    assert check_sentence("Assignment inside expressions must be done with the walrus operator :=. [1]",
                          TUTORIAL).supported


def test_a_citation_after_the_full_stop_stays_with_its_sentence():
    assert split_sentences("It is b. [2] It is c. [1][3] Done") == ["It is b. [2]", "It is c. [1][3]", "Done"]


def test_a_follow_up_answered_with_the_wrong_command_is_flagged():
    """The follow-up "how do I activate it?" answered with the create command."""
    passages = ["Once you've created a virtual environment, you may activate it. On Unix or MacOS, run: "
                "source tutorial-env/bin/activate.",
                "To create a virtual environment, run the venv module as a script with the directory path: "
                "python -m venv tutorial-env."]
    sentence = "To activate a virtual environment, run the venv module: python -m venv tutorial-env. [2]"
    assert not check_sentence(sentence, passages, question="and how do I activate it?").supported
    good = "Activate it with source tutorial-env/bin/activate on Unix or macOS. [1]"
    assert check_sentence(good, passages, question="and how do I activate it?").supported


def test_swapped_numbers_are_flagged():
    passage = ["O2 has a bond length of 121 pm and a bond energy of 498 kJ per mol."]
    assert not check_sentence("O2 has a bond length of 498 pm and a bond energy of 121 kJ per mol.", passage).supported
    assert check_sentence("The bond energy of O2 is 498 kJ per mol.", passage).supported


def test_swapped_entities_across_sentences_are_flagged():
    passage = ["Tuples are immutable, and usually contain a heterogeneous sequence of elements. Lists are mutable, "
               "and their elements are usually homogeneous."]
    assert not check_sentence("Tuples are mutable, and lists are immutable.", passage).supported
    assert check_sentence("Tuples are immutable and lists are mutable.", passage).supported


def test_a_flipped_negation_is_flagged_both_ways():
    passage = ["Unfortunately, most decimal fractions cannot be represented exactly as binary fractions. "
               "Note that this is not a bug in Python."]
    flipped = "Most decimal fractions can be represented exactly as binary fractions."
    assert not check_sentence(flipped, passage).supported
    assert not check_sentence("This is a bug in Python.", passage).supported
    assert check_sentence("Most decimal fractions can't be represented exactly in binary.", passage).supported
    antonym = check_sentence("The leakage made the engines efficient.", ["The leakage made them inefficient."])
    assert not antonym.supported


def test_a_denial_of_what_the_passage_affirms_is_flagged_whichever_sentence_matches_best():
    """A new user's case: generate mode answered "No, ONNX Runtime does not collect telemetry. [3]", marked
    supported, from a passage (onnxruntime's privacy notes) that says builds send telemetry. The sentence that shares
    most words ("ONNX Runtime C APIs ...") holds no "telemetry", so the sentence-by-sentence check saw no denial."""
    passage = ["Other builds with telemetry (Linux, macOS, Windows builds not made for Windows apps). These platforms "
               "use the 1DS SDK to send the same trace events to Microsoft's telemetry backend over HTTPS. ONNX "
               "Runtime C APIs allow 1DS to be turned on/off."]
    denial = check_sentence("No, ONNX Runtime does not collect telemetry.", passage,
                            "Does ONNX Runtime collect telemetry?")
    assert not denial.supported and "opposite" in denial.reason
    assert check_sentence("ONNX Runtime C APIs allow 1DS to be turned on or off.", passage).supported
    worded_around = ["Most decimal fractions cannot be represented exactly as binary fractions."]
    assert check_sentence("Most decimal fractions can't be stored exactly as binary fractions.",
                          worded_around).supported  # the passage denies it with another verb: still supported


def test_an_invented_qualifier_is_flagged():
    passage = ["The Social Charter became the basis for European Community legislation on these issues."]
    assert not check_sentence("The Social Charter became the basis for all European Community legislation.",
                              passage).supported


def test_repeated_sentences_and_looping_phrases_are_flagged():
    checks = check_answer("The pass statement does nothing. The pass statement does nothing.",
                          ["The pass statement does nothing."])
    assert [c.supported for c in checks] == [True, False]
    loop = check_answer("It breaks out of the loop, while loop, while loop, while loop.",
                        ["The break statement breaks out of the innermost enclosing for or while loop."])
    assert [c.supported for c in loop] == [False]


def test_paraphrases_stay_supported():
    passages = ["Kublai secured the northeast border in 1259 by installing the hostage prince Wonjong as the ruler "
                "of Korea, making it a Mongol tributary state.", SHORT_CIRCUIT]
    for sentence in ("In 1259 Kublai made Korea a Mongol tributary state by installing Wonjong as its ruler.",
                     "Kublai installed Wonjong as ruler of Korea in 1259. [1]",
                     "The and and or operators are short-circuit operators: evaluation stops once the outcome "
                     "is known."):
        check = check_sentence(sentence, passages)
        assert check.supported, check


def test_question_fillers_and_other_forms_of_a_name_do_not_flag_a_right_answer():
    """False alarms met on real SmolLM2 answers (docs/EVALUATION.md); the old check had these right."""
    passages = ["Political geographers such as Friedrich Ratzel of Germany and Halford Mackinder of Britain also "
                "supported imperialism.", "The Vistula Valley has an asymmetrical pattern of different terraces.",
                "It is actually a formation of the last glacial."]
    german = check_sentence("Friedrich Ratzel was a German political geographer.", passages)
    assert german.supported and german.passage == 1
    question = "What landmark, uh formation actually, has an asymmetrical pattern of different terraces?"
    answer = "The Vistula Valley, with its asymmetrical pattern of different terraces, is actually a formation."
    assert check_sentence(answer, passages, question=question).supported


@pytest.fixture(scope="module")
def adversarial_set() -> list[dict]:
    return load_items()


def test_the_adversarial_set_is_as_built(adversarial_set):
    kinds = {item["kind"] for item in adversarial_set}
    assert len(adversarial_set) >= 60
    assert kinds >= {"paraphrase", "verbatim", "wrong_citation", "swapped_facts", "subject_substitution", "negation",
                     "invented_qualifier", "loop"}
    for item in adversarial_set:
        assert 2 <= len(item["passages"]) <= 5
        assert (item["supported_by"] is not None) == (item["label"] == "supported")
        assert item["split"] in {"dev", "held_out"}


def test_every_unsupported_kind_is_caught_and_the_set_scores_as_measured(adversarial_set):
    """docs/EVALUATION.md "Grounding check": on the whole set, precision 98% and recall 85% (before: 57% and
    6%); the bounds leave a small margin."""
    counts, _ = score(adversarial_set, after_checker)
    for kind, count in counts.items():
        if kind not in {"all", "paraphrase", "verbatim"}:
            assert count.true_positive >= 1, kind
    assert counts["verbatim"].flagged == 0
    assert counts["all"].precision >= 0.94
    assert counts["all"].recall >= 0.80
