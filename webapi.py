"""Loupe's web surface: the REST API mounted beside the browser UI under /api, the named Gradio endpoints,
and the guards every request passes (cross-site refusal, body size, Content-Security-Policy).

    POST   /api/ingest              multipart file(s) ("file" or "files"), optional ?kb=NAME
    POST   /api/ask                 JSON {"question", "k", "mode", "kb"} -> the CLI's JSON answer
    GET    /api/documents           ?kb=NAME -> the documents of a knowledge base
    DELETE /api/documents/{id}      ?kb=NAME
    GET    /api/knowledge-bases     the knowledge bases

With --auth, every route wants HTTP Basic credentials or the cookie the UI's login sets; else 401.

The Gradio endpoints (ask, search_images, similar_images, list_documents, ingest, delete_document,
knowledge_bases) are typed functions registered with gr.api inside the UI's Blocks, for gradio_client.

Errors have one translator per surface: `RestRoute` for REST (a LoupeError's own status, anything
else a logged 500) and `user_message` / `gradio_error` for Gradio (the LoupeError's message, anything else a
logged generic line). Neither ever shows an unexpected exception's text, which may hold server paths.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import glob
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gradio as gr
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from gradio.utils import get_upload_folder
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.errors import Forbidden, LoupeError, TooLarge
from rag.settings import Settings
from service import LoupeService, over_upload_limit, safe_upload_name

logger = logging.getLogger(__name__)

MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing allowed on top of the files themselves
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_RECEIVED = "refused: Loupe only reads files uploaded to it"
# Images, media and connections stay on this server: a document's text can't make the browser call anyone.
# Gradio's page runs inline scripts and styles, so those stay allowed.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
                           "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                           "media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
                           "worker-src 'self' blob:; frame-src 'self'; object-src 'none'; base-uri 'self'; "
                           "form-action 'self'")


class AskRequest(BaseModel):
    question: str = Field(min_length=1)  # its length cap is the service's, shared by every surface
    k: int | None = Field(default=None, ge=1, le=20)
    mode: str | None = None
    kb: str | None = None


# --- errors: one translator per surface -------------------------------------------------------------
def user_message(error: BaseException, doing: str) -> str:
    """What a client may read about an error: a LoupeError's own message, else a generic line (logged)."""
    if isinstance(error, LoupeError):
        return str(error)
    logger.error("Loupe failed to %s", doing, exc_info=error)
    return f"Loupe failed to {doing} (see the server log)"


def gradio_error(error: BaseException, doing: str) -> gr.Error:
    return gr.Error(user_message(error, doing))


def _api(doing: str, function: Callable, *args: Any) -> Any:
    """Run a service call for a Gradio endpoint; errors leave as gr.Error with a message fit for the client."""
    try:
        return function(*args)
    except Exception as error:
        raise gradio_error(error, doing) from None


