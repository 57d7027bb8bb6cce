"""`python app.py` as a user starts it: flags reach the settings, --auth guards the API, --share without a
network says why there is no link and keeps serving; and a restart keeps the chat (same port, same store)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from rag.settings import PROJECT_ROOT
from tests.app.conftest import free_port

pytestmark = pytest.mark.slow


def offline() -> bool:
    try:
        socket.setdefaulttimeout(2)
        socket.getaddrinfo("huggingface.co", 443)
        return False
    except OSError:
        return True
    finally:
        socket.setdefaulttimeout(None)


def test_python_app_py_serves_with_its_flags(tmp_path, tiny_generator_dir):
    port = free_port()
    share = offline()  # with a network, --share would really open a public tunnel: only try it offline
    command = [sys.executable, "app.py", "--port", str(port), "--store", str(tmp_path / "kb" / "main"),
               "--auth", "ann:pw", "--generator", str(tiny_generator_dir), "--max-upload-mb", "0.01",
               "--max-upload-files", "2", "--allowed-origins", "http://friend.example:8080",
               *(["--share"] if share else [])]
    env = {**os.environ, "LOUPE_CACHE_DIR": str(tmp_path / "cache"), "LOUPE_OCR": "false"}
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = []
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            output.append(line)
            if "Loupe is ready on" in line:
                break
        text = "".join(output)
        assert f"Loupe is ready on http://127.0.0.1:{port}" in text, text
        assert "share=True" not in text, text  # Gradio's own hint; Loupe's flag is --share
        if share:
            assert "No share link:" in text and "keeps serving" in text, text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/api/documents").status_code == 401
            assert http.get("/api/documents", auth=("ann", "pw")).json() == []
            big = http.post("/api/ingest", auth=("ann", "pw"), files={"file": ("a.txt", b"a" * 20_000)})
            assert big.status_code == 413 and "0.01 MB" in big.json()["detail"]  # --max-upload-mb reached it
            question = {"question": "Is anything here?", "mode": "extractive"}
            for origin, status in (("http://friend.example:8080", 200), ("http://evil.example", 403)):
                answer = http.post("/api/ask", auth=("ann", "pw"), json=question, headers={"Origin": origin})
                assert answer.status_code == status, (origin, answer.text)  # --allowed-origins reached the guard
        assert (tmp_path / "kb").is_dir()  # --store was used
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_python_app_py_takes_a_postgresql_url_and_says_in_one_line_that_it_cannot_reach_it(tmp_path):
    """The URL reaches the PostgreSQL store (not a folder named after it), and a server that refuses the
    connection is one line and exit 1, before any model loads (no server listens on the port: nothing to fake)."""
    port = free_port()
    url = f"postgresql://loupe:s3cret@127.0.0.1:{port}/team?kb=docs"
    env = {**os.environ, "LOUPE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "app.py"), "--port", str(free_port()), "--store", url],
                          cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line, no traceback
    assert done.stderr.startswith("error: ") and f"127.0.0.1:{port}/team" in done.stderr
    assert "s3cret" not in done.stderr and "refused" in done.stderr
    assert not any(tmp_path.glob("postgresql*")) and not any(PROJECT_ROOT.glob("postgresql*"))  # no folder made


def test_the_chat_survives_a_server_restart_and_clip_off_is_said(page: Page, start_app, tmp_path_factory,
                                                                  docs_dir):
    store: Path = tmp_path_factory.mktemp("restart") / "indexes" / "default"
    first = start_app(store, clip=False)
    port = first.settings.port
    first.service.ingest(None, [("aurora.md", docs_dir / "aurora.md")])
    page.goto(first.url)
    # CLIP off: one plain line; the technical reason opens on demand
    expect(page.locator("#clip-note-chat summary")).to_have_text("⚠ Image search by text is off (no CLIP model).")
    expect(page.locator("#clip-note-chat details")).not_to_have_attribute("open", "")
    page.locator("#clip-note-chat summary").click()
    expect(page.locator("#clip-note-chat details")).to_contain_text("no CLIP weights in this test")
    page.get_by_label("extractive").check()
    page.fill("#question textarea", "Who may open the seed vault?")
    page.press("#question textarea", "Enter")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("station botanist")
    first.close()

    second = start_app(store, clip=False, port=port)  # a new process would look the same: new service, new UI
    assert second.url == first.url
    page.reload()
    expect(page.locator("#chatbot")).to_contain_text("Who may open the seed vault?")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("station botanist")
    expect(page.locator("#sources")).to_contain_text("aurora.md")

    page.get_by_role("tab", name="Image search").click()
    expect(page.locator("#clip-note")).to_contain_text("Image search by text is off: no CLIP weights in this test")
    expect(page.locator("#find-similar")).to_be_disabled()  # a control that can't work says so beside it
    expect(page.locator("#find-similar-reason")).to_contain_text("Needs CLIP")
