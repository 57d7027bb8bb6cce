"""Answers end to end: real MiniLM retrieval, extractive answers, the tiny LM for streaming plumbing, and
the real SmolLM2 for a real answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import Ingestor
from rag.answering import RankedSentence, check_question, fitted_messages
from rag.components import Models
from rag.errors import LoupeError, TooLarge
from rag.local_generator import LocalGenerator
from rag.prompts import NOT_IN_DOCUMENTS, build_messages
from tests.builders import make_pdf, sample_image
from tests.conftest import make_settings

PAGES = [
    ["The museum opens at nine in the morning from Tuesday to Sunday."],
    ["The lighthouse keeper logged 412 ships in the winter of 1911."],
    ["Guided tours of the engine room cost eight euros per person."],
]


@pytest.fixture
def filled(models, tmp_path):
    make_pdf(tmp_path / "harbour.pdf", PAGES, images={2: sample_image("astronaut")})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "bread.md").write_text("# Baking\n\nThe dough proofs for twelve hours at room temperature.\n")
    kb = models.open_store()
    report = Ingestor(kb, models.settings, models.text_embedder, models.image_embedder).ingest(
        [tmp_path / "harbour.pdf", tmp_path / "notes"])
    assert not report.failed
    return kb


def test_extractive_answer_cites_the_right_file_and_page(models, filled):
    answer = models.assistant(filled).ask("How many ships did the lighthouse keeper log?", mode="extractive")
    assert "412 ships" in answer.text and "[1]" in answer.text
    first = answer.sources[0]
    assert (first.file, first.page, first.cited) == ("harbour.pdf", 2, True)
    assert [(i.file, i.page) for i in answer.images] == [("harbour.pdf", 2)]  # the picture on the cited page
    payload = answer.to_json()
    assert set(payload) >= {"answer", "sources", "images"}
    assert set(payload["sources"][0]) >= {"file", "page", "text", "score"}


def test_off_topic_question_gets_the_plain_refusal(models, filled):
    answer = models.assistant(filled).ask("Who painted the Mona Lisa?", mode="extractive")
    assert answer.text == NOT_IN_DOCUMENTS
    assert answer.grounded is False and answer.sources == [] and answer.images == []


def test_generation_streams_pieces_then_the_answer(tmp_path, text_embedder, image_embedder, tiny_generator_dir,
                                                   filled):
    settings = make_settings(filled.folder, generator_model=str(tiny_generator_dir), max_new_tokens=12)
    assistant = Models(settings, text_embedder, image_embedder, "").assistant(filled)
    events = list(assistant.stream("What does a guided tour of the engine room cost?"))
    pieces, answer = events[:-1], events[-1]
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert answer.sources[0].page == 3
    assert answer.seconds["retrieve"] > 0 and answer.seconds["generate"] > 0
    # a random model's words are supported by no passage, and the check says so
    assert answer.unsupported


@pytest.mark.slow
def test_real_smollm2_answers_from_the_passage(models, filled, smollm2_dir):
    answer = models.assistant(filled).ask("How many ships did the lighthouse keeper log in the winter of 1911?")
    assert "412" in answer.text, answer.text
    cited = [(s.file, s.page) for s in answer.sources if s.cited]
    assert ("harbour.pdf", 2) in cited, (answer.text, cited)
    assert answer.unsupported == []


def test_question_is_normalised_and_capped(settings):
    assert check_question("  How   many\nships? ", settings) == "How many ships?"
    with pytest.raises(LoupeError, match="Type a question"):
        check_question(" \n\t ", settings)
    with pytest.raises(TooLarge, match="2,001 characters long; the limit is 2,000"):
        check_question("x" * 2001, settings)


def test_assistant_refuses_an_over_long_question_before_any_work(models, filled):
    # the CLI and the app both answer through Assistant.stream, so both get the cap
    stream = models.assistant(filled).stream("Why? " * 1000)
    with pytest.raises(TooLarge):
        next(stream)


def test_context_drops_the_least_relevant_sentences_to_fit_the_window(tiny_generator_dir):
    generator = LocalGenerator(str(tiny_generator_dir), Path("unused"))
    try:
        question = "How many ships did the keeper log?"
        best, second, third = (RankedSentence(1, f"Sentence {n} about ships, keepers and winters.", position, 0, 0.5)
                               for n, position in ((1, 2), (2, 0), (3, 1)))
        best_alone = len(generator.prompt_ids(build_messages(question, [best.text])))
        max_new = generator.context_window - best_alone  # room for the best sentence only
        messages = fitted_messages(generator, question, [best, second, third], max_new)
        assert generator.fits(messages, max_new)
        assert messages == build_messages(question, [best.text])
        roomy = fitted_messages(generator, question, [best, second, third], 10)
        assert roomy == build_messages(question, [second.text, third.text, best.text])  # reading order
    finally:
        generator.close()
