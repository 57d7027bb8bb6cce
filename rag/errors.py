"""Loupe's errors: a small hierarchy that each surface (CLI, REST, Gradio) translates in one place.

A `LoupeError` is something the user can act on; its message says what happened and what to do, and it
never holds a server path or a traceback. Anything else that escapes is a bug: the surfaces log it with its
traceback and show a generic line.

    LoupeError (400)            the user's request cannot be done as asked
    ├── NotFound (404)          a document, passage or knowledge base that does not exist
    ├── Conflict (409)          clashes with the current state (a name taken, a store built by another model)
    ├── TooLarge (413)          over a size, length or count limit
    ├── Forbidden (403)         refused on principle (a cross-site request, a file Loupe did not receive)
    ├── Busy (503)              try again later (the queue is full, another process holds the store)
    └── ModelServerError (502)  the model server behind Loupe failed or could not be reached
"""

from __future__ import annotations


class LoupeError(ValueError):
    """A problem the user can act on. `status` is the HTTP status REST answers with."""

    status = 400


class NotFound(LoupeError):
    status = 404


class Conflict(LoupeError):
    status = 409


class TooLarge(LoupeError):
    status = 413


class Forbidden(LoupeError):
    status = 403


class Busy(LoupeError):
    status = 503


class ModelServerError(LoupeError):
    """The model server failed or could not be reached: a gateway's error, not the user's request."""

    status = 502
