"""Connecting to PostgreSQL for a knowledge base: the --store URL, one-line errors, the schema of a knowledge base.

A URL is `postgresql://user:password@host:5432/database?kb=NAME`: `kb` (Loupe's own parameter, removed before
connecting) picks the knowledge base inside the database, "default" when absent. `ef_search=N` (also Loupe's)
sets pgvector's hnsw.ef_search, the HNSW search's candidate list: larger finds more of the exact neighbours and
costs more server time (docs/BENCHMARKS.md measures it). Every other parameter goes to libpq as it is (sslmode,
options, ...). Each knowledge base is one schema, `loupe_<name>`: its tables, its HNSW
index (whose dimension is the text model's) and its permissions stay apart from the others', and deleting one is
one DROP SCHEMA.

Errors never show the password: messages name the server by host, port, database and user only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from rag.errors import Busy, Conflict, Forbidden, LoupeError, NotFound

logger = logging.getLogger(__name__)

DEFAULT_KB = "default"
SCHEMA_PREFIX = "loupe_"
CONNECT_TIMEOUT_S = 10
INDEX_BUILD_MEMORY = "4GB"  # for building the HNSW index in one go: a million 384-d vectors' graph is about 2.6 GB
# The HNSW graph as dense as the folder store's (rag.vector_index: M 32, ef_construction 80): pgvector's default
# (m 16, ef_construction 64) kept recall@10 at 0.996 at 100k chunks but lost it to 0.931 at 780k on the scale
# benchmark's clustered vectors (docs/BENCHMARKS.md). An index built earlier keeps its own (docs/DEPLOY.md).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# Vectors are found by HNSW; a wider search list than pgvector's default 40 keeps recall@100 (the fusion's
# candidate depth) near exact search, and iterative scans return k rows even when k exceeds it.
HNSW_EF_SEARCH = 200
EF_SEARCH_LIMIT = 1000  # pgvector's own bound
OWN_PARAMETERS = ("kb", "ef_search")  # the URL's parameters that Loupe reads and libpq never sees


class DatabaseError(LoupeError):
    """A PostgreSQL knowledge base cannot be used; the message names the server, never the password."""


class DatabaseUnreachable(DatabaseError, Busy):
    """No answer from the server (refused, timed out, unknown host): try again when it is up."""


class DatabaseRefused(DatabaseError, Forbidden):
    """The server refused these credentials, or this user may not do what Loupe needs."""


class DatabaseMissing(DatabaseError, NotFound):
    """The database, or the knowledge base in it, does not exist."""


class ExtensionMissing(DatabaseError, Conflict):
    """The database has no pgvector, and this user cannot add it."""


@dataclass(frozen=True)
class Location:
    """A parsed --store URL: where to connect, and which knowledge base."""

    conninfo: str  # the URL without Loupe's own parameters (it holds the password: never print it)
    kb: str
    host: str
    port: str
    database: str
    user: str
    ef_search: int = HNSW_EF_SEARCH

    @property
    def server(self) -> str:
        """The server in words, for messages: host:port/database as user."""
        return f"{self.host}:{self.port}/{self.database} (user {self.user})"

    @property
    def label(self) -> str:
        """A URL that names this knowledge base without the password, for logs and listings."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}?kb={self.kb}"

    def with_kb(self, kb: str) -> str:
        """The full URL (password included) of another knowledge base in the same database."""
        parts = urlsplit(self.conninfo)
        own = [("ef_search", str(self.ef_search))] if self.ef_search != HNSW_EF_SEARCH else []
        query = urlencode([*parse_qsl(parts.query), ("kb", kb), *own])
        return urlunsplit(parts._replace(query=query))

    @property
    def schema(self) -> str:
        return schema_name(self.kb)


