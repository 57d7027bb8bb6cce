"""The web surface lets nothing leave the server and takes nothing it should not, tried as an attacker would:
raw server paths in file arguments, /dev/zero, requests from another site's page, a chunked body past the
limit, a document that embeds a remote image, deleted documents that linger, error text, a huge question.

One app (real MiniLM, tiny CLIP, tiny generator) serves the module; raw HTTP and gradio_client talk to it.
"""

from __future__ import annotations

import json
import select
import socket
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

SECRET = "The launch code of the secret vault is swordfish-42."
FRIEND = "http://friend.example:8080"


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("security") / "indexes" / "default", max_upload_mb=0.15,
                     max_upload_files=3, allowed_origins=FRIEND)


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    """A server file no client uploaded: it must never reach the knowledge base or a response."""
    path = tmp_path_factory.mktemp("server-only") / "secret.txt"
    path.write_text(SECRET)
    return path


def call_endpoint(http: httpx.Client, name: str, data: list, headers: dict | None = None) -> tuple[str, object]:
    """A named Gradio endpoint over raw HTTP (/gradio_api/call/<name>): (last event, its data)."""
    posted = http.post(f"/gradio_api/call/{name}", json={"data": data}, headers=headers or {})
    assert posted.status_code == 200, posted.text
    stream = http.get(f"/gradio_api/call/{name}/{posted.json()['event_id']}").text
    events = [block for block in stream.split("\n\n") if block.startswith("event:")]
    event, _, payload = events[-1].partition("\ndata: ")
    return event.removeprefix("event: ").strip(), json.loads(payload)


def run_ui_event(live, http: httpx.Client, function_name: str, data: list) -> dict:
    """A UI event (private: not in the API listing) called the way the browser calls it, by fn_index;
    returns its last message, with `seen`: the text of every message it sent."""
    fn_index = next(i for i, fn in live.demo.fns.items() if fn.name == function_name)
    session = uuid.uuid4().hex[:10]
    joined = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                         "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    messages = [json.loads(line[6:]) for line in
                http.get("/gradio_api/queue/data", params={"session_hash": session}).text.splitlines()
                if line.startswith("data: ")]
    return {**next(m for m in messages if m.get("msg") == "process_completed"), "seen": json.dumps(messages)}


def upload_to_gradio(http: httpx.Client, name: str, content: bytes) -> str:
    """Upload a file through Gradio's own route, as a browser or gradio_client does; returns its server path."""
    response = http.post("/gradio_api/upload", files={"files": (name, content)})
    assert response.status_code == 200, response.text
    return response.json()[0]


def document_names(live) -> list[str]:
    return sorted(d.name for d in live.service.documents())


def test_file_arguments_that_name_server_paths_are_refused(live, http, secret_file):
    before = document_names(live)
    kb_file = live.service.kb().folder / "catalog.sqlite3"
    for path in ("/etc/hostname", str(secret_file), str(kb_file), "/dev/zero"):
        # without Gradio's `meta` Gradio checks nothing: Loupe's own check must refuse it
        for name in ("ingest", "similar_images"):
            file = {"path": path, "orig_name": "x.txt"}
            event, data = call_endpoint(http, name, [[file], "default"] if name == "ingest" else [file, 8, "default"])
            assert event == "error" and "only reads files uploaded to it" in json.dumps(data), (name, path, data)
            assert "swordfish" not in json.dumps(data)
        with_meta = {"path": path, "orig_name": "x.txt", "meta": {"_type": "gradio.FileData"}}
        assert call_endpoint(http, "ingest", [[with_meta], "default"])[0] == "error"
    assert document_names(live) == before
    event, data = call_endpoint(http, "ask", ["What is the launch code of the secret vault?", 3, "extractive",
                                              "default"])
    assert "swordfish" not in json.dumps(data)


def test_ui_events_that_take_files_refuse_files_nobody_uploaded(live, http, gradio_temp_dir, docs_dir):
    """UI components make Gradio check that a file is in its cache folder; but the cache also holds files the
    server wrote itself (copies of served images, other people's results): only uploads may be read."""
    before = document_names(live)
    cached = gradio_temp_dir / "0123abcd" / "served.txt"
    cached.parent.mkdir(exist_ok=True)
    cached.write_text(SECRET)
    picture = cached.with_name("served.png")
    picture.write_bytes((docs_dir / "photo.png").read_bytes())
    meta = {"_type": "gradio.FileData"}
    uploaded = run_ui_event(live, http, "upload", [[{"path": str(cached), "orig_name": "served.txt", "meta": meta}],
                                                   "default"])
    assert not uploaded["success"] and "only reads files uploaded to it" in uploaded["seen"]
    found = run_ui_event(live, http, "by_image", [{"path": str(picture), "orig_name": "served.png", "meta": meta},
                                                  "default"])
    assert "only reads files uploaded to it" in found["seen"] and "best score" not in found["seen"]
    assert document_names(live) == before


