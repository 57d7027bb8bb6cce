"""Values Explore keeps WITH a knowledge base, on either backend (today: the knowledge base's own image labels).

- A folder store keeps each value in a JSON file inside its folder (rag.explore.cache_file): the folder is the
  knowledge base, so the value is copied and deleted with it.
- A PostgreSQL store keeps each value in the knowledge base's own `meta` table, under the key `explore.NAME`, so
  every app server sharing the knowledge base reads the same value. Its local folder is only a per-machine cache
  there and would not do. The store has no public accessor for `meta`, so this opens a short connection of its own
  from the store's public `location` (rag.pg_connect.connect, as the store does): a read costs one connection.

Values are text (the callers keep JSON in them); None when a value was never set.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rag.explore import cache_file

if TYPE_CHECKING:
    from rag.pg_connect import Location
    from rag.store_api import KnowledgeBaseStore

logger = logging.getLogger(__name__)

KEY_PREFIX = "explore."  # beside the store's own keys (generation, models) in the same table


def read_value(kb: KnowledgeBaseStore, name: str) -> str | None:
    location = _database(kb)
    if location is None:
        path = cache_file(kb, f"{name}.json")
        return path.read_text(encoding="utf-8") if path.exists() else None
    with _connection(location) as conn:
        row = conn.execute(_meta_sql(location, "SELECT value FROM {} WHERE key = %s"),
                           (KEY_PREFIX + name,)).fetchone()
    return row[0] if row else None


def write_value(kb: KnowledgeBaseStore, name: str, value: str) -> None:
    location = _database(kb)
    if location is None:
        write_atomically(cache_file(kb, f"{name}.json"), value)
        return
    with _connection(location) as conn:
        conn.execute(_meta_sql(location, "INSERT INTO {} (key, value) VALUES (%s, %s) "
                                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"),
                     (KEY_PREFIX + name, value))
    logger.info("%s: %s saved in the database", location.label, name)


def write_atomically(path: Path, text: str) -> None:
    """Write a file whole: a reader (another thread or process) never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _database(kb: KnowledgeBaseStore) -> Location | None:
    """The database location of a PostgreSQL store (rag.pg_store.PgKnowledgeBase.location); None for a folder."""
    return getattr(kb, "location", None)


def _connection(location: Location):
    from rag.pg_connect import connect

    return connect(location)  # autocommit: each statement is its own transaction


def _meta_sql(location: Location, statement: str):
    from psycopg import sql

    return sql.SQL(statement).format(sql.Identifier(location.schema, "meta"))
