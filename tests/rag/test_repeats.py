"""The repeat guard on streamed text: loops and repeated sentences are held back and never released; ordinary
recurring phrases are released as soon as the text moves on; text that repeats nothing passes at once."""

from __future__ import annotations

from rag.repeats import RepeatGuard


def run(words: list[str]) -> tuple[str, RepeatGuard]:
    guard, shown = RepeatGuard(), ""
    for word in words:
        shown += guard.feed(word + " ")
        if guard.looping:
            break
    return shown + guard.finish(), guard


def test_a_loop_is_stopped_and_shown_once():
    sentence = "The walrus operator is a short-circuit operator. It is used to determine the return value."
    shown, guard = run(sentence.split() * 5)
    assert guard.looping
    assert shown.count("short-circuit") == 1
    assert guard.kept.strip() == sentence  # the loop's first released word or two are cut from what is kept


def test_a_short_sentence_said_twice_is_dropped_at_the_end():
    shown, guard = run("Use python -m venv env. Use python -m venv env.".split())
    assert guard.looping and guard.kept.strip() == "Use python -m venv env."


def test_recurring_phrases_are_released_when_the_text_moves_on():
    text = "It lies in the north of the country, in the hills of the north, near the sea."
    shown, guard = run(text.split())
    assert not guard.looping and shown.strip() == text


def test_new_words_pass_at_once_and_a_growing_word_waits():
    guard = RepeatGuard()
    assert guard.feed("Hello wor") == "Hello "  # "wor" may still grow
    assert guard.feed("ld. ") == "world. "
    assert guard.finish() == ""


def test_a_loop_with_variations_is_stopped_at_the_third_time_a_phrase_comes():
    text = ("The document is referring to a specific species of ctenid, not Euplokamis. The document is referring "
            "to a specific species of Euplokamis, but not Euampelaea. The document is referring to a specific "
            "species of Euampelaea, which is a single species.")
    shown, guard = run(text.split())
    assert guard.looping and shown.count("The document is referring to a specific species") == 2
    assert guard.kept.endswith("but not Euampelaea.")
