"""Knowledge bases as folders under one root: names are checked, nothing escapes the root."""

from __future__ import annotations

import pytest

from rag.library import MARKER, Library, LibraryError, check_name
from rag.store import CATALOG_FILE


@pytest.fixture
def library(tmp_path) -> Library:
    return Library.for_store(tmp_path / "indexes" / "default")


def test_the_store_is_the_default_and_others_sit_beside_it(library, tmp_path):
    assert library.root == (tmp_path / "indexes").resolve()
    assert library.names() == ["default"]
    assert library.path("default") == (tmp_path / "indexes" / "default").resolve()
    folder = library.create("work_2024")
    assert folder == library.root / "work_2024" and (folder / MARKER).exists()
    library.create("alpha")
    assert library.names() == ["default", "alpha", "work_2024"]  # default first, then sorted
    assert library.exists("alpha") and not library.exists("beta")


def test_folders_that_are_not_knowledge_bases_are_not_listed(library):
    library.root.mkdir(parents=True)
    (library.root / "random-folder").mkdir()
    (library.root / "conversations.sqlite3").write_text("")
    (library.root / "old").mkdir()
    (library.root / "old" / CATALOG_FILE).write_text("")
    assert library.names() == ["default", "old"]


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "a\\b", "", " ", ".hidden", "-dash", "x" * 49, "é", "a b",
                                  "/etc", "a\x00b"])
def test_names_that_could_leave_the_root_or_confuse_are_refused(library, name):
    with pytest.raises(LibraryError, match="invalid knowledge base name"):
        library.create(name)
    with pytest.raises(LibraryError):
        library.path(name)
    assert not library.root.exists() or list(library.root.iterdir()) == []


def test_create_twice_and_delete(library):
    library.create("notes")
    with pytest.raises(LibraryError, match="already exists"):
        library.create("notes")
    (library.path("notes") / "uploads").mkdir()
    (library.path("notes") / "uploads" / "a.txt").write_text("x")
    library.delete("notes")
    assert not library.path("notes").exists()
    assert library.names() == ["default"]
    with pytest.raises(LibraryError, match="no knowledge base named"):
        library.delete("notes")


def test_the_default_cannot_be_deleted_nor_created(library):
    with pytest.raises(LibraryError, match="default knowledge base"):
        library.delete("default")
    with pytest.raises(LibraryError, match="already exists"):
        library.create("default")


def test_a_non_empty_foreign_folder_is_not_taken_over(library):
    (library.root / "photos").mkdir(parents=True)
    (library.root / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(LibraryError, match="not an empty knowledge base"):
        library.create("photos")
    with pytest.raises(LibraryError, match="no knowledge base"):
        library.delete("photos")  # never rmtree a folder that isn't ours
    assert (library.root / "photos" / "cat.jpg").exists()


def test_check_name_returns_the_name():
    assert check_name("Project-7_b") == "Project-7_b"
