"""Loupe as an OpenAI-compatible chat server, so that any chat client (Open WebUI, the `openai` library, ...)
can talk to a knowledge base.

    GET  /v1/models              the models: `loupe:<knowledge base>` for each knowledge base, and PLAIN_MODEL
    POST /v1/chat/completions    {"model", "messages", "stream", "max_tokens"} -> a chat completion, or with
                                 "stream": true Server-Sent Events `data: {chunk}` ending with `data: [DONE]`
    POST /v1/embeddings          {"model", "input": str | [str], "encoding_format"} -> {"data": [{"embedding",
                                 "index"}], "model", "usage"}: Loupe's text embedder, for other tools

`loupe:<kb>` answers the last user message from that knowledge base as the chat does: the earlier messages
rewrite a follow-up (rag.followups), then retrieval, the grounding check and [n] citations in the text. The
sources come in a top-level field `sources` (the shape of `ask --json`), in the final chunk when streaming, and
`searched` says what was searched when a follow-up was rewritten. Loupe's own prompt is used: a client's system
message does not reach the model. PLAIN_MODEL hands the messages as they are to Loupe's generator (no
retrieval), so another Loupe, or anything else, can use it as a model server.

Sampling options (temperature, top_p, ...) are accepted and ignored: answers are greedy. max_tokens may lower the
answer's length, never raise it past --max-new-tokens.

Each completion carries OpenAI's `usage` (prompt_tokens, completion_tokens, total_tokens); a stream carries it, as
OpenAI's does, in one last chunk with no choices when the request asks with "stream_options": {"include_usage":
true}. Tokens are counted with the generator's tokenizer (the local backend; the prompt with its chat template),
else approximately (a remote server does not reveal its tokenizer). For `loupe:<kb>` the prompt counted is the
messages the client sent, not the passages Loupe adds to them.

The routes sit under the same auth as /api (HTTP Basic or the UI's cookie; an OpenAI client may also send the
"user:password" of --auth as its API key, which arrives as a Bearer token), and behind the guards that wrap the
whole app (cross-site refusal, body size). Errors come in OpenAI's shape, {"error": {"message", "type", ...}},
with the status of webapi's translator (a LoupeError's own; anything else a logged 500).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.answering import Answer
from rag.conversations import Turn
from rag.embedder import check_texts
from rag.errors import LoupeError, NotFound, TooLarge
from rag.followups import Rewrite, rewrite
from rag.generator import Generator, Message
from rag.settings import Settings
from service import LoupeService
from webapi import RestRoute, make_auth_check, user_message

logger = logging.getLogger(__name__)

PLAIN_MODEL = "loupe-generator"
RAG_PREFIX = "loupe:"
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 20_000  # an earlier answer may be long; the question itself has the tighter question cap
Role = Literal["system", "developer", "user", "assistant"]
# /v1/embeddings: the model name it answers to (besides the text model's own), and the bounds of a request. Each
# input is cut at the model's window as it is embedded (as OpenAI-compatible servers such as text-embeddings-
# inference and Ollama do by default); past MAX_EMBED_CHARS it is refused before any work.
EMBED_MODEL = "loupe-embedder"
MAX_EMBED_INPUTS = 512
MAX_EMBED_CHARS = 20_000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # Open WebUI marks the last part with "cache_control"
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # "name" and the like: accepted, unused
    role: Role
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, user, ...: accepted, ignored
    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # "user": accepted, unused
    model: str
    input: str | list[str]  # token arrays (lists of ints) are not accepted: the server tokenizes
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


# --- errors in OpenAI's shape -----------------------------------------------------------------------
def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 403: "permission_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                        status_code=status, headers=headers)


class OpenAIRoute(RestRoute):
    """webapi's translator (a LoupeError's status and message, a logged 500 for anything else), answered in
    OpenAI's error shape; a malformed request is a 400 (webapi.invalid_request), as OpenAI's own API answers it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as error:  # the auth check's 401
                return openai_error(error.status_code, str(error.detail), error.headers)
            if response.status_code >= 400 and isinstance(response, JSONResponse):
                return openai_error(response.status_code, json.loads(response.body)["detail"])
            return response

        return shaped


