"""rag.logs: Loupe's own loggers at the chosen level, libraries at warnings and worse."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import bm25s  # noqa: F401  # sets its own logger to DEBUG when imported

from rag.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]


def test_loupe_logs_at_info_and_a_library_that_sets_debug_on_itself_stays_quiet(capsys):
    configure_logging("INFO")
    logging.getLogger("bm25s").debug("Building index from tokens")
    logging.getLogger("rag.store").info("ingested report.pdf")
    logging.getLogger("rag.store").debug("a detail")
    err = capsys.readouterr().err
    assert "ingested report.pdf" in err
    assert "Building index" not in err and "a detail" not in err


# In a fresh process: bm25s sets DEBUG on its logger when first imported, and the app imports it only when it builds
# its first lexical index, long after configure_logging ran.
BM25S_IMPORTED_LATER = """
import logging
from rag.logs import configure_logging
configure_logging("INFO")
import bm25s
bm25s.BM25().index(bm25s.tokenize(["the seed vault", "the lighthouse lamp"], show_progress=False),
                   show_progress=False)
logging.getLogger("bm25s").warning("a warning still shows")
logging.getLogger("rag.lexical_index").info("lexical index ready")
"""


def test_bm25s_imported_after_configure_logging_prints_no_debug_lines():
    """Regression: the app's log and `python -m rag ask` printed "DEBUG bm25s: Building index from tokens"."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BM25S_IMPORTED_LATER], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    assert "lexical index ready" in done.stderr and "a warning still shows" in done.stderr
    assert "Building index" not in done.stderr and "DEBUG" not in done.stderr
