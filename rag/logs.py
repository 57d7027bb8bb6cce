"""Logging for Loupe's entry points: one format, the level from Settings, quiet third-party chatter.

Modules log through `logging.getLogger(__name__)`; only entry points (CLI, app) call `configure_logging`.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOUPE_LOGGERS = ("rag", "ingest", "app", "service", "ui", "webapi", "openai_api", "benchmarks")


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


class LibraryChatterFilter(logging.Filter):
    """Lets a library's records through only at WARNING and worse. The root's WARNING level is not enough: a
    library may set its own logger's level when it is imported, which can come after configure_logging (bm25s sets
    DEBUG on itself, so every lexical index built printed "DEBUG bm25s: Building index from tokens")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in LOUPE_LOGGERS


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_loupe", False) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(LibraryChatterFilter())
        handler._loupe = True  # type: ignore[attr-defined]  # configure twice, log once
        root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    for name in LOUPE_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
