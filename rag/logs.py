"""Logging for Loupe's entry points: one format, the level from Settings, quiet third-party chatter.

Modules log through `logging.getLogger(__name__)`; only entry points (CLI, app) call `configure_logging`.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes, not the one there when logging was configured: a
    caller that redirects stderr later (a test capturing output, a server daemonising) never leaves the handler
    writing to a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_loupe", False) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._loupe = True  # type: ignore[attr-defined]  # configure twice, log once
        root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on itself at import ("Building index...")
    for name in ("rag", "ingest", "app", "service", "ui", "webapi", "openai_api", "benchmarks"):
        logging.getLogger(name).setLevel(level.upper())