def parse_location(url: str, kb: str | None = None) -> Location:
    """Split a --store URL into what libpq reads and Loupe's `kb` parameter; `kb` given here wins over the URL's."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = dict(p for p in params if p[0] in OWN_PARAMETERS)
    rest = [p for p in params if p[0] not in OWN_PARAMETERS]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise DatabaseError("the --store URL is not a valid PostgreSQL URL: expected "
                            "postgresql://user:password@host:5432/database") from None
    host = str(info.get("host") or "localhost")
    return Location(conninfo, kb or own.get("kb") or DEFAULT_KB,
                    "local socket" if host.startswith("/") else host,  # a socket folder is a server path
                    str(info.get("port") or "5432"), str(info.get("dbname") or info.get("user") or "postgres"),
                    str(info.get("user") or "postgres"), _ef_search(own.get("ef_search")))


def _ef_search(value: str | None) -> int:
    if value is None:
        return HNSW_EF_SEARCH
    if not value.isdigit() or not 1 <= int(value) <= EF_SEARCH_LIMIT:
        raise DatabaseError(f"the --store URL's ef_search must be a whole number from 1 to {EF_SEARCH_LIMIT}, "
                            f"not {value!r}")
    return int(value)


def schema_name(kb: str) -> str:
    return f"{SCHEMA_PREFIX}{kb}"


def connect(location: Location, *, autocommit: bool = True) -> psycopg.Connection:
    """A connection with pgvector's types registered and the HNSW search settings; one clear error line when the
    server cannot be reached, refuses the credentials, or lacks the `vector` extension."""
    try:
        conn = psycopg.connect(location.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="loupe")
    except psycopg.OperationalError as error:
        raise connection_error(location, error) from None
    try:
        ensure_vector_extension(conn, location)
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {int(location.ef_search)}")
        conn.execute("SET hnsw.iterative_scan = strict_order")
        conn.autocommit = autocommit
    except BaseException:
        conn.close()
        raise
    return conn


def connection_error(location: Location, error: psycopg.Error) -> DatabaseError:
    """The one line that says why the server would not take the connection."""
    text = str(error).lower()
    if "password authentication failed" in text or "authentication failed" in text or "no password" in text:
        return DatabaseRefused(f"PostgreSQL at {location.server} refused the login: wrong user name or password "
                               "(check the --store URL or LOUPE_STORE)")
    if re.search(r'database ".*" does not exist', text):
        return DatabaseMissing(f"PostgreSQL at {location.server}: the database '{location.database}' does not "
                               "exist; create it (createdb) or fix the --store URL")
    if "permission denied" in text or "not permitted" in text or "pg_hba.conf" in text:
        return DatabaseRefused(f"PostgreSQL at {location.server} does not let this user connect (pg_hba.conf or "
                               "CONNECT permission)")
    if "refused" in text or "no such file or directory" in text:  # the second: no server on a local socket
        reason = "connection refused: is PostgreSQL running and listening there?"
    elif "timeout" in text or "timed out" in text:
        reason = f"no answer within {CONNECT_TIMEOUT_S} s"
    elif "could not translate host name" in text or "name or service not known" in text:
        reason = "unknown host name"
    else:
        reason = "cannot connect"
    return _unreachable(location, reason)


def connection_lost(location: Location) -> DatabaseUnreachable:
    """The server dropped a connection that was open: it was restarted or stopped, or the network was cut."""
    return _unreachable(location, "the connection was lost; try again once the server is back")


def _unreachable(location: Location, reason: str) -> DatabaseUnreachable:
    return DatabaseUnreachable(f"PostgreSQL at {location.server} cannot be reached: {reason}")


def ensure_vector_extension(conn: psycopg.Connection, location: Location) -> None:
    """Create pgvector in the database when it is missing and this user may; otherwise say who must."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
        raise ExtensionMissing(f"PostgreSQL at {location.server} has no pgvector: install the 'vector' extension "
                               "(pgvector 0.8 or later) on the server")
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise ExtensionMissing(f"PostgreSQL at {location.server}: the 'vector' extension is not enabled in the "
                               f"database '{location.database}' and this user may not enable it; ask an "
                               "administrator to run CREATE EXTENSION vector; in that database") from None
    except psycopg.errors.UniqueViolation:  # another process created it at the same moment
        logger.debug("vector extension created concurrently", exc_info=True)


def knowledge_base_names(conn: psycopg.Connection) -> list[str]:
    """The knowledge bases in a database: the schemas named loupe_* that hold Loupe's meta table."""
    rows = conn.execute(
        "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
        "WHERE n.nspname LIKE %s AND c.relname = 'meta' AND c.relkind = 'r' ORDER BY n.nspname",
        (SCHEMA_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    return [name[len(SCHEMA_PREFIX):] for (name,) in rows]


def create_schema(conn: psycopg.Connection, kb: str) -> None:
    """An empty knowledge base: its schema and meta table (the rest comes when a model first opens it)."""
    schema = sql.Identifier(schema_name(kb))
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema_name(kb),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.meta (key text PRIMARY KEY, value text NOT NULL)")
                     .format(schema))


def drop_schema(conn: psycopg.Connection, kb: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_name(kb))))


