"""Open a knowledge base from a --store location: a folder (rag.store) or a PostgreSQL URL (rag.pg_store).

    open_store("indexes/default", model)                                  the folder backend
    open_store("postgresql://loupe:pw@db:5432/loupe", model)              knowledge base "default" in that database
    open_store("postgresql://loupe:pw@db:5432/loupe?kb=manuals", model)   knowledge base "manuals"
    open_store("postgresql://loupe:pw@db:5432/loupe", model, kb="bench")  the same, the name given apart

A database store also needs a local working folder (upload staging, display copies of images): it goes under
`cache_dir`/postgres/<host>-<port>-<database>/<kb>, the same path on every app server that shares a cache setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from rag.catalog import BUSY_TIMEOUT_S
from rag.records import ModelId
from rag.settings import ANN_THRESHOLD, Settings
from rag.store import KnowledgeBase, require_store
from rag.store_api import KnowledgeBaseStore, is_database_url

if TYPE_CHECKING:  # psycopg is needed only with a PostgreSQL store: imported when one is opened
    from rag.pg_connect import Location

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")  # rag.library.NAME_PATTERN's characters


def work_folder(location: Location, cache_dir: Path) -> Path:
    """The local working folder of a database knowledge base."""
    server = _UNSAFE.sub("_", f"{location.host}-{location.port}-{location.database}")
    return Path(cache_dir).expanduser() / "postgres" / server / location.kb


def open_store(location: Path | str, text_model: ModelId, image_model: ModelId | None = None, *,
               kb: str | None = None, cache_dir: Path | None = None, use_gpu: bool = True,
               busy_timeout_s: float = BUSY_TIMEOUT_S, create: bool = True, ann: str = "auto",
               ann_threshold: int = ANN_THRESHOLD) -> KnowledgeBaseStore:
    """The knowledge base at `location`, created when missing (unless `create` is False). `kb` picks a knowledge
    base in a database (it wins over the URL's `kb` parameter); a folder is one knowledge base and takes none.
    `ann` and `ann_threshold` choose a folder store's vector search (rag.vector_index); a database has its own."""
    if is_database_url(location):
        from rag.pg_connect import parse_location
        from rag.pg_store import PgKnowledgeBase

        parsed = parse_location(str(location), kb)
        cache = Path(cache_dir) if cache_dir is not None else Settings().cache_dir
        return PgKnowledgeBase(parsed, text_model, image_model, work_folder=work_folder(parsed, cache),
                               busy_timeout_s=busy_timeout_s, create=create)
    if kb is not None:
        raise ValueError("a folder store is one knowledge base: give its folder, not a kb name")
    if not create:
        require_store(Path(location))
    return KnowledgeBase(Path(location), text_model, image_model, use_gpu, busy_timeout_s=busy_timeout_s, ann=ann,
                         ann_threshold=ann_threshold)


def open_from_settings(settings: Settings, text_model: ModelId, image_model: ModelId | None = None,
                       location: Path | str | None = None, create: bool = True) -> KnowledgeBaseStore:
    """The configured store (or `location`, another knowledge base of the same library) for these models."""
    return open_store(location if location is not None else settings.store, text_model, image_model,
                      cache_dir=settings.cache_dir, use_gpu=settings.device != "cpu", create=create, ann=settings.ann,
                      ann_threshold=settings.ann_threshold)


def open_existing(settings: Settings, text_model_name: str) -> KnowledgeBaseStore:
    """The configured store, which must exist, opened without loading any model: enough to list and delete."""
    if is_database_url(settings.store):
        return open_store(settings.store, ModelId(text_model_name, 0), cache_dir=settings.cache_dir, create=False)
    return KnowledgeBase.open_existing(Path(settings.store), text_model_name, use_gpu=settings.device != "cpu")


def eval_store_location(store: Path | str, folder: Path) -> Path | str:
    """Where `rag eval` keeps a corpus's ingest (rag.evaluation.harness caches it in `folder`): the folder itself;
    or, when the configured store is a database, a knowledge base named after that folder in the database (the
    folder then keeps only the corpus-id map). The build's partial folder and the finished one name the same
    knowledge base: a killed build is completed by the next run, whose ingest skips what is there already."""
    if not is_database_url(store):
        return folder
    from rag.pg_connect import parse_location

    key = folder.name.split(".partial-")[0]
    return parse_location(str(store)).with_kb(f"eval-{_NOT_IN_NAME.sub('_', key)[-43:]}")


def describe(location: Path | str) -> str:
    """The location for messages and logs: a folder's name, or a URL without its password."""
    if is_database_url(location):
        from rag.pg_connect import parse_location

        return parse_location(str(location)).label
    return str(location)
