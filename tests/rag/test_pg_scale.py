"""benchmarks.scale on the PostgreSQL backend: the figures it reports, and a kept store measured as it is."""

from __future__ import annotations

import os

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
    first = scale.run(300, "postgres", scale_url, tmp_path, ef_search=[10, 100])
    assert first["chunks"] == 300 and first["fill_s"] is not None and first["recall_at_10"] >= 0.9
    # the store opened again with each hnsw.ef_search: its own recall and search times
    assert [row["ef_search"] for row in first["ef_search_sweep"]] == [10, 100]
    for row in first["ef_search_sweep"]:
        assert 0 < row["recall_at_10"] <= 1 and row["server_cpu_ms"]["dense"]["p50"] > 0
        assert set(row["search_ms"]) == {"dense", "hybrid"}
    # the server process that ran the searches is on this machine: its CPU time is read per query
    for mode in ("dense", "bm25", "hybrid"):
        assert first["server_cpu_ms"][mode]["p95"] >= first["server_cpu_ms"][mode]["p50"] > 0
    # a fill stopped short (here: a store of 300 chunks, asked for 600) is measured as it is, not filled again
    second = scale.run(600, "postgres", scale_url, tmp_path)
    assert second["chunks"] == 300 and second["fill_s"] is None and second["add_document_s"] > 0


def test_the_servers_memory_is_its_processes_proportional_set_size(pg_server):
    url, data = pg_server
    read = scale.server_memory(data)
    with psycopg.connect(url) as conn:
        conn.execute("SELECT count(*) FROM pg_class").fetchone()
        during = read()  # the postmaster, its background workers and this connection's backend
    assert 5 * 2**20 < during < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