def invalid_request(error: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: "invalid request: question: Field required; k: Input should be a
    valid integer"."""
    def place(location: Sequence[Any]) -> str:
        return ".".join(str(part) for part in location[1:]) or "body"  # location[0] is "body" or "query"

    return "invalid request: " + "; ".join(f"{place(e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                                           for e in error.errors())


class RestRoute(APIRoute):
    """Every REST route answers a LoupeError with its own status and message, and anything unexpected with a
    logged 500 that says no more (its text may hold server paths). A request that fails FastAPI's validation gets a
    400 with one line that names the field; FastAPI's other errors pass as they are."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:  # FastAPI's 422 with a list: the documented 400 and one line
                return JSONResponse({"detail": invalid_request(error)}, status_code=400)
            except (HTTPException, ClientDisconnect, _BodyTooLarge):
                raise  # FastAPI's and the server's own: answered by their handlers and middleware
            except LoupeError as error:
                return JSONResponse({"detail": str(error)}, status_code=error.status)
            except Exception:
                logger.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)

        return translated


# --- files the Gradio API and the UI may read ---------------------------------------------------------
class ReceivedFiles:
    """Files Gradio's own upload route received: the only files a Gradio endpoint or UI event may read.

    A client can name any server path in a file argument (a dict without Gradio's `meta` skips Gradio's own
    check), so every entry point that takes a file passes it through `path` or `read` first."""

    def __init__(self, blocks: gr.Blocks, max_mb: float) -> None:
        self.blocks = blocks
        self.max_mb = max_mb  # --max-upload-mb
        self.max_bytes = int(max_mb * 2**20)

    def path(self, file: Any) -> Path:
        """The checked path of an uploaded file: registered by the upload route, a regular file (not a link)
        inside Gradio's upload folder, within the size limit. Anything else is Forbidden or TooLarge."""
        given = _path_of(file)
        if not given or os.path.abspath(given) not in self._registered():
            raise Forbidden(NOT_RECEIVED)
        try:
            info = os.lstat(given)
        except OSError:
            raise Forbidden(NOT_RECEIVED) from None
        folder = Path(get_upload_folder()).resolve()
        resolved = Path(given).resolve()
        if not stat.S_ISREG(info.st_mode) or not resolved.is_relative_to(folder):
            raise Forbidden(NOT_RECEIVED)
        if too_large := over_upload_limit(resolved.name, info.st_size, self.max_mb):
            raise TooLarge(too_large)
        return resolved

    def read(self, file: Any) -> bytes:
        """The bytes of an uploaded file, at most the limit (a file that grew since the check is refused)."""
        path = self.path(file)
        with open(path, "rb") as handle:
            data = handle.read(self.max_bytes + 1)
        if too_large := over_upload_limit(path.name, len(data), self.max_mb):  # it grew since the check
            raise TooLarge(too_large)
        return data

    def discard(self, paths: Iterable[Path]) -> None:
        """Delete Gradio's copies once Loupe has its own: a deleted document must not stay downloadable."""
        for path in paths:
            path.unlink(missing_ok=True)
            self.blocks.upload_file_set.discard(str(path))
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # Gradio's per-upload folder, when nothing else is in it

    @staticmethod
    def remove_cached_copies(name: str) -> None:
        """Delete the copies Gradio's server made of a file it served (its cache keeps them as <hash>/<name>)."""
        for copy in Path(get_upload_folder()).glob(f"*/{glob.escape(name)}"):
            copy.unlink(missing_ok=True)

    def _registered(self) -> set[str]:
        return {os.path.abspath(p) for p in list(self.blocks.upload_file_set)}


def _path_of(file: Any) -> str:
    if isinstance(file, (str, Path)):
        return str(file)
    if isinstance(file, dict):
        return str(file.get("path") or "")
    return str(getattr(file, "path", "") or "")


def _orig_name(file: Any, path: Path) -> str:
    name = file.get("orig_name") if isinstance(file, dict) else getattr(file, "orig_name", None)
    return name or path.name


# --- guards on every request ------------------------------------------------------------------------
class CrossSiteGuard:
    """ASGI middleware: refuse state-changing requests another site's page sent (the user's browser carries
    them to 127.0.0.1 as well). Requests without Origin / Sec-Fetch-Site (curl, gradio_client) pass."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {origin.lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            reason = self.refusal(_headers(scope))
            if reason:
                logger.warning("refused a cross-site %s %s: %s", scope["method"], scope["path"], reason)
                await _send_json(send, 403, f"refused: {reason}")
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: dict[str, str]) -> str:
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "a page on another site sent this request"
        origin = headers.get("origin")
        if origin is None:
            return ""
        own_host = headers.get("x-forwarded-host") or headers.get("host") or ""
        if origin.lower().rstrip("/") in self.allowed or (urlsplit(origin).netloc.lower() == own_host.lower() != ""):
            return ""
        return f"requests from {origin[:100]} are not allowed (--allowed-origins)"


class BodyLimit:
    """ASGI middleware: count a request body's bytes as they arrive (chunked bodies declare no length) and
    answer 413 as soon as they pass the limit, before the rest is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, self.message())
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, self.message())

    def message(self) -> str:
        return f"request body too large: over {self.max_bytes / 2**20:.1f} MB (--max-upload-mb, --max-upload-files)"


class _BodyTooLarge(Exception):
    """Raised inside a request's receive() to stop reading a body that is over the limit."""


