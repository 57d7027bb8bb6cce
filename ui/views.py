"""How the browser app shows things: chat messages, source cards, upload progress, passages in context.

Pure functions from the service's records to Markdown, HTML and table rows; the tab modules wire them to Gradio.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

from rag.finetune import FinetuneReport
from rag.records import heading_parts, place, web_link
from rag.reembed import ReembedReport
from rag.settings import MODE_DESCRIPTIONS
from rag.wording import counted
from service.embedding import Job
from service.uploads import FileRow
from webapi import user_message

DOC_HEADERS = ["ID", "Name", "Type", "Pages", "Chunks", "Images", "Waiting", "Size", "Added"]
NOT_GROUNDED = ("**The documents don't hold an answer to this question**, so Loupe doesn't invent one. "
                "Try other words, or add a document that covers it.")
STOPPED = "\n\n*⏹ Stopped.*"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Characters Markdown (and Gradio's LaTeX) would act on: a backslash before each shows it as itself.
# Parentheses are left alone: with the brackets escaped they open no link or image, and an escaped ")" right after a
# web address would be taken into the address by the renderer's automatic linking.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~$>-])")
# A bare web address (captured, for re.split), without brackets, quotes or spaces, and without the punctuation that
# ends a sentence or closes a parenthesis after it.
_BARE_URL = re.compile(r"(https?://[^\s<>\"'`\[\](){}|\\^]*[^\s<>\"'`\[\](){}|\\^.,;:!?*_~-])")
# A citation "[n]" after plain() escaped it.
_ESCAPED_CITATION = re.compile(r"\\\[(\d{1,2})\\\]")
CITE_PREFIX = "#cite-"
MIN_OVERLAP_CHARS = 12  # a shorter shared start and end is chance ("the " ... "the "), not the chunker's overlap

# The session id and the chosen answer mode live in the browser's localStorage: read before the load event runs
# (a gr.BrowserState is filled when its component mounts, which may come after the load event).
LOAD_JS = """(sessionCarrier, mode, chats) => {
  const key = "loupe-session";
  let id = window.localStorage.getItem(key);
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    const bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    window.localStorage.setItem(key, id);
  }
  const ids = window.localStorage.getItem("loupe-conversations") || "[]";
  return [id, window.localStorage.getItem("loupe-mode") || mode, JSON.stringify({current: id, ids: JSON.parse(ids)})];
}"""
# The conversation shown and the browser's conversations, kept in localStorage whenever the server changes them.
KEEP_CHATS_JS = """(chats) => {
  const value = JSON.parse(chats || "{}");
  if (value.current) window.localStorage.setItem("loupe-session", value.current);
  if (value.ids) window.localStorage.setItem("loupe-conversations", JSON.stringify(value.ids));
  return chats;
}"""
SAVE_MODE_JS = """(mode) => { window.localStorage.setItem("loupe-mode", mode); return mode; }"""
# A click on a citation link in an answer, or on a source card, opens that source: the page remembers its number
# and clicks the hidden #cite-open button, whose event (CITED_JS) sends the number to the server.
PAGE_JS = """() => {
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[href^='#cite-']");
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    window.__loupeCite = Number(link.getAttribute("href").slice(6));
    document.querySelector("#cite-open")?.click();
  }, true);
}"""
CITED_JS = """(number, found, kb) => [window.__loupeCite || 0, found, kb]"""


def scroll_into_view_js(elem_id: str) -> str:
    """A Gradio `js` handler that scrolls the component `elem_id` into view (a passage opened below a click)."""
    return f"""() => {{
  const shown = document.getElementById("{elem_id}");
  if (shown) shown.scrollIntoView({{block: "nearest"}});
}}"""


CSS = """
.loupe-table {width: 100%; border-collapse: collapse; font-size: 0.9em}
.loupe-table td, .loupe-table th {padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary)}
.loupe-context p {margin: 0.4em 0} .loupe-context .ctx-dim {opacity: 0.65}
.loupe-context mark {background: #fde68a; color: inherit; padding: 1px 2px}
.loupe-hidden {display: none !important}
.source-cards {display: flex; flex-direction: column; gap: 6px}
.source-card {text-align: left; border: 1px solid var(--border-color-primary); border-radius: 8px;
  overflow-wrap: anywhere}
.source-card .source-open {display: block; text-align: left; padding: 6px 10px; color: inherit !important;
  text-decoration: none !important}
.source-web {display: inline-block; padding: 0 10px 6px; font-size: 0.85em}
.source-card:hover, .source-card.selected {border-color: var(--color-accent);
  background: var(--background-fill-secondary)}
.source-card .source-head {font-weight: 600} .source-card .source-score {opacity: 0.7; font-weight: normal}
.source-card .source-text {font-size: 0.9em; opacity: 0.85}
#chatbot a[href^='#cite-'] {font-weight: 600; text-decoration: none}
.mode-help p {margin: 0; font-size: 0.85em} .clip-note {font-size: 0.9em}
.loupe-bar progress {width: 100%; height: 10px}
@media (max-width: 640px) {
  #question-row {flex-wrap: wrap}
  #question-row > * {min-width: 100% !important; flex-basis: 100% !important}
}
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
    never as an image, a link, a tag or formatting, so a document can't make the browser load anything.

    A bare web address is left unescaped: the renderer links bare addresses itself and would take a backslash
    into the address ("https://www.cwi.nl\\)"). Such a link loads nothing until it is clicked, and the address
    stops before any character that could open Markdown syntax around it."""
    pieces = []
    for i, piece in enumerate(_BARE_URL.split(str(text))):
        escaped = html.escape(piece, quote=False)
        pieces.append(escaped if i % 2 else _MARKDOWN_SPECIAL.sub(r"\\\1", escaped))
    return "".join(pieces)


def failure_html(error: BaseException, doing: str) -> str:
    """A failed UI action in an HTML component: ui.chat.failure_note's words, escaped for HTML rather than Markdown
    (an HTML component shows Markdown's backslashes: "closest known spellings: no\\_telemetry")."""
    return f"⚠ {html.escape(user_message(error, doing))}"


def with_citation_links(markdown: str, numbers: set[int]) -> str:
    """Each escaped "[n]" of an answer whose source n exists becomes a link that opens that source."""
    def link(match: re.Match) -> str:
        number = int(match.group(1))
        return f"[\\[{number}\\]]({CITE_PREFIX}{number})" if number in numbers else match.group(0)

    return _ESCAPED_CITATION.sub(link, markdown)


def answer_markdown(text: str, meta: dict) -> str:
    """An answer as the chat shows it: the cited text, its citations as links, then a flag for every unsupported
    sentence."""
    numbers = {int(s["number"]) for s in meta.get("sources") or []}
    flagged = "".join(f"\n\n> ⚠ *Not found in the sources:* “{plain(s)}”" for s in meta.get("unsupported") or [])
    return with_citation_links(plain(text), numbers) + flagged


def mode_help() -> str:
    """One line for each answer mode."""
    return "\n".join(f"- **{mode}**: {html.escape(description)}" for mode, description in MODE_DESCRIPTIONS.items())


def exposure_notice(host: str, share: bool, auth: str, public_demo: bool) -> str:
    """What to tell about who can reach the app: empty on loopback or with --auth; a warning when anyone on the
    network (or the internet) can use it unasked; one line when that is meant (a public demo)."""
    if auth or (host in LOOPBACK_HOSTS and not share):
        return ""
    if public_demo:
        return "Public demo: anyone who can reach this page can use it (LOUPE_PUBLIC_DEMO)."
    return ("⚠ **Anyone who can reach this server can read, add and delete its documents**: it serves beyond this "
            "computer without a password. Restart with `--auth user:password`, or serve on 127.0.0.1.")


def clip_note_html(clip_status: str) -> str:
    """CLIP off, said in one plain line; the technical reason behind a "details" toggle."""
    if not clip_status:
        return ""
    return (f"<details class='clip-note'><summary>⚠ Image search by text is off (no CLIP model).</summary>"
            f"{html.escape(clip_status)}</details>")


def citation(file: str, page: int, heading: str | None) -> str:
    """A passage's file and place, in rag.records.place's words, as escaped HTML: "page.html, § Setup". A section
    whose page named its own address leaves the address out of the words (web_link_html links it)."""
    title = heading_parts(heading)[0] if web_link(heading) else heading
    where = place(file, page, title)
    return html.escape(file + (f", {where}" if where else ""))


def web_link_html(heading: str | None) -> str:
    """A link that opens the passage's section on the web, in a new tab; "" when its page named no address. The
    address comes from the document: only http(s) ever gets here (ingest.readers.html), and it is escaped."""
    address = web_link(heading)
    if not address:
        return ""
    return (f"<a class='source-web' href='{html.escape(address)}' target='_blank' rel='noopener noreferrer nofollow'>"
            f"Open § {html.escape(heading_parts(heading)[0] or '')} on the web ↗</a>")


def sources_html(sources: list[dict], selected: int | None = None) -> str:
    """The sources of an answer as cards; clicking one (or its citation in the answer) opens it in context."""
    if not sources:
        return ""
    cards = []
    for s in sources:
        number = int(s["number"])
        head = f"[{number}]" + (" ✓" if s.get("cited") else "") + " " + citation(s["file"], s["page"], s.get("heading"))
        snippet = html.escape(" ".join(s["text"].split())[:160]) + "…"
        chosen = " selected" if number == selected else ""
        cards.append(f"<div class='source-card{chosen}' data-source='{number}'>"
                     f"<a class='source-open' href='{CITE_PREFIX}{number}'>"
                     f"<div class='source-head'>{head} <span class='source-score'>score {s['score']:.3f}</span></div>"
                     f"<div class='source-text'>{snippet}</div></a>{web_link_html(s.get('heading'))}</div>")
    return ("<div class='source-cards'><div class='source-title'>Sources: click one to read it in context</div>"
            f"{''.join(cards)}</div>")


def panel(meta: dict, display=lambda path: path) -> tuple[str, list[dict], str, list[tuple[str, str]]]:
    """The source cards, the sources themselves, the note and the gallery for one answer's meta;
    `display` turns a stored image's path into one the web server may serve."""
    sources = meta.get("sources") or []
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
    return sources_html(sources), sources, "\n\n".join(notes), gallery


def size_text(size_bytes: int) -> str:
    """"348 B", "12 KB", "3.4 MB": a file's size as people read it (a small file is not "0 KB")."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.0f} KB"
    return f"{size_bytes / 1024 / 1024:.1f} MB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def bar_html(element_id: str, value: float, maximum: float, caption: str) -> str:
    """A progress bar with its caption under it (the upload's overall bar, a background job's)."""
    return (f"<div id='{element_id}' class='loupe-bar'><progress value='{value:.4g}' max='{max(maximum, 1):g}'>"
            f"</progress><div>{html.escape(caption)}</div></div>")


def overall_progress_html(rows: list[FileRow], elapsed: float) -> str:
    """One bar for the whole upload: files finished of all, time so far, and time left at the pace so far. The bar
    moves within a file as its pages are read (a scanned PDF's OCR takes seconds a page)."""
    finished = sum(1 for r in rows if r.finished)
    done = sum(r.share_done for r in rows)
    total = len(rows)
    if finished == total:
        left = "done"
    elif done > 0:
        left = f"about {_duration(elapsed / done * (total - done))} left"
    else:
        left = "estimating the time left…"
    caption = f"{finished} of {total} files · {_duration(elapsed)} elapsed · {left}"
    return bar_html("upload-overall", done, total, caption)


def job_progress_html(job: Job) -> str:
    """A fine-tune's or re-embed's bar: its phase, steps, time so far and time left (from the job's own pace)."""
    if job.error:
        state = "failed"
    elif not job.running:
        state = "done"
    elif math.isnan(job.seconds_left):
        state = "estimating the time left…"
    else:
        state = f"about {_duration(job.seconds_left)} left"
    steps = f" · step {job.done} of {job.total}" if job.total else ""
    caption = f"{job.kind.capitalize()} of {job.kb}: {job.phase}{steps} · {_duration(job.elapsed)} elapsed · {state}"
    if not job.running and not job.error:
        return bar_html("embedder-bar", 1, 1, caption)
    return bar_html("embedder-bar", job.done, job.total, caption)


def model_label(model: str) -> str:
    """A model as the page names it: a folder of the server by its own name only."""
    return Path(model).name if Path(model).is_absolute() else model


def finetune_report(report: FinetuneReport, kb: str, model_name: str) -> str:
    """What a fine-tune did, the held-back check before and after (a warning when it got worse), and what next."""
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in sorted(report.pairs.items()))
    before, after = report.before, report.after
    lines = [f"**Fine-tuned** {plain(model_label(report.base_model))} on **{plain(kb)}**: "
             f"{sum(report.pairs.values()):,} training pairs ({kinds}), {counted(report.options.epochs, 'epoch')}.",
             f"Held-back check ({report.held_back_pairs:,} pairs from {counted(report.held_back_chunks, 'passage')} "
             f"kept out of training): MRR {before.mrr:.3f} → {after.mrr:.3f}, "
             f"recall@1 {before.recall_at_1:.3f} → {after.recall_at_1:.3f}."]
    if report.worse:
        lines.append("⚠ **The held-back check got worse**: the tuned model finds held-back passages less well than "
                     "the model it started from. Keep the current model, or compare both with `python -m rag eval` "
                     "before you switch.")
    lines.append(f"Saved as **{plain(model_name)}**: pick it under *Model* and re-embed to switch this knowledge "
                 "base to it.")
    return "\n\n".join(lines)


def reembed_report(report: ReembedReport, serving_model: str) -> str:
    """What a re-embed did; and, when the app runs another embedder, that it serves this knowledge base again only
    once restarted with the new one (a store refuses vectors of any model but its own)."""
    reduced = (f", {report.dims} dimensions kept by PCA ({100 * (report.explained_variance or 0):.1f}% of the "
               "variance)" if report.dims else "")
    text = (f"**Re-embedded** {counted(report.chunks, 'passage')} of {counted(report.documents, 'document')} in "
            f"**{plain(report.store)}**: {plain(model_label(report.old_model))} → "
            f"{plain(model_label(report.new_model))}{reduced}.")
    if report.new_model != serving_model:
        text += ("\n\n⚠ This Loupe runs another embedder, so it can't open this knowledge base until it is "
                 "restarted with the new one (`--embedder`, `--text-model`, `--embed-dims`).")
    return text


def progress_html(rows: list[FileRow], elapsed: float = 0.0) -> str:
    icons = {"added": "✓ added", "replaced": "↻ replaced", "duplicate": "= duplicate", "failed": "✗ failed"}
    body = "".join(
        f"<tr data-file='{html.escape(r.name)}'><td>{html.escape(r.name)}</td><td>{html.escape(r.stage)}</td>"
        f"<td>{html.escape(r.progress)}</td><td>{icons.get(r.status, '…')}</td><td>{html.escape(r.message)}</td></tr>"
        for r in rows)
    return (overall_progress_html(rows, elapsed) +
            "<table class='loupe-table' id='upload-progress'><tr><th>File</th><th>Stage</th><th>Progress</th>"
            f"<th>Result</th><th>Message</th></tr>{body}</table>")


def context_html(passage) -> str:
    """The cited chunk among its neighbours, each text once: chunks overlap (chunk_overlap), so the text a chunk
    shares with the one before is shown once, kept whole in the cited chunk."""
    if not passage:
        return ""
    cited = next(chunk for chunk, is_cited in passage if is_cited)
    texts = [chunk.text for chunk, _ in passage]
    for i in range(1, len(texts)):
        shared = _overlap(texts[i - 1], texts[i])
        if passage[i][1]:  # the cited chunk keeps its whole text; the dim one before it loses the shared end
            texts[i - 1] = texts[i - 1][:len(texts[i - 1]) - shared].rstrip()
        else:
            texts[i] = texts[i][shared:].lstrip()
    parts = [f"<p><mark>{html.escape(text)}</mark></p>" if is_cited else
             f"<p class='ctx-dim'>{html.escape(text)}</p>" for text, (_, is_cited) in zip(texts, passage) if text]
    title = citation(cited.file, cited.page, cited.heading)
    return (f"<div class='loupe-context'><b>{title}</b> {web_link_html(cited.heading)}"
            f"{''.join(parts)}</div>")


def _overlap(before: str, after: str) -> int:
    """The length of the longest start of `after` that `before` ends with (0 when under a few words' worth)."""
    for length in range(min(len(before), len(after)), MIN_OVERLAP_CHARS - 1, -1):
        if before.endswith(after[:length]):
            return length
    return 0
