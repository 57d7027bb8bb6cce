"""The named Gradio endpoints (gradio_client), the REST API, their limits, --auth, and chat during an upload."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError

ANSWER_KEYS = {"answer", "sources", "images", "grounded", "unsupported", "withheld", "looped", "seconds"}
NAMED = {"/ask", "/search_images", "/similar_images", "/list_documents", "/ingest", "/delete_document",
         "/knowledge_bases"}


@pytest.fixture(scope="module")
def live(start_app, tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("api") / "indexes" / "default", max_upload_mb=0.15, max_upload_files=3)


@pytest.fixture(scope="module")
def client(live):
    return Client(live.url, verbose=False)


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=120) as session:
        yield session


def test_the_api_root_the_start_up_line_points_to_lists_the_endpoints(http):
    index = http.get("/api")
    assert index.status_code == 200, index.text
    endpoints = index.json()["endpoints"]
    assert {"POST /api/ask", "POST /api/ingest", "GET /api/documents", "DELETE /api/documents/{document_id}",
            "GET /api/knowledge-bases"} <= set(endpoints)
    assert "POST /v1/chat/completions" in index.json()["openai_compatible"]


def test_the_named_endpoints_are_listed_and_the_ui_events_are_not(client):
    endpoints = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert NAMED <= endpoints
    assert not {"/respond", "/upload", "/on_load"} & endpoints


def test_gradio_client_ingests_lists_asks_finds_images_and_deletes(client, docs_dir):
    files = [handle_file(str(docs_dir / name)) for name in ("aurora.md", "broken.pdf", "photo.png")]
    rows = client.predict(files=files, api_name="/ingest")
    assert [(r["name"], r["status"]) for r in rows] == [("aurora.md", "added"), ("broken.pdf", "failed"),
                                                        ("photo.png", "added")]
    assert "corrupt or truncated PDF" in rows[1]["message"]
    assert client.predict(files=[handle_file(str(docs_dir / "aurora.md"))], api_name="/ingest")[0]["status"] == \
        "duplicate"

    documents = client.predict(api_name="/list_documents")
    assert sorted(d["name"] for d in documents) == ["aurora.md", "photo.png"]

    answer = client.predict(question="At what temperature is the seed vault kept?", k=3, mode="extractive",
                            api_name="/ask")
    assert set(answer) == ANSWER_KEYS and answer["grounded"]
    assert "minus eighteen degrees" in answer["answer"]
    assert answer["sources"][0]["file"] == "aurora.md" and answer["sources"][0]["cited"]

    similar = client.predict(image=handle_file(str(docs_dir / "photo.png")), k=1, api_name="/similar_images")
    assert similar[0]["file"] == "photo.png" and similar[0]["score"] == pytest.approx(1.0, abs=1e-3)
    by_text = client.predict(query="a noisy picture", k=5, api_name="/search_images")
    assert [hit["file"] for hit in by_text] == ["photo.png"]  # the one image there is (random CLIP: no meaning)

    photo = next(d for d in documents if d["name"] == "photo.png")
    deleted = client.predict(document_id=photo["id"], api_name="/delete_document")
    assert deleted["name"] == "photo.png"
    assert [d["name"] for d in client.predict(api_name="/list_documents")] == ["aurora.md"]
    assert client.predict(api_name="/knowledge_bases") == ["default"]


def test_gradio_client_gets_clear_errors(client):
    with pytest.raises(AppError, match="mode must be one of"):
        client.predict(question="anything", k=3, mode="poetry", api_name="/ask")
    with pytest.raises(AppError, match="no knowledge base named"):
        client.predict(knowledge_base="nope", api_name="/list_documents")


def test_rest_ingest_list_ask_delete(http, docs_dir, live):
    with open(docs_dir / "lighthouse.txt", "rb") as handle:
        response = http.post("/api/ingest", files={"file": ("lighthouse.txt", handle, "text/plain")})
    assert response.status_code == 200, response.text
    [row] = response.json()["files"]
    assert row["status"] == "added" and row["message"].startswith("lighthouse.txt: added")
    with open(docs_dir / "lighthouse.txt", "rb") as handle:
        again = http.post("/api/ingest", files={"file": ("lighthouse.txt", handle)}).json()["files"][0]
    assert again["status"] == "duplicate"

    documents = http.get("/api/documents").json()
    assert "lighthouse.txt" in [d["name"] for d in documents]
    lighthouse = next(d for d in documents if d["name"] == "lighthouse.txt")
    assert "path" not in lighthouse and lighthouse["chunks"] >= 1  # no server path leaves the server

    answer = http.post("/api/ask", json={"question": "When was the lighthouse lamp converted to electricity?",
                                         "k": 3, "mode": "extractive"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == ANSWER_KEYS and "1952" in body["answer"]
    assert body["sources"][0]["file"] == "lighthouse.txt"
    generated = http.post("/api/ask", json={"question": "When was the lighthouse built?"}).json()
    assert set(generated) == ANSWER_KEYS and generated["sources"]  # the tiny generator: shape, not wording

    assert http.delete(f"/api/documents/{lighthouse['id']}").json()["deleted"]["name"] == "lighthouse.txt"
    assert http.delete(f"/api/documents/{lighthouse['id']}").status_code == 404
    assert "lighthouse.txt" not in [d["name"] for d in http.get("/api/documents").json()]
    assert not (live.service.kb().folder / "uploads" / "lighthouse.txt").exists()


def test_rest_refuses_bad_requests_with_a_reason(http):
    assert http.post("/api/ask", json={"question": "x", "mode": "poetry"}).status_code == 400
    missing = http.post("/api/ask", json={"k": 3})  # FastAPI's own 422 list becomes the documented 400 and one line
    assert missing.status_code == 400 and missing.json() == {"detail": "invalid request: question: Field required"}
    not_json = http.post("/api/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["detail"].startswith("invalid request: ")
    assert http.get("/api/documents", params={"kb": "nope"}).status_code == 404
    assert http.get("/api/documents", params={"kb": "../../etc"}).status_code == 400
    assert http.post("/api/ingest", data={"x": "1"}).status_code == 400


@pytest.mark.parametrize("name", ["../../escape.txt", "..\\escape.txt", "sub/escape.txt", "..", "/tmp/escape.txt"])
def test_rest_uploads_cannot_escape_their_folder(http, live, name):
    response = http.post("/api/ingest", files={"file": (name, b"The escape plan is written here.", "text/plain")})
    assert response.status_code == 400 and "refused" in response.json()["detail"]
    root = live.service.library.root
    assert not any(p.name == "escape.txt" for p in root.parent.rglob("escape.txt"))
    assert not list((live.service.kb().folder / "uploads").glob("*escape*"))


def test_rest_upload_limits(http, live):
    big = b"x" * int(0.2 * 1024 * 1024)  # over the 0.15 MB limit of this app
    response = http.post("/api/ingest", files={"file": ("big.txt", big, "text/plain")})
    assert response.status_code == 413 and "over the 0.15 MB upload limit" in response.json()["detail"]
    many = [("files", (f"n{i}.txt", f"note number {i}".encode(), "text/plain")) for i in range(4)]
    response = http.post("/api/ingest", files=many)
    assert response.status_code == 413 and "at most 3" in response.json()["detail"]
    assert not any(d.name.startswith("n") and d.name.endswith(".txt") for d in live.service.documents())


def test_two_people_chat_while_a_third_uploads(live, http, docs_dir):
    """Chat answers come back while a slow upload is still being embedded: ingestion doesn't freeze chat."""
    http.post("/api/ingest", files={"file": ("aurora.md", (docs_dir / "aurora.md").read_bytes())})  # maybe a dup
    paragraphs = [f"Report section {n}: the committee reviewed budget line {n} and approved item {n * 7}. " * 6
                  for n in range(260)]
    files = []
    for part in range(2):
        text = "\n\n".join(paragraphs[part::2]).encode()[: int(0.14 * 1024 * 1024)]
        files.append(("files", (f"report-{part}.txt", text, "text/plain")))
    done: dict[str, float] = {}

    def upload() -> None:
        response = http.post("/api/ingest", files=files)
        assert response.status_code == 200 and all(f["status"] == "added" for f in response.json()["files"])
        done["upload"] = time.perf_counter()

    def chat(who: str) -> None:
        client = Client(live.url, verbose=False)
        # extractive: what is measured is that retrieval is not held up by an ingest. A generated answer would
        # also share the cores with the ingest's embedding batches (both background work, rag.devices), so
        # which ends first would be a race.
        answer = client.predict(question="At what temperature is the seed vault kept?", k=3, mode="extractive",
                                api_name="/ask")
        assert answer["sources"][0]["file"] == "aurora.md"
        done[who] = time.perf_counter()

    uploader = threading.Thread(target=upload)
    uploader.start()
    deadline = time.time() + 30
    while not list((live.service.kb().folder / "uploads").glob("report-*")) and time.time() < deadline:
        time.sleep(0.05)  # the upload has reached the server and ingestion has begun
    chatters = [threading.Thread(target=chat, args=(who,)) for who in ("ann", "bob")]
    for thread in chatters:
        thread.start()
    for thread in chatters + [uploader]:
        thread.join(timeout=180)
    assert set(done) == {"upload", "ann", "bob"}, done
    assert done["ann"] < done["upload"] and done["bob"] < done["upload"], done


@pytest.fixture(scope="module")
def locked(start_app, tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("auth") / "indexes" / "default", auth="ann:secret-pw")


def test_auth_protects_the_rest_api_and_the_ui(locked):
    with httpx.Client(base_url=locked.url, timeout=60) as http:
        anonymous = http.get("/api/documents")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
        assert http.get("/api/documents", auth=("ann", "wrong")).status_code == 401
        assert http.post("/api/ask", json={"question": "x"}).status_code == 401
        assert http.post("/api/ingest", files={"file": ("a.txt", b"hello", "text/plain")}).status_code == 401
        assert http.get("/config").status_code == 401
        assert http.get("/gradio_api/info").status_code == 401
        assert http.get("/api/documents", auth=("ann", "secret-pw")).json() == []
        # The UI's login cookie opens the REST API too.
        assert http.post("/login", data={"username": "ann", "password": "secret-pw"}).status_code == 200
        assert http.get("/api/documents").status_code == 200
        assert http.get("/config").status_code == 200
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(locked.url, verbose=False).predict(api_name="/list_documents")
    assert Client(locked.url, auth=("ann", "secret-pw"), verbose=False).predict(api_name="/list_documents") == []