def make_openai_auth_check(settings: Settings) -> Callable[[Request], None]:
    """The /api check, plus the --auth "user:password" as a Bearer token: what OpenAI clients send as a key."""
    basic_or_cookie = make_auth_check(settings)

    def require_auth(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if settings.auth and scheme.lower() == "bearer" and secrets.compare_digest(
                token.strip().encode(), settings.auth.encode()):
            return
        basic_or_cookie(request)

    return require_auth


# --- the request -------------------------------------------------------------------------------------
def message_texts(request: ChatRequest) -> list[dict[str, str]]:
    """The messages as role and text; refused when a part is not text, a message is too long, or the last one
    is not the user's."""
    messages = []
    for index, message in enumerate(request.messages):
        text = _text_of(message, index)
        if len(text) > MAX_MESSAGE_CHARS:
            raise TooLarge(f"messages[{index}] is {len(text):,} characters long; the limit is "
                           f"{MAX_MESSAGE_CHARS:,}")
        # chat templates know "system", not OpenAI's newer name for it
        messages.append({"role": "system" if message.role == "developer" else message.role, "content": text})
    if messages[-1]["role"] != "user":
        raise LoupeError("the last message must be the user's question (role 'user')")
    return messages


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise LoupeError(f"messages[{index}]: Loupe reads text only, not a {part.type!r} part")
        texts.append(part.text)
    return "\n".join(texts)


def knowledge_base_of(model: str, service: LoupeService) -> str | None:
    """The knowledge base a model name asks for; None for the plain generator."""
    if model == PLAIN_MODEL:
        return None
    name = model.removeprefix(RAG_PREFIX)
    if model.startswith(RAG_PREFIX) and name in service.kb_names():
        return name
    raise NotFound(f"no model {model[:100]!r}: GET /v1/models lists them ({RAG_PREFIX}<knowledge base>, "
                   f"{PLAIN_MODEL})")


def turns_of(messages: list[dict[str, str]], kb: str) -> list[Turn]:
    """The conversation before the last message as turns (a user message answered by an assistant one). Each
    earlier question is taken as searched the way the rewrite searched it then, as the chat's history keeps it."""
    turns: list[Turn] = []
    for asked, answered in zip(messages[:-1], messages[1:-1]):
        if asked["role"] == "user" and answered["role"] == "assistant":
            question = " ".join(asked["content"].split())
            turns.append(Turn(question, answered["content"], rewrite(question, turns).search, kb))
    return turns


# --- the replies: pieces of text as they come, then their Ending -------------------------------------
@dataclass
class Ending:
    """What follows the pieces: the answer's final text (None when the pieces are the answer) and the top-level
    fields that go with it (`sources`, `searched`)."""

    text: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


Reply = Iterator[str | Ending]


def rag_reply(service: LoupeService, kb: str, messages: list[dict[str, str]]) -> Reply:
    searched: dict[str, str] = {}
    events = service.answer_with_history(kb, messages[-1]["content"], turns_of(messages, kb))
    with closing(events):  # a client gone: the generation stops at its next step
        for event in events:
            if isinstance(event, Rewrite) and event.rewritten:
                searched["searched"] = event.search
            elif isinstance(event, str):
                yield event
            elif isinstance(event, Answer):
                yield Ending(event.text, {**searched, "sources": event.to_json()["sources"]})


def plain_reply(service: LoupeService, messages: list[dict[str, str]], max_tokens: int) -> Reply:
    """The generator on the messages as given. Their last one is a whole prompt, not a question (another Loupe
    sends its passages in it), so the question cap does not apply: MAX_MESSAGES, MAX_MESSAGE_CHARS, the body
    limit and the model's context window (TooLarge) bound it."""
    with closing(service.models.generator().stream(messages, max_tokens)) as pieces:
        yield from pieces
    yield Ending()


# --- usage ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    """OpenAI's `usage` of one completion: the prompt's tokens are counted up front, the answer's once it is done."""

    generator: Generator
    prompt_tokens: int

    @classmethod
    def of(cls, generator: Generator, messages: list[Message]) -> Usage:
        return cls(generator, generator.prompt_tokens(messages))

    def of_answer(self, text: str) -> dict[str, int]:
        completion_tokens = self.generator.text_tokens(text)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}


# --- the responses ------------------------------------------------------------------------------------
def completion(model: str, reply: Reply, usage: Usage) -> dict:
    pieces: list[str] = []
    ending = Ending()
    with closing(reply):
        for event in reply:
            if isinstance(event, Ending):
                ending = event
            else:
                pieces.append(event)
    text = "".join(pieces) if ending.text is None else ending.text
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage.of_answer(text), **ending.fields}


