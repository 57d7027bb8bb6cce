"""Opening the configured models and store for a command line run: the commands of rag.cli and `python -m rag
explore ...` share these (a module of their own, so Explore imports no private helper of the CLI, which imports
Explore to build its parser)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rag.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module to build its parser: no model or store code for that
    from rag.components import Models
    from rag.store_api import KnowledgeBaseStore


def reach_store(settings: Settings) -> None:
    """A PostgreSQL server that cannot be reached (or refuses the login) says so now, in one line, rather than after
    the models have loaded."""
    from rag.library import library_for
    from rag.store_api import is_database_url

    if is_database_url(settings.store):
        library_for(settings).names()


def load_models(settings: Settings, with_images: bool = True) -> Models:
    """The models the settings name; when CLIP was asked for and did not load, stderr says why in one line."""
    from rag.components import Models

    reach_store(settings)
    models = Models.load(settings, with_images)
    if models.clip_status and with_images:
        print(models.clip_status, file=sys.stderr)
    return models


def open_without_models(settings: Settings) -> KnowledgeBaseStore:
    """The configured store, opened to read or delete: no model is loaded (about 1 s instead of 10)."""
    from rag.embedder import recorded_model_name
    from rag.store_factory import open_existing

    return open_existing(settings, recorded_model_name(settings))


def open_existing_store(models: Models, settings: Settings) -> KnowledgeBaseStore:
    """The configured store for these models; an error when it does not exist yet (never an empty new one)."""
    from rag.store import require_store
    from rag.store_api import is_database_url

    if is_database_url(settings.store):  # opened with create=False: a missing knowledge base is an error
        return models.open_store(create=False)
    require_store(settings.store)
    return models.open_store()