# The tables of one knowledge base; {dim} is the text model's dimension. Image vectors have no fixed dimension
# here (CLIP may be added later) and are searched exactly: a knowledge base holds far fewer images than chunks.
TABLES = """
CREATE TABLE IF NOT EXISTS state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation bigint NOT NULL DEFAULT 0,   -- bumped by every write: other processes see a change
    chunks bigint NOT NULL DEFAULT 0,       -- BM25's N
    tokens bigint NOT NULL DEFAULT 0        -- BM25's total length (avgdl = tokens / chunks)
);
INSERT INTO state (id) VALUES (true) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS documents (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    path text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    sha256 text NOT NULL UNIQUE,
    size_bytes bigint NOT NULL,
    page_count integer NOT NULL,
    added_at text NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
);
CREATE INDEX IF NOT EXISTS documents_path ON documents (path);
CREATE TABLE IF NOT EXISTS chunks (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal integer NOT NULL,
    page integer NOT NULL,
    heading text,
    text text NOT NULL,
    ocr boolean NOT NULL DEFAULT false,
    tokens integer NOT NULL,
    embedding vector({dim}) NOT NULL,
    sentence_vectors bytea
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, ordinal);
CREATE INDEX IF NOT EXISTS chunks_embedding ON chunks USING hnsw (embedding vector_ip_ops)
    WITH (m = {hnsw_m}, ef_construction = {hnsw_ef_construction});
CREATE TABLE IF NOT EXISTS terms (         -- BM25's postings (the store deletes them with their chunk)
    term text NOT NULL,
    chunk_id bigint NOT NULL,
    tf integer NOT NULL,
    tokens integer NOT NULL                 -- the chunk's length, here so that scoring reads one table
);
CREATE UNIQUE INDEX IF NOT EXISTS terms_postings ON terms (term, chunk_id) INCLUDE (tf, tokens);
CREATE INDEX IF NOT EXISTS terms_chunk ON terms (chunk_id);
CREATE TABLE IF NOT EXISTS blobs (file text PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page integer NOT NULL,
    name text NOT NULL,
    sha256 text NOT NULL,
    file text NOT NULL REFERENCES blobs (file),
    embedding vector
);
CREATE INDEX IF NOT EXISTS images_document ON images (document_id);
CREATE INDEX IF NOT EXISTS images_file ON images (file);
"""


def use_schema(conn: psycopg.Connection, kb: str) -> None:
    """Unqualified names on this connection are the knowledge base's tables, and pgvector's types wherever the
    extension was created (public, or e.g. a managed service's own schema)."""
    (vector_schema,) = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                                    "ON n.oid = e.extnamespace WHERE e.extname = 'vector'").fetchone()
    conn.execute(sql.SQL("SET search_path TO {}, {}").format(sql.Identifier(schema_name(kb)),
                                                             sql.Identifier(vector_schema)))


def create_tables(conn: psycopg.Connection, kb: str, dim: int) -> None:
    """Every table of a knowledge base, in its schema (the connection's search path, use_schema), under a lock so
    that two processes opening a new knowledge base at once do not race on CREATE."""
    create_schema(conn, kb)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema_name(kb),))
        # An index missing here is built now (a bulk load's, after its process died): pgvector builds the HNSW graph
        # far faster while it fits in maintenance_work_mem (64 MB by default: about 25,000 384-d vectors at m 32).
        conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        tables = TABLES.format(dim=int(dim), hnsw_m=HNSW_M, hnsw_ef_construction=HNSW_EF_CONSTRUCTION)
        for statement in tables.split(";"):
            if statement.strip():
                conn.execute(statement)
        upgrade_tables(conn)


def upgrade_tables(conn: psycopg.Connection) -> None:
    """Bring the tables of an older knowledge base to TABLES' layout, checking first: an ALTER TABLE takes a lock
    that every app server's queries would queue behind.
    - Chunk vectors live in their rows (STORAGE PLAIN), not in TOAST, where pgvector's type puts a vector that does
      not fit beside its chunk's text: an exact scan then read three pages a chunk instead of one (128 ms a query
      against 7.5 ms at 10k chunks, docs/BENCHMARKS.md). Rows written earlier keep their TOAST until rewritten.
      (PostgreSQL 16 could declare it in CREATE TABLE; Loupe supports 15.)
    - Postings have no foreign key to their chunk: its check, one per posting (about 80 a chunk), was most of a
      fill's time. The store deletes a chunk's postings itself. Their old primary key (term, chunk_id) goes too:
      terms_postings, built by TABLES on this open, is the same unique index plus tf and the chunk's length."""
    storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                           "AND attname = 'embedding'").fetchone()
    if storage is not None and storage[0] != "p":
        conn.execute("ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE PLAIN")
    outdated = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'terms'::regclass "
                            "AND contype IN ('f', 'p')").fetchall()
    for (name,) in outdated:
        conn.execute(sql.SQL("ALTER TABLE terms DROP CONSTRAINT {}").format(sql.Identifier(name)))


def lock_timeout_error(location: Location) -> Busy:
    return Busy(f"the knowledge base '{location.kb}' is busy: another process is writing to it; try again in a "
                "moment")
