"""The service layer's own refusal: something the user asked for that Loupe won't do, and why."""

from __future__ import annotations

from rag.errors import LoupeError


class ServiceError(LoupeError):
    """Something the user asked for that Loupe refuses; the message says why and what to do."""
