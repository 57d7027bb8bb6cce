"""What Loupe's clients of OpenAI-compatible servers (the generator, the embedder) share: how a failure reads.

The user reads the server's URL, what went wrong (the HTTP status and the server's own short message) and the
flag or variable that fixes it; never the key, even when the server echoes it.
"""

from __future__ import annotations

import logging
import math
import re

import openai

from rag.errors import LoupeError, ModelServerError

logger = logging.getLogger(__name__)

MAX_SERVER_TEXT = 200  # characters of a server's own error message quoted to the user
CHARS_PER_TOKEN = 4
_PIECES = re.compile(r"\w+|[^\w\s]")


def approximate_tokens(text: str) -> int:
    """A token count without the server's tokenizer, which no server reveals: every run of letters or digits counts
    a token per 4 characters (rounded up), every other visible character one token. English comes out a little
    above what byte-pair and word-piece tokenizers count (about 4 characters a token), so what this count lets
    through fits."""
    return sum(math.ceil(len(p) / CHARS_PER_TOKEN) if p[0].isalnum() or p[0] == "_" else 1
               for p in _PIECES.findall(text))


class ServerClient:
    """A mixin: its class names the kind of server and the flags; the instance has base_url, name (the model),
    _key and timeout_s."""

    what = "The server"
    url_flag = model_flag = key_variable = ""
    timeout_note = ""  # a setting that bounds the wait, named after the timeout
    base_url: str
    name: str
    _key: str
    timeout_s: float

    def _translated(self, error: openai.APIError, started: bool = False) -> LoupeError:
        """The LoupeError the user reads for a failed call; `started`: the server had begun to answer."""
        where = f"{self.what} at {self.base_url}"
        if isinstance(error, openai.APITimeoutError):
            logger.warning("%s timed out (model %s)", self.base_url, self.name)
            note = f" ({self.timeout_note})" if self.timeout_note else ""
            return ModelServerError(f"{where} did not answer within {self.timeout_s:g} s{note}.")
        if isinstance(error, openai.APIConnectionError) and started:
            logger.warning("%s dropped the connection in mid-answer (model %s)", self.base_url, self.name)
            return ModelServerError(f"{where} dropped the connection in the middle of the answer.")
        if isinstance(error, openai.APIConnectionError):
            logger.warning("%s could not be reached (model %s)", self.base_url, self.name)
            return ModelServerError(f"{where} could not be reached: is it running? ({self.url_flag})")
        status = getattr(error, "status_code", None)
        logger.warning("%s answered HTTP %s (model %s)", self.base_url, status, self.name)
        said = self._server_text(error)
        if (special := self._status_error(status, where, said)) is not None:
            return special
        if status in (401, 403):  # its message may quote part of the key: not shown
            return ModelServerError(f"{where} refused the key (HTTP {status}): check {self.key_variable}.")
        if status == 404:
            return ModelServerError(f"{where} has no model {self.name!r} (HTTP 404): check {self.model_flag}. "
                                    f"{said}".strip())
        return ModelServerError(f"{where} failed (HTTP {status}) for model {self.name!r}. {said}".strip())

    def _status_error(self, status: int | None, where: str, said: str) -> LoupeError | None:
        """A kind of server's own reading of an HTTP status (None: the common one)."""
        return None

    def _server_text(self, error: openai.APIError) -> str:
        """The server's own message, short, with the key blanked out should the server echo it."""
        text = " ".join(str(error.message or "").split())[:MAX_SERVER_TEXT]
        return text.replace(self._key, "***") if self._key else text
