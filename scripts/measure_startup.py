"""What a new user sees in the first minute, measured in a real browser against the real app.

    .venv/bin/python scripts/measure_startup.py [--cold] [--screenshot docs/screenshot-chat.png]

Starts `python app.py` on a fresh, empty knowledge base with the default models and, in headless Chromium:
  1. start-up: from launching the process to a usable page (question box shown, knowledge base loaded);
  2. the sample knowledge base: from clicking "Load the sample knowledge base" to its 5 documents listed;
  3. time to first token: from pressing Enter to the first generated words in the chat, then to the
     finished answer with its sources, for a first and a second question.
--cold uses an empty model cache, as on a machine that never ran Loupe (the packaged SmolLM2 GGUF is then
converted once, in the background, while the page is already usable). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTIONS = ("How do I delete a document?", "Does Loupe need an internet connection?")
FIRST_WORDS = """(before) => {
  const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
  if (bots.length <= before) return false;
  const text = bots[bots.length - 1].innerText.trim();
  return text.length > 0 && !text.includes('Searching the documents');
}"""


# Gradio hides an output's status tracker once the event that fills it has finished.
EVENT_DONE = """() => ['#chatbot', '#sources'].every((id) => {
  const tracker = document.querySelector(id + ' [data-testid="status-tracker"]');
  return tracker && tracker.classList.contains('hide');
})"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="start with an empty model cache")
    parser.add_argument("--screenshot", type=Path, help="save the chat after the first answer here (PNG)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loupe-measure-"))
    port = free_port()
    env = dict(os.environ)
    if args.cold:
        env["LOUPE_CACHE_DIR"] = str(work / "cache")
    command = [sys.executable, "app.py", "--port", str(port), "--store", str(work / "indexes" / "default")]
    results: dict[str, object] = {"cold_cache": args.cold, "command": " ".join(command[1:])}
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "app.log", "w")  # a pipe nobody reads would fill up and stall the server
    server = None
    try:
        with sync_playwright() as playwright:
            # The user's browser is already open: start it before the clock.
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto("about:blank")
            started = time.perf_counter()
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            while "Loupe is ready" not in (work / "app.log").read_text():
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError("the app did not start:\n" + (work / "app.log").read_text())
                time.sleep(0.1)
            results["startup_to_ready_line_s"] = round(time.perf_counter() - started, 2)
            while True:  # the browser retries until the server answers, as a user's reload would
                try:
                    page.goto(url, timeout=5_000)
                    break
                except PlaywrightError:  # not serving yet: connection refused or a timeout
                    if server.poll() is not None or time.perf_counter() - started > 300:
                        raise RuntimeError("the app did not start:\n" + (work / "app.log").read_text()) from None
                    time.sleep(0.25)
            expect(page.locator("#question textarea")).to_be_visible(timeout=60_000)
            expect(page.locator("#kb-status")).to_contain_text("0 documents", timeout=60_000)
            results["startup_to_usable_page_s"] = round(time.perf_counter() - started, 2)

            clicked = time.perf_counter()
            page.get_by_role("button", name="Load the sample knowledge base").click()
            expect(page.locator("#kb-status")).to_contain_text("5 documents", timeout=300_000)
            results["sample_knowledge_base_s"] = round(time.perf_counter() - clicked, 2)

            for number, question in enumerate(QUESTIONS, start=1):
                page.fill("#question textarea", question)
                before = page.locator("#chatbot [data-testid='bot']").count()
                asked = time.perf_counter()
                page.press("#question textarea", "Enter")
                page.wait_for_function(FIRST_WORDS, arg=before, timeout=300_000)
                first = time.perf_counter() - asked
                page.wait_for_function(EVENT_DONE, timeout=300_000)
                done = time.perf_counter() - asked
                expect(page.locator("#sources [role=gridcell]").first).to_be_visible()
                answer = page.locator("#chatbot [data-testid='bot']").last.inner_text()
                results[f"question_{number}"] = {"question": question, "time_to_first_token_s": round(first, 2),
                                                 "time_to_answer_with_sources_s": round(done, 2),
                                                 "answer": answer.strip()}
                if number == 1 and args.screenshot:
                    page.locator("#sources [role=gridcell]").nth(1).click()
                    expect(page.locator("#source-context mark")).to_be_visible()
                    time.sleep(0.5)
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshot))
                    results["screenshot"] = str(args.screenshot)
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        log.close()
    results["machine"] = f"{os.cpu_count()} CPU cores, no GPU" if not _has_cuda() else f"{os.cpu_count()} cores, GPU"
    print(json.dumps(results, indent=2))
    return 0


def _has_cuda() -> bool:
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
