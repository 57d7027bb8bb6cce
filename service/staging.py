"""Upload files on disk: checked names, staging inside a knowledge base's uploads/ folder, and crash recovery.

The folder is the store's local `folder`: the knowledge base itself on the folder backend, this machine's working
folder for a PostgreSQL one (rag.store_api), where an upload only waits for its ingest.

Pure file handling with no models in it, shared by the knowledge bases (recovery when one opens) and the
uploads (staging before an ingest), and by the web layer (the same name and size checks on every surface).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from rag.store_api import KnowledgeBaseStore
from service.errors import ServiceError

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
BACKUP_SUFFIX = ".previous"
_MB = 1024 * 1024


def stage(folder: Path, name: str, source: Path) -> tuple[Path, Path | None]:
    """Copy an upload to folder/name, moving aside a file already there; returns (copy, moved-aside file).
    A crash before the ingest settles leaves both; `recover_uploads` puts them right on the next start."""
    target = inside(folder, name)
    backup = target.with_name(f".{target.name}{BACKUP_SUFFIX}") if target.exists() else None
    if backup is not None:
        os.replace(target, backup)
    shutil.copyfile(source, target)
    return target, backup


def recover_uploads(store: KnowledgeBaseStore) -> None:
    """Settle what a crash during an ingest left in uploads/: a backup whose file is not the committed version
    goes back in place, other backups go, and files no document references (un-ingested bytes) go."""
    folder = (store.folder / UPLOADS_DIR).resolve()
    if not folder.is_dir():
        return
    committed = {Path(d.path).name: d.sha256 for d in store.documents() if Path(d.path).parent == folder}
    for backup in folder.glob(f".*{BACKUP_SUFFIX}"):
        target = backup.with_name(backup.name[1:-len(BACKUP_SUFFIX)])
        if target.name in committed and not _holds(target, committed[target.name]):
            logger.warning("restoring %s: a crash interrupted the ingest of its new version", target.name)
            os.replace(backup, target)
        else:
            backup.unlink(missing_ok=True)
    for path in folder.iterdir():
        if path.is_file() and path.name not in committed:
            logger.warning("removing %s from uploads/: no document references it (an interrupted ingest)",
                           path.name)
            path.unlink(missing_ok=True)


def _holds(path: Path, sha256: str) -> bool:
    """Does the file exist with exactly this content?"""
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest() == sha256


def over_upload_limit(name: str, size: int, max_mb: float) -> str:
    """Why an upload of `size` bytes is refused; empty when it is within the limit (max_upload_mb). One
    wording for every surface: the UI's progress rows, the Gradio API and REST."""
    if size <= int(max_mb * _MB):
        return ""
    return f"{name}: file is {size / _MB:.1f} MB, over the {max_mb:g} MB upload limit (--max-upload-mb)"


def safe_upload_name(name: str) -> str:
    """The name an upload is stored under: the name itself when it is a plain file name, else an error."""
    if not isinstance(name, str) or not name.strip():
        raise ServiceError("refused: the upload has no file name")
    if ("/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 for c in name)
            or Path(name).name != name):
        raise ServiceError(f"{name!r}: refused: a file name must not contain a path or control characters")
    if len(name.encode()) > 200:
        raise ServiceError(f"{name[:40]}…: refused: the file name is longer than 200 bytes")
    return name


def inside(folder: Path, name: str) -> Path:
    """folder/name, checked to stay inside folder once resolved (no traversal, no symlink escape)."""
    folder = folder.resolve()
    target = (folder / safe_upload_name(name)).resolve()
    if target.parent != folder:
        raise ServiceError(f"{name!r}: refused: the name resolves outside the upload folder")
    return target
