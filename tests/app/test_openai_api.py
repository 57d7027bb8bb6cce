"""Loupe as an OpenAI-compatible chat and embeddings server (/v1), driven by the real `openai` client, by raw
HTTP, and by Loupe's own HTTP embedder backend (rag.openai_embedder) as another Loupe would use it.

The app runs in-process with the real MiniLM and the tiny random generator; its answers are extractive, so
that the text, its [n] citations and its sources can be asserted (the tiny generator's words mean nothing).
Generated answers through /v1 are checked against SmolLM2 in tests/rag/test_generator_contract.py.
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from openai_api import EMBED_MODEL, MAX_EMBED_CHARS, MAX_EMBED_INPUTS, PLAIN_MODEL
from rag.errors import ModelServerError
from rag.openai_embedder import OpenAIEmbedder

SOURCE_KEYS = {"file", "page", "text", "score", "number", "cited"}
VAULT = "At what temperature is the seed vault kept?"


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory, docs_dir):
    app = start_app(tmp_path_factory.mktemp("v1") / "indexes" / "default", clip=False, answer_mode="extractive",
                    max_upload_mb=0.15, max_upload_files=2)
    with httpx.Client(base_url=app.url, timeout=120) as http:
        for name in ("aurora.md", "lighthouse.txt"):
            response = http.post("/api/ingest", files={"file": (name, (docs_dir / name).read_bytes())})
            assert response.json()["files"][0]["status"] == "added"
    app.service.create_kb("notes")
    return app


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=120) as session:
        yield session


def test_models_are_the_knowledge_bases_and_the_plain_generator(client):
    assert [m.id for m in client.models.list()] == ["loupe:default", "loupe:notes", PLAIN_MODEL]


def test_a_rag_answer_cites_its_passages_and_carries_the_sources_of_ask_json(client, http):
    reply = client.chat.completions.create(model="loupe:default", messages=[{"role": "user", "content": VAULT}])
    text = reply.choices[0].message.content
    assert "minus eighteen degrees" in text and "[1]" in text
    sources = reply.model_extra["sources"]
    assert sources[0]["file"] == "aurora.md" and sources[0]["cited"] and set(sources[0]) == SOURCE_KEYS
    asked = http.post("/api/ask", json={"question": VAULT, "mode": "extractive"}).json()
    assert asked["answer"] == text and asked["sources"] == sources  # the same shape as ask --json, and values


def test_a_streamed_rag_answer_ends_with_the_sources(client):
    chunks = list(client.chat.completions.create(model="loupe:default", stream=True,
                                                 messages=[{"role": "user", "content": VAULT}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "minus eighteen degrees" in text and "[1]" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["sources"][0]["file"] == "aurora.md"
    assert all("sources" not in (c.model_extra or {}) for c in chunks[:-1])


def test_the_raw_stream_is_server_sent_events_ending_with_done(http):
    with http.stream("POST", "/v1/chat/completions", json={
            "model": "loupe:default", "stream": True, "messages": [{"role": "user", "content": VAULT}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_a_follow_up_is_rewritten_with_the_history_the_client_sends(client):
    first = client.chat.completions.create(model="loupe:default", messages=[{"role": "user", "content": VAULT}])
    follow_up = [{"role": "user", "content": VAULT},
                 {"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "and who may open it?"}]
    reply = client.chat.completions.create(model="loupe:default", messages=follow_up)
    assert "seed vault" in reply.model_extra["searched"]
    assert "botanist" in reply.choices[0].message.content
    alone = client.chat.completions.create(model="loupe:default", messages=follow_up[-1:])
    assert "searched" not in alone.model_extra  # nothing to refer back to: searched as asked


def test_text_given_as_a_list_of_parts_is_read(client):
    reply = client.chat.completions.create(model="loupe:default", messages=[
        {"role": "user", "content": [{"type": "text", "text": "When was the lighthouse lamp"},
                                     {"type": "text", "text": "converted to electricity?"}]}])
    assert "1952" in reply.choices[0].message.content


def test_the_plain_entry_streams_the_generator_without_retrieval(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": VAULT}]
    whole = client.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=8)
    streamed = client.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == whole.choices[0].message.content
    assert whole.choices[0].message.content  # the tiny random model says something, greedily the same twice
    assert "sources" not in whole.model_extra


def test_replies_carry_usage_counted_with_the_generators_tokenizer(client, live):
    """OpenAI's `usage`: in the completion; streamed, only when stream_options asks, in a last chunk without
    choices (the `openai` client reads it there). The local generator's tokenizer counts, the prompt with its chat
    template."""
    generator = live.service.models.generator()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": VAULT}]

    def expected(text: str, prompt: list[dict[str, str]]) -> dict[str, int]:
        answer = len(generator.tokenizer(text, add_special_tokens=False)["input_ids"])
        asked = len(generator.prompt_ids(prompt))
        return {"prompt_tokens": asked, "completion_tokens": answer, "total_tokens": asked + answer}

    whole = client.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=8)
    text = whole.choices[0].message.content
    assert whole.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == expected(
        text, messages)
    assert whole.usage.prompt_tokens > len(VAULT.split()) and whole.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=8, stream=True))
    assert all(c.usage is None and c.choices for c in plain)  # not asked for: not sent
    rag = client.chat.completions.create(model="loupe:default", messages=messages[1:])
    assert rag.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == expected(
        rag.choices[0].message.content, messages[1:])


@pytest.fixture(scope="module")
def generating(start_app, tmp_path_factory, docs_dir):
    """An app in the default mode, generate: the tiny generator's words are noise, so its answers are refused."""
    app = start_app(tmp_path_factory.mktemp("v1-generate") / "indexes" / "default", clip=False)
    httpx.post(f"{app.url}/api/ingest", files={"file": ("aurora.md", (docs_dir / "aurora.md").read_bytes())},
               timeout=120)
    return app


