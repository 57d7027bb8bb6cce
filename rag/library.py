"""Knowledge bases by name: list, create, find and delete them, in folders or in one PostgreSQL database.

Folders (`Library`): the root is the parent of the configured store (by default PROJECT_ROOT/"indexes"), and the
configured store is the default knowledge base. Other knowledge bases are sibling folders holding a catalog.

A database (`DatabaseLibrary`, for a `postgresql://` store): each knowledge base is a schema (rag.pg_connect); the
default is the URL's `kb` ("default" when absent), the others are the database's other Loupe schemas. Its `root`
is the local working folder of this machine (conversations, upload staging, display copies of images).

Names are plain words (letters, digits, '-' and '_'), so a name can never point outside the root or quote SQL.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rag.errors import Conflict, LoupeError, NotFound
from rag.settings import Settings
from rag.store import CATALOG_FILE
from rag.store_api import is_database_url

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")  # used with fullmatch: "$" accepts "\n"
MARKER = ".loupe-kb"  # written by create(), so a new knowledge base is listed before its catalog exists
NAME_RULE = "1-48 characters: letters, digits, '-' and '_', starting with a letter or digit"


class LibraryError(LoupeError):
    """A knowledge-base name or operation the library refuses; the message says why."""


class KnowledgeBaseNotFound(LibraryError, NotFound):
    pass


class KnowledgeBaseExists(LibraryError, Conflict):
    pass


class _KnowledgeBaseNames:
    """What both libraries derive from `names()`."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        try:
            return name in self.names()
        except LibraryError:
            return False


class Library(_KnowledgeBaseNames):
    def __init__(self, root: Path, default: str = "default", default_folder: Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.default = default
        self._default_folder = Path(default_folder).expanduser().resolve() if default_folder else self.root / default

    @classmethod
    def for_store(cls, store: Path) -> Library:
        """The library whose default knowledge base is `store` (its folder name is the default's name)."""
        store = Path(store).expanduser().resolve()
        return cls(store.parent, store.name, store)

    def names(self) -> list[str]:
        """The default first, then every other folder under the root that holds a catalog, sorted."""
        others = []
        if self.root.is_dir():
            others = sorted(p.name for p in self.root.iterdir()
                            if p.is_dir() and p.name != self.default and NAME_PATTERN.fullmatch(p.name)
                            and _is_knowledge_base(p))
        return [self.default, *others]

    def path(self, name: str) -> Path:
        """The folder of knowledge base `name`; raises LibraryError for a name that is not allowed."""
        if name == self.default:
            return self._default_folder
        check_name(name)
        folder = (self.root / name).resolve()
        if folder.parent != self.root:  # belt and braces: the pattern already rules this out
            raise LibraryError(f"knowledge base name {name!r} points outside the knowledge-base folder")
        return folder

    def create(self, name: str) -> Path:
        """Make a new, empty knowledge-base folder; the catalog appears when the store first opens it."""
        folder = self.path(name)
        if name == self.default or _is_knowledge_base(folder):
            raise KnowledgeBaseExists(f"a knowledge base named {name!r} already exists")
        if folder.exists() and any(folder.iterdir()):
            raise KnowledgeBaseExists(f"a folder named {name!r} exists and is not an empty knowledge base; "
                                      "choose another name")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).touch()
        return folder

    def delete(self, name: str) -> None:
        """Remove a knowledge base and every file in it. The default one is kept (it is the configured store)."""
        if name == self.default:
            raise LibraryError(f"{name!r} is the default knowledge base (the --store folder); it cannot be deleted")
        folder = self.path(name)
        if not _is_knowledge_base(folder):
            raise KnowledgeBaseNotFound(f"no knowledge base named {name!r}")
        shutil.rmtree(folder)


class DatabaseLibrary(_KnowledgeBaseNames):
    """The knowledge bases of one PostgreSQL database; `path(name)` is the URL that opens one."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        from rag.pg_connect import parse_location
        from rag.store_factory import work_folder

        self.location = parse_location(url)
        self.default = check_name(self.location.kb)
        self.root = work_folder(self.location, cache_dir).parent

    def _connection(self):
        from rag.pg_connect import connect

        return connect(self.location)

    def names(self) -> list[str]:
        """The default first, then every other knowledge base in the database, sorted."""
        from rag.pg_connect import knowledge_base_names

        with self._connection() as conn:
            others = [n for n in knowledge_base_names(conn) if n != self.default and NAME_PATTERN.fullmatch(n)]
        return [self.default, *others]

    def path(self, name: str) -> str:
        """The URL of knowledge base `name` (it holds the password: never show it); LibraryError for a bad name."""
        return self.location.with_kb(name if name == self.default else check_name(name))

    def create(self, name: str) -> str:
        """An empty knowledge base: its schema; the tables come when the store first opens it with a model."""
        from rag.pg_connect import create_schema

        url = self.path(name)
        if self.exists(name):
            raise KnowledgeBaseExists(f"a knowledge base named {name!r} already exists")
        with self._connection() as conn:
            create_schema(conn, name)
        return url

    def delete(self, name: str) -> None:
        """Drop a knowledge base's schema with everything in it. The default one is kept."""
        from rag.pg_connect import drop_schema

        if name == self.default:
            raise LibraryError(f"{name!r} is the default knowledge base (the --store URL's); it cannot be deleted")
        self.path(name)
        if not self.exists(name):
            raise KnowledgeBaseNotFound(f"no knowledge base named {name!r}")
        with self._connection() as conn:
            drop_schema(conn, name)
        shutil.rmtree(self.root / name, ignore_errors=True)  # this machine's working copy


def library_for(settings: Settings) -> Library | DatabaseLibrary:
    """The library of the configured store: folders beside it, or the knowledge bases of its database."""
    if is_database_url(settings.store):
        return DatabaseLibrary(str(settings.store), settings.cache_dir)
    return Library.for_store(settings.store)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LibraryError(f"invalid knowledge base name {name!r}: use {NAME_RULE}")
    return name


def _is_knowledge_base(folder: Path) -> bool:
    return (folder / CATALOG_FILE).exists() or (folder / MARKER).exists()
