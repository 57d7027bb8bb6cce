"""rag.logs: Loupe's own loggers at the chosen level, libraries at warnings and worse."""

from __future__ import annotations

import logging

import bm25s  # noqa: F401  # sets its own logger to DEBUG when imported

from rag.logs import configure_logging


def test_loupe_logs_at_info_and_a_library_that_sets_debug_on_itself_stays_quiet(capsys):
    configure_logging("INFO")
    logging.getLogger("bm25s").debug("Building index from tokens")
    logging.getLogger("rag.store").info("ingested report.pdf")
    logging.getLogger("rag.store").debug("a detail")
    err = capsys.readouterr().err
    assert "ingested report.pdf" in err
    assert "Building index" not in err and "a detail" not in err