def event_stream(model: str, reply: Reply, usage: Usage | None) -> StreamingResponse:
    """SSE chunks. The first event is taken before the response starts, so that what fails early (an unknown
    knowledge base, a busy generator, a model server that is down) answers with its HTTP status; a failure
    after that can only be told in the stream, as an error event, before [DONE]. With `usage` (the client asked
    for it), every chunk has a "usage" field, null but in the last one, which has no choices (OpenAI's shape)."""
    first = next(reply)
    header = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if usage:
        header["usage"] = None

    def chunk(delta: dict, finish: str | None = None, **fields: Any) -> str:
        return _sse({**header, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **fields})

    def sse() -> Iterator[str]:
        pieces: list[str] = []
        with closing(reply):
            yield chunk({"role": "assistant", "content": ""})
            try:
                for event in itertools.chain((first,), reply):
                    if isinstance(event, Ending):  # the pieces were the checked answer (rag.answering streams it)
                        yield chunk({}, "stop", **event.fields)
                    else:
                        pieces.append(event)
                        yield chunk({"content": event})
                if usage:
                    yield _sse({**header, "choices": [], "usage": usage.of_answer("".join(pieces))})
            except Exception as error:  # the status is sent: the error goes in the stream (unexpected: logged)
                yield _sse(_error_event(error))
            yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"


def _error_event(error: Exception) -> dict:
    status = error.status if isinstance(error, LoupeError) else 500
    return json.loads(openai_error(status, user_message(error, "answer")).body)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


# --- embeddings ----------------------------------------------------------------------------------------
def embedding_inputs(request: EmbeddingsRequest, names: set[str]) -> list[str]:
    """The texts to embed, checked before any model work: the model's name, their count and their length."""
    if request.model not in names:
        raise NotFound(f"no embedding model {request.model[:100]!r}: this server embeds with "
                       f"{' or '.join(sorted(names))}")
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise LoupeError("input is empty: send a text or a list of texts")
    if len(texts) > MAX_EMBED_INPUTS:
        raise TooLarge(f"input holds {len(texts):,} texts; the limit is {MAX_EMBED_INPUTS:,} a request")
    for index, text in enumerate(texts):
        if len(text) > MAX_EMBED_CHARS:
            raise TooLarge(f"input[{index}] is {len(text):,} characters long; the limit is {MAX_EMBED_CHARS:,}")
    check_texts(texts)
    return texts


def embeddings_response(model: str, vectors: np.ndarray, tokens: int, encoding: str) -> dict:
    def encoded(vector: np.ndarray) -> list[float] | str:
        # base64 of little-endian float32, what the `openai` client asks for by default and decodes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode() if encoding == "base64" else vector.tolist()

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# --- the router -----------------------------------------------------------------------------------------
def add_openai_routes(app: FastAPI, service: LoupeService) -> None:
    settings = service.settings
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], route_class=OpenAIRoute,
                       dependencies=[Depends(make_openai_auth_check(settings))])

    @router.get("/models")
    def models() -> dict:
        names = [f"{RAG_PREFIX}{kb}" for kb in service.kb_names()] + [PLAIN_MODEL]
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "loupe"}
                                           for name in names]}

    @router.post("/chat/completions", response_model=None)
    def chat_completions(request: ChatRequest) -> dict | StreamingResponse:
        kb = knowledge_base_of(request.model, service)
        messages = message_texts(request)
        if kb is None:
            wanted = request.max_tokens or request.max_completion_tokens or settings.max_new_tokens
            reply = plain_reply(service, messages, min(wanted, settings.max_new_tokens))
        else:
            reply = rag_reply(service, kb, messages)
        def usage() -> Usage:  # counted only where the reply carries it: counting may load the local model
            return Usage.of(service.models.generator(), messages)

        if not request.stream:
            return completion(request.model, reply, usage())
        wants_usage = request.stream_options is not None and request.stream_options.include_usage
        return event_stream(request.model, reply, usage() if wants_usage else None)

    @router.post("/embeddings")
    def embeddings(request: EmbeddingsRequest) -> dict:
        embedder = service.models.text_embedder
        texts = embedding_inputs(request, {EMBED_MODEL, embedder.model_id.name, settings.text_model})
        if request.dimensions not in (None, embedder.dim):
            raise LoupeError(f"dimensions: this model gives {embedder.dim}-dimensional vectors, not "
                             f"{request.dimensions}")
        # Not urgent: another tool's batch waits behind the questions asked in Loupe itself.
        vectors = embedder.embed(texts, settings.embed_batch_size)
        tokens = sum(min(n, embedder.max_tokens) for n in embedder.count_tokens_batch(texts))
        return embeddings_response(request.model, vectors, tokens, request.encoding_format)

    app.include_router(router)
