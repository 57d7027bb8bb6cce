"""Turn what a user typed (files, folders, globs) into the files to ingest."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from ingest.parsed import IngestError


def expand_paths(arguments: Iterable[str | Path], suffixes: frozenset[str]) -> tuple[list[Path], list[IngestError]]:
    """Files named directly are kept whatever their type (so an unsupported one gets its own clear error);
    folders are walked recursively and globs expanded, keeping supported types and skipping hidden files."""
    files: list[Path] = []
    errors: list[IngestError] = []
    seen: set[Path] = set()

    def keep(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            files.append(resolved)

    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_file():
            keep(path)
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and child.suffix.lower() in suffixes and not hidden:
                    keep(child)
        elif glob.has_magic(str(argument)):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            matched = [m for m in matches if m.is_file() and m.suffix.lower() in suffixes]
            if not matched:
                errors.append(IngestError(argument, "the pattern matches no supported file"))
            for match in matched:
                keep(match)
        else:
            errors.append(IngestError(argument, "no such file or folder"))
    return files, errors
