"""Loupe's APIs: the REST API mounted beside the browser UI under /api, and the named Gradio endpoints.

    POST   /api/ingest              multipart file(s) ("file" or "files"), optional ?kb=NAME
    POST   /api/ask                 JSON {"question", "k", "mode", "kb"} -> the CLI's JSON answer
    GET    /api/documents           ?kb=NAME -> the documents of a knowledge base
    DELETE /api/documents/{id}      ?kb=NAME
    GET    /api/knowledge-bases     the knowledge bases

With --auth, every route wants HTTP Basic credentials or the cookie the UI's login sets; else 401.

The Gradio endpoints (ask, search_images, similar_images, list_documents, ingest, delete_document,
knowledge_bases) are typed functions registered with gr.api inside the UI's Blocks, for gradio_client.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from app_service import LoupeService, ServiceError, safe_upload_name
from rag.settings import Settings
from rag.store import StoreError

MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing allowed on top of the files themselves


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    k: int | None = Field(default=None, ge=1, le=20)
    mode: str | None = None
    kb: str | None = None


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
    router = APIRouter(prefix="/api", tags=["Loupe"], dependencies=[Depends(make_auth_check(settings))])
    limit = int(settings.max_upload_mb * 1024 * 1024)

    @router.get("/knowledge-bases")
    def knowledge_bases() -> dict:
        return {"knowledge_bases": service.kb_names(), "default": service.default_kb}

    @router.get("/documents")
    def list_documents(kb: str | None = None) -> list[dict]:
        return [asdict(d) for d in _call(service.documents, kb)]

    @router.delete("/documents/{document_id}")
    def delete_document(document_id: int, kb: str | None = None) -> dict:
        info = _call(service.delete_document, kb, document_id)
        return {"deleted": asdict(info)}

    @router.post("/ask")
    def ask(request: AskRequest) -> dict:
        return _call(service.ask, request.kb, request.question, request.k, request.mode).to_json()

    @router.post("/ingest")
    async def ingest(request: Request, kb: str | None = None) -> dict:
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit * settings.max_upload_files + MULTIPART_SLACK:
            raise HTTPException(413, f"upload too large: at most {settings.max_upload_files} files of "
                                     f"{settings.max_upload_mb:g} MB each (--max-upload-mb, --max-upload-files)")
        form = await request.form(max_files=settings.max_upload_files + 1)
        files = [f for key in ("file", "files") for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not files:
            raise HTTPException(400, "send the document as a multipart field named 'file'")
        if len(files) > settings.max_upload_files:
            raise HTTPException(413, f"too many files: one upload takes at most {settings.max_upload_files} "
                                     "(--max-upload-files)")
        for upload in files:
            try:
                safe_upload_name(upload.filename or "")
            except ServiceError as error:
                raise HTTPException(400, str(error)) from None
            if (upload.size or 0) > limit:
                raise HTTPException(413, f"{upload.filename}: file is {upload.size / 2**20:.1f} MB, over the "
                                         f"{settings.max_upload_mb:g} MB upload limit (--max-upload-mb)")
        with tempfile.TemporaryDirectory(prefix="loupe-upload-") as folder:
            staged = []
            for index, upload in enumerate(files):
                path = Path(folder) / str(index) / "upload"
                path.parent.mkdir()
                with open(path, "wb") as handle:
                    shutil.copyfileobj(upload.file, handle)
                staged.append((upload.filename, path))
            rows = await run_in_threadpool(_call, service.ingest, kb, staged)
        return {"files": [asdict(r) for r in rows], "documents": len(_call(service.documents, kb))}

    app.include_router(router)


def _call(function, *args):
    """Run a service call, turning the user's mistakes into 4xx answers with the service's message."""
    try:
        return function(*args)
    except (ServiceError, StoreError, ValueError) as error:
        status = 404 if "no document" in str(error) or "no knowledge base" in str(error) else 400
        raise HTTPException(status, str(error)) from None


def add_named_endpoints(service: LoupeService) -> None:
    """The Gradio API for gradio_client: typed functions, no UI."""
    default = service.default_kb

    def ask(question: str, k: int = 5, mode: str = "generate", knowledge_base: str = default) -> dict:
        """Answer a question from the documents: the CLI's JSON (answer, sources, images, grounded)."""
        return _api(service.ask, knowledge_base, question, k, mode).to_json()

    def search_images(query: str, k: int = 8, knowledge_base: str = default) -> list[dict]:
        """Images whose CLIP vector is nearest the text: file, page, name, score."""
        return [_public(r) for r in _api(service.search_images, knowledge_base, query, k)]

    def similar_images(image: gr.FileData, k: int = 8, knowledge_base: str = default) -> list[dict]:
        """Images most similar to the uploaded one: file, page, name, score."""
        data = Path(_file_dict(image)["path"]).read_bytes()
        return [_public(r) for r in _api(service.similar_images, knowledge_base, data, k)]

    def list_documents(knowledge_base: str = default) -> list[dict]:
        """The documents of a knowledge base: id, name, kind, pages, chunks, images, size, date added."""
        return [_public(d) for d in _api(service.documents, knowledge_base)]

    def ingest(files: list[gr.FileData], knowledge_base: str = default) -> list[dict]:
        """Add files; one result per file: status (added, replaced, duplicate, failed) and message."""
        uploads = [(f.get("orig_name") or Path(f["path"]).name, Path(f["path"])) for f in map(_file_dict, files)]
        return [asdict(r) for r in _api(service.ingest, knowledge_base, uploads)]

    def delete_document(document_id: int, knowledge_base: str = default) -> dict:
        """Delete a document by id."""
        return _public(_api(service.delete_document, knowledge_base, document_id))

    def knowledge_bases() -> list[str]:
        """The names of the knowledge bases."""
        return service.kb_names()

    for fn, group in ((ask, "chat"), (search_images, None), (similar_images, None), (list_documents, None),
                      (ingest, "ingest"), (delete_document, None), (knowledge_bases, None)):
        gr.api(fn, api_name=fn.__name__, concurrency_id=group, concurrency_limit=2 if group == "ingest" else 4)


def _public(record) -> dict:
    """A record for gradio_client, without server paths (the client would try to download them)."""
    return {k: v for k, v in asdict(record).items() if k != "path"}


def _file_dict(file) -> dict:
    return file if isinstance(file, dict) else {"path": file.path, "orig_name": file.orig_name}


def _api(function, *args):
    try:
        return function(*args)
    except ValueError as error:  # ServiceError, LibraryError, StoreError's cousins: the user's to fix
        raise gr.Error(str(error)) from None