def test_copies_gradio_served_of_a_deleted_image_are_removed(live, gradio_temp_dir):
    """LoupeService.delete_document calls this for each display copy it deletes (tests/app/test_service.py)."""
    name = "f" * 64 + ".png"
    copies = [gradio_temp_dir / folder / name for folder in ("aaa1", "bbb2")]
    for copy in copies:
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(b"a served copy")
    kept = gradio_temp_dir / "ccc3" / "another.png"
    kept.parent.mkdir(exist_ok=True)
    kept.write_bytes(b"another image")
    live.service.on_display_removed(name)
    assert not any(copy.exists() for copy in copies) and kept.exists()


def test_a_real_upload_is_ingested_and_gradios_copy_is_removed(live, http):
    path = upload_to_gradio(http, "harbour.txt", b"The harbour master rings the bell at noon every Sunday.")
    event, data = call_endpoint(http, "ingest", [[{"path": path, "orig_name": "harbour.txt",
                                                  "meta": {"_type": "gradio.FileData"}}], "default"])
    assert event == "complete" and data[0][0]["status"] == "added", data
    assert not Path(path).exists()  # only the knowledge base keeps the document now
    assert "harbour.txt" in document_names(live)


def test_state_changing_requests_from_another_site_are_refused(live, http):
    before = document_names(live)
    note = {"file": ("planted.txt", b"A planted note from another site.", "text/plain")}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        response = http.post("/api/ingest", files=note, headers=headers)
        assert response.status_code == 403 and "refused" in response.json()["detail"], (headers, response.text)
        assert http.post("/gradio_api/call/ask", json={"data": ["x"]}, headers=headers).status_code == 403
        assert http.delete("/api/documents/1", headers=headers).status_code == 403
    assert document_names(live) == before
    own = live.url  # the app's own page, and a site the settings allow, may send changes
    event, _ = call_endpoint(http, "list_documents", ["default"],
                             headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert event == "complete"
    assert http.post("/api/ask", json={"question": "When does the bell ring?", "mode": "extractive"},
                     headers={"Origin": FRIEND}).status_code == 200
    assert http.get("/api/documents", headers={"Origin": "http://evil.example"}).status_code == 200  # a read


def send_chunked_upload(url: str, total: int) -> tuple[int, bytes]:
    """POST a multipart body of `total` bytes to /api/ingest with Transfer-Encoding: chunked, stopping as soon as
    the server answers or closes; returns (bytes sent, the server's reply)."""
    host, port = url.removeprefix("http://").split(":")
    chunk, boundary = b"x" * 65536, "loupeboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()
    sent, reply = 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall((f"POST /api/ingest HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
        conn.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        try:
            while sent < total:
                if select.select([conn], [], [], 0)[0]:  # the server answered: stop sending
                    break
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            else:
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: its answer is waiting to be read
        try:
            while part := conn.recv(65536):  # the answer, until the server closes the connection
                reply += part
        except ConnectionResetError:
            pass  # closing with our unread bytes in its buffer, the server may reset: the answer can be lost
    return sent, reply


def test_a_chunked_body_over_the_limit_is_answered_413_before_it_is_all_sent(live):
    """Chunked bodies declare no length: the server must count as bytes arrive, not read 64 MB first."""
    total = 64 * 1024 * 1024
    replies = []
    for _ in range(3):  # a reset can swallow the 413 (see send_chunked_upload): one of three must show it
        sent, reply = send_chunked_upload(live.url, total)
        assert sent < total / 4, f"the server read {sent} bytes before answering"
        replies.append(reply)
        if reply:
            break
    assert replies[-1].startswith(b"HTTP/1.1 413"), replies
    assert b"request body too large" in replies[-1]


def test_errors_carry_no_server_paths_or_exception_text(live, http, monkeypatch, docs_dir):
    live.service.ingest(None, [("lighthouse.txt", docs_dir / "lighthouse.txt")])
    documents = http.get("/api/documents").json()
    assert documents and all("path" not in d for d in documents)
    assert all(str(live.service.kb().folder) not in json.dumps(d) for d in documents)

    # A bug cannot be produced on demand in real code: stand one in for the service call.
    def broken(*args, **kwargs):
        raise RuntimeError("boom at /srv/loupe/private/catalog.sqlite3")

    monkeypatch.setattr(live.service, "documents", broken)
    response = http.get("/api/documents")
    assert response.status_code == 500 and response.json() == {"detail": "internal error (see the server log)"}
    event, data = call_endpoint(http, "list_documents", ["default"])
    assert event == "error" and "Loupe failed to list documents (see the server log)" in json.dumps(data)
    assert "/srv/loupe" not in json.dumps(data) and "boom" not in json.dumps(data)


def test_rest_status_comes_from_the_error_type(http):
    assert http.delete("/api/documents/987654").status_code == 404
    assert http.get("/api/documents", params={"kb": "nope"}).status_code == 404
    assert http.get("/api/documents", params={"kb": "../../etc"}).status_code == 400
    assert http.post("/api/ask", json={"question": "x", "mode": "poetry"}).status_code == 400


def test_a_huge_question_is_refused_on_every_path(live, http):
    question = "why " * 6750  # 27,000 characters
    response = http.post("/api/ask", json={"question": question})
    assert response.status_code == 413 and "characters" in response.json()["detail"], response.text
    with pytest.raises(AppError, match="characters"):
        Client(live.url, verbose=False).predict(question=question, api_name="/ask")
    chat = live.service.chat(None, question, session="huge-question-session")
    with pytest.raises(Exception, match="characters") as refused:
        next(chat)  # refused before the search's first step: nothing was generated
    assert getattr(refused.value, "status", None) == 413
    history = run_ui_event(live, http, "respond", [question, [], "huge-question-session", "default", 3, "generate"])
    assert "characters" in history["seen"]


def test_serving_beyond_loopback_without_auth_warns_at_start_and_in_the_page(start_app, tmp_path_factory, live,
                                                                            http, caplog):
    warning = "Anyone who can reach this server can read, add and delete its documents"
    assert warning not in http.get("/config").text  # loopback: nothing to warn about
    with caplog.at_level("WARNING", logger="app"):
        exposed = start_app(tmp_path_factory.mktemp("exposed") / "indexes" / "default", host="0.0.0.0")
    assert any(warning in record.getMessage() for record in caplog.records)
    assert warning in httpx.get(f"{exposed.url}/config", timeout=60).text
    demo = start_app(tmp_path_factory.mktemp("demo") / "indexes" / "default", host="0.0.0.0", public_demo=True)
    config = httpx.get(f"{demo.url}/config", timeout=60).text
    assert warning not in config and "Public demo: anyone who can reach this page can use it" in config
    guarded = start_app(tmp_path_factory.mktemp("guarded") / "indexes" / "default", host="0.0.0.0", auth="a:pw")
    assert warning not in httpx.get(f"{guarded.url}/config", auth=("a", "pw"), timeout=60).text


class Beacon:
    """An HTTP server on another port that counts every request: a remote image a page must never load."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def beacon():
    server = Beacon()
    yield server
    server.close()


@pytest.mark.slow
def test_a_document_cannot_make_the_browser_load_remote_images(page, live, http, beacon, tmp_path):
    from playwright.sync_api import expect

    assert "img-src 'self' data: blob:" in http.get("/").headers["content-security-policy"]
    note = tmp_path / "spare-key.txt"
    note.write_text(f"The spare key of the boathouse hangs on the blue hook (https://boathouse.example/spare_key-hook) "
                    f"![pixel]({beacon.url}/markdown.png) "
                    f"beside the <img src=\"{beacon.url}/html.png\"> tide table.\n")
    assert [r.status for r in live.service.ingest(None, [(note.name, note)])] == ["added"]
    page.goto(live.url)
    expect(page.locator("#kb-status")).to_contain_text("Knowledge base:")
    page.get_by_label("extractive").check()
    page.fill("#question textarea", "Where does the spare key of the boathouse hang?")
    page.press("#question textarea", "Enter")
    answer = page.locator("#chatbot [data-testid='bot']").last
    expect(answer).to_contain_text("blue hook")
    expect(answer).to_contain_text("markdown.png")  # shown as text, not loaded
    # a bare web address reads as written: no escaping backslash taken into it by the renderer's automatic links
    expect(answer).to_contain_text("(https://boathouse.example/spare_key-hook)")
    assert "\\" not in answer.inner_text()
    page.locator("#sources .source-card").filter(has_text="spare-key.txt").first.click()
    expect(page.locator("#context")).to_contain_text("html.png")
    page.wait_for_timeout(1000)  # a request the page made while rendering would have reached the beacon by now
    assert beacon.hits == []
