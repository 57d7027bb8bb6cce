"""Small pieces of plain English shared by the messages of every surface."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """'1 page', '2 pages': a count with its noun in the right number."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
