"""benchmarks.scale on the PostgreSQL backend: the figures it reports, and a kept store measured as it is."""

from __future__ import annotations

import psycopg
import pytest

from benchmarks import scale
from rag.pg_connect import schema_name


@pytest.fixture
def scale_url(pg_url):
    """The session's server; the benchmark's knowledge base ("scale") is dropped afterwards."""
    yield pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            psycopg.sql.Identifier(schema_name("scale"))))


def test_the_benchmark_reports_the_servers_cpu_time_and_measures_a_kept_store_as_it_is(scale_url, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(scale, "QUERIES", 20)  # the figures' shape is tested here, not their values
    first = scale.run(300, "postgres", scale_url, tmp_path)
    assert first["chunks"] == 300 and first["fill_s"] is not None and first["recall_at_10"] >= 0.9
    # the server process that ran the searches is on this machine: its CPU time is read per query
    for mode in ("dense", "bm25", "hybrid"):
        assert first["server_cpu_ms"][mode]["p95"] >= first["server_cpu_ms"][mode]["p50"] > 0
    # a fill stopped short (here: a store of 300 chunks, asked for 600) is measured as it is, not filled again
    second = scale.run(600, "postgres", scale_url, tmp_path)
    assert second["chunks"] == 300 and second["fill_s"] is None and second["add_document_s"] > 0