def test_a_generated_answer_ends_as_the_checked_answer_does(generating):
    """The reply is the checked answer, as ask --json's; streamed, it is that answer and nothing else: its
    sentences come checked and cited, so nothing sent has to be sent again (it once was, whole, after the pieces)."""
    client = openai.OpenAI(base_url=f"{generating.url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": VAULT}]
    checked = httpx.post(f"{generating.url}/api/ask", json={"question": VAULT}, timeout=120).json()
    whole = client.chat.completions.create(model="loupe:default", messages=messages)
    assert whole.choices[0].message.content == checked["answer"]
    assert whole.model_extra["sources"] == checked["sources"]
    chunks = list(client.chat.completions.create(model="loupe:default", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == checked["answer"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": "loupe:default"}, 400, "messages"),
    ({"model": "loupe:default", "messages": []}, 400, "messages"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": "hi"}] * 101}, 400, "messages"),
    ({"model": "loupe:default", "messages": [{"role": "tool", "content": "x"}]}, 400, "role"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": 42}]}, 400, "content"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]}, 400, "text only"),
    ({"model": "loupe:default", "messages": [{"role": "assistant", "content": "hello"}]}, 400, "last message"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": "   "}]}, 400, "Type a question"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": "why " * 600}]}, 413, "limit is 2,000"),
    ({"model": PLAIN_MODEL, "messages": [{"role": "user", "content": "why " * 4_000}]}, 413, "reads at most"),
    ({"model": "loupe:default", "messages": [{"role": "assistant", "content": "x" * 20_001},
                                             {"role": "user", "content": "why?"}]}, 413, "messages[0]"),
    ({"model": "loupe:nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "no model"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}, 404, "no model"),
    ({"model": "loupe:default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
])
def test_bad_requests_get_openais_error_shape_and_status(http, body, status, says):
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["type"] == ("invalid_request_error")


def test_a_body_that_is_not_json_is_a_400(http):
    response = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "invalid request" in response.json()["error"]["message"]


def test_the_guards_of_the_whole_app_cover_v1(http):
    """The cross-site refusal and the body limit (0.15 MB x 2 files + 64 KB here) wrap /v1 as they wrap /api."""
    cross_site = http.post("/v1/chat/completions", headers={"Origin": "http://evil.example"},
                           json={"model": "loupe:default", "messages": [{"role": "user", "content": VAULT}]})
    assert cross_site.status_code == 403
    huge = http.post("/v1/chat/completions", json={"model": "loupe:default", "messages": [
        {"role": "user", "content": "x" * 600_000}]})
    assert huge.status_code == 413


def test_open_webui_request_is_answered(http):
    """Replays what Open WebUI sends to an OpenAI connection. From open-webui/open-webui (read at commit
    004a45f5824bd78635cdc39a071af98873fb50c2), backend/open_webui/routers/openai.py, generate_chat_completion():
    the chat's payload without "metadata" (backend/open_webui/main.py pops chat_id, id, session_id, tool_servers),
    the model's params mapped in by utils/payload.py apply_model_params_to_body_openai (temperature, max_tokens,
    ...), "stream_options": {"include_usage": true} forced on a stream, the last message's content turned into a
    text part marked "cache_control" (apply_ephemeral_cache_control_to_last_message); headers from
    get_headers_and_cookies(): Content-Type, "Authorization: Bearer <key>" and, with
    ENABLE_FORWARD_USER_INFO_HEADERS, X-OpenWebUI-User-*/Chat-Id. Sent by aiohttp."""
    body = {
        "stream": True,
        "model": "loupe:default",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": VAULT},
            {"role": "assistant", "content": "The seed vault is kept at minus eighteen degrees Celsius. [1]"},
            {"role": "user", "content": [{"type": "text", "text": "and who may open it?",
                                          "cache_control": {"type": "ephemeral"}}]},
        ],
        "temperature": 0.8,
        "max_tokens": 512,
        "stream_options": {"include_usage": True},
    }
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-openwebui-connection-key",
               "X-OpenWebUI-User-Name": "Ann", "X-OpenWebUI-User-Id": "5c4b8e7e-1f2a-4d8e-9d55-3a1c2b7f0e11",
               "X-OpenWebUI-User-Email": "ann@example.com", "X-OpenWebUI-User-Role": "user",
               "X-OpenWebUI-Chat-Id": "0b3b1f8e-7b8f-4d5e-a2f0-6b1a9f3c2d10",
               "User-Agent": "Python/3.11 aiohttp/3.12.15", "Accept": "*/*"}
    with http.stream("POST", "/v1/chat/completions", content=json.dumps(body), headers=headers) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    *answer, usage = events  # include_usage: a last chunk without choices, as OpenAI sends it
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in answer)
    assert "botanist" in text
    assert answer[-1]["sources"] and "seed vault" in answer[-1]["searched"]  # the follow-up, rewritten
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


@pytest.fixture(scope="module")
def guarded(start_app, tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("v1-auth") / "indexes" / "default", clip=False, auth="ann:s3cret")


def test_v1_wants_the_same_credentials_as_the_api(guarded):
    url = f"{guarded.url}/v1/models"
    refused = httpx.get(url)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert httpx.post(f"{guarded.url}/v1/chat/completions", json={}).status_code == 401  # before the body
    basic = base64.b64encode(b"ann:s3cret").decode()
    assert httpx.get(url, headers={"Authorization": f"Basic {basic}"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0).models.list()
    keyed = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="ann:s3cret", max_retries=0)
    assert PLAIN_MODEL in [m.id for m in keyed.models.list()]  # the --auth pair as the API key


# --- /v1/embeddings ---------------------------------------------------------------------------------------
EMBED_TEXTS = ["The seed vault is kept at minus eighteen degrees.", "Supply flights land every second Tuesday.",
               "lighthouse"]


def cosines(vectors, reference) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return (vectors * reference).sum(axis=1) / np.linalg.norm(vectors, axis=1)


def test_the_openai_client_gets_the_local_models_vectors(client, text_embedder):
    """The client's default asks for base64 (it decodes it with numpy); float is what most other clients ask."""
    reference = text_embedder.model.encode(EMBED_TEXTS, normalize_embeddings=True)
    for encoding in ({}, {"encoding_format": "float"}):
        reply = client.embeddings.create(model=EMBED_MODEL, input=EMBED_TEXTS, **encoding)
        assert [d.index for d in reply.data] == [0, 1, 2] and reply.model == EMBED_MODEL
        assert cosines([d.embedding for d in reply.data], reference).min() >= 0.999
        assert reply.usage.prompt_tokens == reply.usage.total_tokens == sum(
            text_embedder.count_tokens_batch(EMBED_TEXTS))
    one = client.embeddings.create(model="all-MiniLM-L6-v2", input="lighthouse")  # the model's own name
    assert len(one.data) == 1 and cosines([one.data[0].embedding], reference[2:]).min() >= 0.999


def test_loupes_http_embedder_against_a_running_loupe_equals_the_local_model(live, text_embedder):
    remote = OpenAIEmbedder(f"{live.url}/v1", EMBED_MODEL, max_retries=0)
    assert remote.model_id.dim == text_embedder.dim
    vectors = remote.embed(EMBED_TEXTS * 30, batch_size=16)  # several requests
    assert vectors.shape == (90, 384)
    assert cosines(vectors, np.tile(text_embedder.embed(EMBED_TEXTS), (30, 1))).min() >= 0.999


def test_the_http_embedder_names_the_url_and_status_of_a_refusal(guarded):
    with pytest.raises(ModelServerError, match=rf"{guarded.url}/v1 refused the key \(HTTP 401\)") as refused:
        OpenAIEmbedder(f"{guarded.url}/v1", EMBED_MODEL, api_key="ann:wrong", max_retries=0)
    assert "ann:wrong" not in str(refused.value)
    keyed = OpenAIEmbedder(f"{guarded.url}/v1", EMBED_MODEL, api_key="ann:s3cret", max_retries=0)
    assert keyed.embed(["lighthouse"]).shape == (1, 384) and "s3cret" not in repr(keyed)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"input": "hi"}, 400, "model"),
    ({"model": EMBED_MODEL}, 400, "input"),
    ({"model": EMBED_MODEL, "input": []}, 400, "input is empty"),
    ({"model": EMBED_MODEL, "input": ["fine", " "]}, 400, "text 2 of 2 is empty"),
    ({"model": EMBED_MODEL, "input": [[101, 2023]]}, 400, "input"),  # token arrays: the server tokenizes
    ({"model": EMBED_MODEL, "input": ["x"] * (MAX_EMBED_INPUTS + 1)}, 413, f"limit is {MAX_EMBED_INPUTS}"),
    ({"model": EMBED_MODEL, "input": ["ok", "y" * (MAX_EMBED_CHARS + 1)]}, 413, "input[1]"),
    ({"model": "text-embedding-3-small", "input": "hi"}, 404, "no embedding model"),
    ({"model": EMBED_MODEL, "input": "hi", "dimensions": 128}, 400, "384-dimensional"),
    ({"model": EMBED_MODEL, "input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
])
def test_bad_embedding_requests_are_refused_before_any_work(http, body, status, says):
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]


def test_embeddings_want_the_same_credentials_as_the_api(guarded):
    body = {"model": EMBED_MODEL, "input": "hi"}
    assert httpx.post(f"{guarded.url}/v1/embeddings", json=body).status_code == 401
    basic = base64.b64encode(b"ann:s3cret").decode()
    allowed = httpx.post(f"{guarded.url}/v1/embeddings", json=body, headers={"Authorization": f"Basic {basic}"})
    assert allowed.status_code == 200 and len(allowed.json()["data"][0]["embedding"]) == 384
