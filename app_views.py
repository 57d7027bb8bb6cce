"""How the browser app shows things: chat messages, the sources panel, upload progress, passages in context.

Pure functions from the service's records to Markdown, HTML and table rows; app.py wires them to Gradio.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from app_service import FileRow

SOURCE_HEADERS = ["#", "Source", "Score", "Passage"]
DOC_HEADERS = ["ID", "Name", "Type", "Pages", "Chunks", "Images", "Waiting", "Size", "Added"]
NOT_GROUNDED = ("**The documents don't hold an answer to this question**, so Loupe doesn't invent one. "
                "Try other words, or add a document that covers it.")
# The session id lives in the browser's localStorage, made there on the first visit: read before the load event
# runs (a gr.BrowserState is filled when its component mounts, which may come after the load event).
SESSION_JS = """() => {
  const key = "loupe-session";
  let id = window.localStorage.getItem(key);
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    const bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    window.localStorage.setItem(key, id);
  }
  return id;
}"""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Characters Markdown (and Gradio's LaTeX) would act on: a backslash before each shows it as itself.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~$>-])")
CSS = """
.loupe-table {width: 100%; border-collapse: collapse; font-size: 0.9em}
.loupe-table td, .loupe-table th {padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary)}
.loupe-context p {margin: 0.4em 0} .loupe-context .ctx-dim {opacity: 0.65}
.loupe-context mark {background: #fde68a; color: inherit; padding: 1px 2px}
"""


def text_of(content) -> str:
    """A chat message's text: Gradio 6 may send a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return " ".join(text_of(part) for part in content if part).strip()
    return "" if content is None else str(content)


def plain(text: str) -> str:
    """Text from a document (or the model that quotes it) made safe for a Markdown component: shown as it is,
    never as an image, a link, a tag or formatting, so a document can't make the browser load anything."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def answer_markdown(text: str, meta: dict) -> str:
    """An answer as the chat shows it: the cited text, then a flag for every unsupported sentence."""
    flagged = "".join(f"\n\n> ⚠ *Not found in the sources:* “{plain(s)}”" for s in meta.get("unsupported") or [])
    return plain(text) + flagged


def exposure_notice(host: str, share: bool, auth: str, public_demo: bool) -> str:
    """What to tell about who can reach the app: empty on loopback or with --auth; a warning when anyone on the
    network (or the internet) can use it unasked; one line when that is meant (a public demo)."""
    if auth or (host in LOOPBACK_HOSTS and not share):
        return ""
    if public_demo:
        return "Public demo: anyone who can reach this page can use it (LOUPE_PUBLIC_DEMO)."
    return ("⚠ **Anyone who can reach this server can read, add and delete its documents**: it serves beyond this "
            "computer without a password. Restart with `--auth user:password`, or serve on 127.0.0.1.")


def panel(meta: dict, display=lambda path: path) -> tuple[list[list], list[dict], str, list[tuple[str, str]]]:
    """Sources rows, the sources themselves, the note and the gallery for one answer's meta;
    `display` turns a stored image's path into one the web server may serve."""
    sources = meta.get("sources") or []
    rows = [[f"[{s['number']}]" + (" ✓" if s.get("cited") else ""), f"{s['file']}, p. {s['page']}",
             f"{s['score']:.3f}", " ".join(s["text"].split())[:160] + "…"] for s in sources]
    notes = []
    if meta.get("explanation"):
        notes.append(f"↻ {plain(meta['explanation'])}")
    elif meta.get("searched"):  # turns stored before explanations existed
        notes.append(f"↻ *Follow-up ({plain(meta.get('reason'))}); searched for:* {plain(meta['searched'])}")
    if meta.get("grounded") is False:
        notes.append(NOT_GROUNDED)
    if meta.get("unsupported"):
        notes.append(f"⚠ **{len(meta['unsupported'])} sentence(s) not supported by the sources** are flagged "
                     "in the answer: check them before you rely on them.")
    gallery = [(str(display(i["path"])), f"{i['file']}, page {i['page']} ({i['score']:.2f})")
               for i in meta.get("images") or [] if Path(i["path"]).exists()]
    return rows, sources, "\n\n".join(notes), gallery


def progress_html(rows: list[FileRow]) -> str:
    icons = {"added": "✓ added", "replaced": "↻ replaced", "duplicate": "= duplicate", "failed": "✗ failed"}
    body = "".join(
        f"<tr data-file='{html.escape(r.name)}'><td>{html.escape(r.name)}</td><td>{html.escape(r.stage)}</td>"
        f"<td>{html.escape(r.progress)}</td><td>{icons.get(r.status, '…')}</td><td>{html.escape(r.message)}</td></tr>"
        for r in rows)
    return ("<table class='loupe-table' id='upload-progress'><tr><th>File</th><th>Stage</th><th>Progress</th>"
            f"<th>Result</th><th>Message</th></tr>{body}</table>")


def context_html(passage) -> str:
    if not passage:
        return ""
    cited = next(chunk for chunk, is_cited in passage if is_cited)
    parts = [f"<p><mark>{html.escape(c.text)}</mark></p>" if is_cited else
             f"<p class='ctx-dim'>{html.escape(c.text)}</p>" for c, is_cited in passage]
    title = f"{html.escape(cited.file)}, page {cited.page}" + (f" · {html.escape(cited.heading)}" if cited.heading
                                                                else "")
    return f"<div class='loupe-context' id='source-context'><b>{title}</b>{''.join(parts)}</div>"
