"""The faithfulness check: each answer sentence is cited when a passage supports it and flagged when none does;
`python -m rag ask` shows the flag."""

from __future__ import annotations

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
