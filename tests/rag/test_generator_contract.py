"""One contract for every generator backend, and what the OpenAI-compatible backend adds.

The contract runs on both backends: LocalGenerator on the tiny random Llama, and OpenAIGenerator pointed at a
running Loupe's /v1 plain entry, which serves the same tiny model (the random model never stops by itself, so
an answer that ends early was ended by its reader). Then: the grounding check, citations and "the documents
don't say" come out the same through a model server as in-process (SmolLM2 behind a running Loupe, against
SmolLM2 in this process); a server that is down, flaky, busy or refusing, played by a tiny HTTP server in the
test; and the key, which no log line or message may hold.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from openai_api import PLAIN_MODEL
from rag.answering import Assistant
from rag.components import Models
from rag.errors import Busy, LoupeError, ModelServerError, TooLarge
from rag.local_generator import LocalGenerator
from rag.openai_generator import MAX_RETRIES, OpenAIGenerator
from rag.prompts import NOT_IN_DOCUMENTS
from rag.retrieval import Retriever
from tests.app.conftest import AURORA_MD, free_port, start_app  # noqa: F401 - start_app: the running-app fixture
from tests.conftest import TEST_CACHE, make_settings

QUESTION = [{"role": "user", "content": "Say something about the seed vault."}]
TOO_LONG = [{"role": "user", "content": "why " * 5_000}]  # ~5,000 tokens: over 2,048 (tiny model), 4,096 (a server)
KEY = "sk-loupe-test-0123456789abcdef"


@pytest.fixture(scope="module")
def tiny_loupe(start_app, tmp_path_factory):  # noqa: F811 - the imported fixture
    """A Loupe whose generator is the tiny random model, allowed long answers (to see them cut short)."""
    return start_app(tmp_path_factory.mktemp("tiny-loupe") / "default", clip=False, max_new_tokens=1000,
                     generation_timeout_s=600)


@pytest.fixture(scope="module")
def local_tiny(tiny_generator_dir) -> Iterator[LocalGenerator]:
    generator = LocalGenerator(str(tiny_generator_dir), TEST_CACHE, timeout_s=600)
    yield generator
    generator.close()


@pytest.fixture(params=["local", "openai"])
def backend(request, local_tiny, tiny_loupe) -> tuple[object, LocalGenerator]:
    """(the generator under test, the LocalGenerator that does the work: its own, or the server's)"""
    if request.param == "local":
        return local_tiny, local_tiny
    generator = OpenAIGenerator(f"{tiny_loupe.url}/v1", PLAIN_MODEL, timeout_s=600)
    request.addfinalizer(generator.close)
    return generator, tiny_loupe.service.models.generator()


def test_streams_text_piece_by_piece(backend):
    generator, _ = backend
    pieces = list(generator.stream(QUESTION, 6))
    assert pieces and all(isinstance(p, str) for p in pieces) and "".join(pieces).strip()
    assert "".join(generator.stream(QUESTION, 6)) == "".join(pieces)  # greedy: the same answer again


def test_closing_the_stream_early_ends_the_generation(backend):
    generator, worker = backend
    stream = generator.stream(QUESTION, 1000)  # ~1,000 steps: far longer than the wait below
    next(stream)
    assert worker.running == 1
    stream.close()
    deadline = time.monotonic() + 60  # a bound on waiting, not a speed: one decoding step frees the row
    while worker.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.running == 0 and worker.waiting == 0


def test_fits_answers_for_a_short_and_a_too_long_prompt(backend):
    generator, _ = backend
    assert generator.fits(QUESTION, 50) is True
    assert generator.fits(TOO_LONG, 50) is False


def test_a_prompt_too_long_for_the_model_is_a_loupe_error(backend):
    generator, _ = backend
    with pytest.raises(TooLarge, match="2,048"):
        list(generator.stream(TOO_LONG, 10))


# --- grounding through a model server, against the same model in-process --------------------------------
@pytest.fixture(scope="module")
def smol_loupe(start_app, smollm2_dir, tmp_path_factory):  # noqa: F811 - the imported fixture
    return start_app(tmp_path_factory.mktemp("smol-loupe") / "default", clip=False,
                     generator_model=str(smollm2_dir), max_new_tokens=200)


@pytest.fixture(scope="module")
def aurora_retriever(text_embedder, tmp_path_factory) -> Retriever:
    from ingest.pipeline import Ingestor

    folder = tmp_path_factory.mktemp("aurora")
    (folder / "aurora.md").write_text(AURORA_MD)
    settings = make_settings(folder / "kb")
    models = Models(settings, text_embedder, None, "no CLIP in this test")
    store = models.open_store()
    Ingestor(store, settings, text_embedder, None).ingest([folder / "aurora.md"])
    return Retriever(store, text_embedder, None, settings.retrieval_mode)


@pytest.mark.parametrize("question", ["How many seed samples does the vault hold?",
                                      "How many moons does Jupiter have?"])
def test_grounding_citations_and_refusals_are_the_same_through_a_model_server(smol_loupe, smollm2_dir,
                                                                              aurora_retriever, question):
    settings = make_settings(TEST_CACHE / "unused")
    local = LocalGenerator(str(smollm2_dir), TEST_CACHE)
    remote = OpenAIGenerator(f"{smol_loupe.url}/v1", PLAIN_MODEL)
    try:
        here = Assistant(settings, aurora_retriever, lambda: local).ask(question)
        served = Assistant(settings, aurora_retriever, lambda: remote).ask(question)
    finally:
        local.close()
        remote.close()
    assert served.text == here.text and served.grounded == here.grounded
    assert served.unsupported == here.unsupported
    assert [s.cited for s in served.sources] == [s.cited for s in here.sources]
    if "seed samples" in question:  # in the documents: a grounded answer with its citation
        assert served.grounded and "[1]" in served.text and "4,200" in served.text
    else:
        assert not served.grounded and served.text == NOT_IN_DOCUMENTS


def test_a_loupe_whose_model_server_is_down_says_so_in_the_answer(start_app, tmp_path_factory):  # noqa: F811
    """REST, /v1 and the Gradio API (the chat shows the same translator's line) name the server."""
    port = free_port()  # nothing listens there
    app = start_app(tmp_path_factory.mktemp("down") / "default", clip=False, generator_backend="openai",
                    generator_base_url=f"http://127.0.0.1:{port}/v1")
    with httpx.Client(base_url=app.url, timeout=120) as http:
        http.post("/api/ingest", files={"file": ("aurora.md", AURORA_MD.encode())})
        question = "At what temperature is the seed vault kept?"
        # answer-first (the default) shows its quote without the model: the server's failure is logged only
        quoted = http.post("/api/ask", json={"question": question})
        assert quoted.status_code == 200 and "minus eighteen" in quoted.json()["answer"]
        response = http.post("/api/ask", json={"question": question, "mode": "generate"})
        assert response.status_code == 502
        assert response.json()["detail"] == (f"The model server at http://127.0.0.1:{port}/v1 could not be reached: "
                                              "is it running? (--generator-base-url)")
        reply = http.post("/v1/chat/completions", json={"model": PLAIN_MODEL, "stream": True, "messages": [
            {"role": "user", "content": question}]})
        assert reply.status_code == 502 and f"127.0.0.1:{port}/v1 could not" in reply.json()["error"]["message"]
    with pytest.raises(AppError, match=rf"The model server at http://127\.0\.0\.1:{port}/v1 could not be reached"):
        Client(app.url, verbose=False).predict(question=question, mode="generate", api_name="/ask")


# --- what only a remote backend can meet: a server down, flaky, busy or refusing ---------------------------
class ScriptedServer:
    """A tiny real HTTP server that stands in for a flaky model server: it answers each request with the next
    (status, text) of its script, then with a streamed chat completion of `words` ((200, "cut"): only its first
    chunk, then the connection drops). It records what it got."""

    def __init__(self, script: list[tuple[int, str]], words: tuple[str, ...] = ("Hello", " there")) -> None:
        self.script = list(script)
        self.words = words
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status, text = server.script.pop(0) if server.script else (200, "")
                if status != 200:
                    self._send(status, "application/json", json.dumps({"error": {"message": text}}).encode())
                    return
                chunks = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                          for w in server.words]
                events = ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()
                if text == "cut":  # the connection drops after the first chunk, as when the server crashes
                    self._send(200, "text/event-stream", events[:events.index(b"\n\n") + 2], len(events))
                    self.close_connection = True
                    return
                self._send(200, "text/event-stream", events)

            def _send(self, status: int, kind: str, data: bytes, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(length or len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[ScriptedServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


def test_a_server_that_is_down_is_a_clear_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    generator = OpenAIGenerator(url, "llama3.2", timeout_s=60)
    start = time.monotonic()
    with pytest.raises(ModelServerError) as caught:
        list(generator.stream(QUESTION, 10))
    assert time.monotonic() - start < 60  # within the product's own timeout (60 s), not a speed claim
    assert str(caught.value) == f"The model server at {url} could not be reached: is it running? (--generator-base-url)"
    assert caught.value.status == 502


def test_5xx_answers_are_retried_then_the_answer_streams():
    with ScriptedServer([(503, "overloaded"), (500, "oops")]).running() as server:
        generator = OpenAIGenerator(server.url, "llama3.2")
        assert "".join(generator.stream(QUESTION, 10)) == "Hello there"
    assert len(server.requests) == 3
    sent = server.requests[-1]["body"]
    assert sent["model"] == "llama3.2" and sent["stream"] is True and sent["max_tokens"] == 10
    assert sent["temperature"] == 0 and sent["messages"] == QUESTION


def test_a_server_lost_in_mid_answer_ends_the_stream_with_an_error_event(start_app, tmp_path_factory):  # noqa: F811
    """Through a Loupe whose generator is that server: the status (200) is sent, so the error comes in the stream."""
    with ScriptedServer([(200, "cut")]).running() as server:
        app = start_app(tmp_path_factory.mktemp("cut") / "default", clip=False, generator_backend="openai",
                        generator_base_url=server.url)
        with httpx.stream("POST", f"{app.url}/v1/chat/completions", timeout=120, json={
                "model": PLAIN_MODEL, "stream": True, "messages": QUESTION}) as response:
            assert response.status_code == 200
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hello"
    error = json.loads(events[-2])["error"]
    assert error == {"type": "server_error", "param": None, "code": None,
                     "message": f"The model server at {server.url} dropped the connection in the middle of the answer."}
    assert events[-1] == "[DONE]"
    assert len(server.requests) == 1  # a stream that had started is not retried


def test_a_server_that_keeps_failing_gives_up_after_the_retries():
    with ScriptedServer([(500, "internal trouble")] * 5).running() as server:
        with pytest.raises(ModelServerError, match=r"HTTP 500\) for model 'llama3.2'\. .*internal trouble") as caught:
            list(OpenAIGenerator(server.url, "llama3.2").stream(QUESTION, 10))
    assert len(server.requests) == MAX_RETRIES + 1
    assert server.url in str(caught.value)


def test_a_busy_server_is_busy_after_the_retries():
    with ScriptedServer([(429, "rate limited")] * 5).running() as server:
        with pytest.raises(Busy, match="HTTP 429"):
            list(OpenAIGenerator(server.url, "llama3.2").stream(QUESTION, 10))
    assert len(server.requests) == MAX_RETRIES + 1


@pytest.mark.parametrize(("status", "text", "error", "says"), [
    (404, "model 'llama3.2' not found, try pulling it first", ModelServerError, "no model 'llama3.2' (HTTP 404)"),
    (400, "This model's maximum context length is 4096 tokens", TooLarge, "too long for llama3.2"),
    (400, "unknown field: foo", ModelServerError, "HTTP 400"),
])
def test_other_refusals_are_loupe_errors_that_say_what_to_fix(status, text, error, says):
    with ScriptedServer([(status, text)]).running() as server:
        with pytest.raises(error, match=re.escape(says)) as caught:
            list(OpenAIGenerator(server.url, "llama3.2").stream(QUESTION, 10))
    assert isinstance(caught.value, LoupeError) and server.url in str(caught.value)
    assert len(server.requests) == 1  # a 4xx is not retried


def test_the_key_is_sent_but_never_logged_nor_shown(caplog, capsys):
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and its HTTP library's included
    echoed = f"Incorrect API key provided: {KEY}"
    with ScriptedServer([(401, echoed), (500, echoed), (500, echoed), (500, echoed)]).running() as server:
        settings = make_settings(TEST_CACHE / "unused", generator_backend="openai", generator_base_url=server.url,
                                 generator_model="llama3.2", generator_api_key=KEY)
        generator = OpenAIGenerator.from_settings(settings)
        messages = []
        for _ in range(2):  # a refused key, then a failing server that echoes it
            with pytest.raises(LoupeError) as caught:
                list(generator.stream(QUESTION, 10))
            messages.append(str(caught.value))
        generator.close()
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert "check LOUPE_GENERATOR_API_KEY" in messages[0] and "HTTP 500" in messages[1] and "***" in messages[1]
    printed = capsys.readouterr()
    shown = [*messages, caplog.text, printed.out, printed.err, repr(generator), repr(settings)]
    assert caplog.records and not [text for text in shown if KEY in text]