class SecurityHeaders:
    """ASGI middleware: a Content-Security-Policy (and no MIME sniffing) on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                         (b"x-content-type-options", b"nosniff")]
                message["headers"] = [*message.get("headers", []), *[h for h in extra if h[0] not in names]]
            await send(message)

        await self.app(scope, receive, with_headers)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def max_request_bytes(settings: Settings) -> int:
    return settings.max_upload_bytes * settings.max_upload_files + MULTIPART_SLACK


def app_kwargs(settings: Settings) -> dict[str, Any]:
    """What Gradio's FastAPI app is built with: the guards on every request. They must be there from the
    start: Starlette takes no middleware once the server runs."""
    return {"middleware": [Middleware(SecurityHeaders), Middleware(CrossSiteGuard, allowed_origins=settings.origins),
                           Middleware(BodyLimit, max_bytes=max_request_bytes(settings))]}


# --- REST -------------------------------------------------------------------------------------------
def credentials_ok(header: str, expected: str) -> bool:
    """Does an 'Authorization: Basic ...' header carry the 'user:password' in `expected`?"""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given.encode(), expected.encode())


def make_auth_check(settings: Settings):
    def require_auth(request: Request) -> None:
        if not settings.auth:
            return
        if credentials_ok(request.headers.get("authorization", ""), settings.auth):
            return
        app = request.app  # the Gradio app: a browser that logged in to the UI carries its access token
        cookie_id = getattr(app, "cookie_id", None)
        token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{cookie_id}")
        if token and getattr(app, "tokens", {}).get(token):
            return
        raise HTTPException(401, "authentication required: HTTP Basic user:password (--auth)",
                            headers={"WWW-Authenticate": 'Basic realm="Loupe"'})

    return require_auth


def add_rest_routes(app: FastAPI, service: LoupeService) -> None:
    settings = service.settings
    router = APIRouter(prefix="/api", tags=["Loupe"], dependencies=[Depends(make_auth_check(settings))],
                       route_class=RestRoute)

    @router.get("")
    def index() -> dict:
        """What the start-up line points to: this API's endpoints, and the OpenAI-compatible one beside it."""
        endpoints = [f"{method} {route.path}" for route in router.routes if isinstance(route, APIRoute)
                     for method in sorted(route.methods) if route.path != "/api"]
        return {"endpoints": endpoints, "openai_compatible": ["GET /v1/models", "POST /v1/chat/completions"],
                "documentation": "docs/APP.md in the Loupe repository"}

    @router.get("/knowledge-bases")
    def knowledge_bases() -> dict:
        return {"knowledge_bases": service.kb_names(), "default": service.default_kb}

    @router.get("/documents")
    def list_documents(kb: str | None = None) -> list[dict]:
        return [_public(d) for d in service.documents(kb)]

    @router.delete("/documents/{document_id}")
    def delete_document(document_id: int, kb: str | None = None) -> dict:
        return {"deleted": _public(service.delete_document(kb, document_id))}

    @router.post("/ask")
    def ask(request: AskRequest) -> dict:
        return service.ask(request.kb, request.question, request.k, request.mode).to_json()

    @router.post("/ingest")
    async def ingest(request: Request, kb: str | None = None) -> dict:
        form = await request.form(max_files=settings.max_upload_files + 1)
        files = [f for key in ("file", "files") for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not files:
            raise LoupeError("send the document as a multipart field named 'file'")
        if len(files) > settings.max_upload_files:
            raise TooLarge(f"too many files: one upload takes at most {settings.max_upload_files} "
                           "(--max-upload-files)")
        for upload in files:
            safe_upload_name(upload.filename or "")
            if too_large := over_upload_limit(upload.filename, upload.size or 0, settings.max_upload_mb):
                raise TooLarge(too_large)
        with tempfile.TemporaryDirectory(prefix="loupe-upload-") as folder:
            staged = []
            for index, upload in enumerate(files):
                path = Path(folder) / str(index) / "upload"
                path.parent.mkdir()
                with open(path, "wb") as handle:
                    shutil.copyfileobj(upload.file, handle)
                staged.append((upload.filename, path))
            rows = await run_in_threadpool(service.ingest, kb, staged)
        return {"files": [asdict(r) for r in rows], "documents": len(service.documents(kb))}

    app.include_router(router)


# --- the named Gradio endpoints ---------------------------------------------------------------------
def add_named_endpoints(service: LoupeService, received: ReceivedFiles) -> None:
    """The Gradio API for gradio_client: typed functions, no UI."""
    default = service.default_kb
    default_mode = service.settings.answer_mode

    def ask(question: str, k: int = 5, mode: str = default_mode, knowledge_base: str = default) -> dict:
        """Answer a question from the documents: the CLI's JSON (answer, sources, images, grounded)."""
        return _api("answer", service.ask, knowledge_base, question, k, mode).to_json()

    def search_images(query: str, k: int = 8, knowledge_base: str = default) -> list[dict]:
        """Images whose CLIP vector is nearest the text: file, page, name, score."""
        return [_public(r) for r in _api("search images", service.search_images, knowledge_base, query, k)]

    def similar_images(image: gr.FileData, k: int = 8, knowledge_base: str = default) -> list[dict]:
        """Images most similar to the uploaded one: file, page, name, score."""
        data = _api("read the image", received.read, image)
        return [_public(r) for r in _api("search images", service.similar_images, knowledge_base, data, k)]

    def list_documents(knowledge_base: str = default) -> list[dict]:
        """The documents of a knowledge base: id, name, kind, pages, chunks, images, size, date added."""
        return [_public(d) for d in _api("list documents", service.documents, knowledge_base)]

    def ingest(files: list[gr.FileData], knowledge_base: str = default) -> list[dict]:
        """Add files; one result per file: status (added, replaced, duplicate, failed) and message."""
        paths = [_api("read the upload", received.path, f) for f in files]
        uploads = [(_orig_name(f, path), path) for f, path in zip(files, paths)]
        try:
            return [asdict(r) for r in _api("add the files", service.ingest, knowledge_base, uploads)]
        finally:
            received.discard(paths)

    def delete_document(document_id: int, knowledge_base: str = default) -> dict:
        """Delete a document by id."""
        return _public(_api("delete the document", service.delete_document, knowledge_base, document_id))

    def knowledge_bases() -> list[str]:
        """The names of the knowledge bases."""
        return service.kb_names()

    for fn, group in ((ask, "chat"), (search_images, None), (similar_images, None), (list_documents, None),
                      (ingest, "ingest"), (delete_document, None), (knowledge_bases, None)):
        limit = {"ingest": 2, "chat": service.chat_concurrency}.get(group, 4)
        gr.api(fn, api_name=fn.__name__, concurrency_id=group, concurrency_limit=limit)


def _public(record) -> dict:
    """A record for clients, without server paths."""
    return {k: v for k, v in asdict(record).items() if k != "path"}
