"""Loupe in the browser: chat with a knowledge base, upload documents, see sources and images.

    python app.py [--host 127.0.0.1] [--port 7860] [--store FOLDER] [--share] [--auth user:password] ...

Every flag has an environment variable (see rag/settings.py). The REST API (webapi.py) is served beside
the UI under /api, and the named Gradio endpoints (ask, search_images, similar_images, list_documents,
ingest, delete_document, knowledge_bases) are callable from gradio_client.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no calls home: Loupe runs offline

from rag.components import Models, configure_hub  # noqa: E402
from rag.settings import ANSWER_MODES, MODE_DESCRIPTIONS, Settings, SettingsError  # noqa: E402

# huggingface_hub reads HF_HUB_OFFLINE once, when gradio first imports it: decide before that, or a
# missing CLIP download retries for ~45 s on a machine without internet.
configure_hub()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import html  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

import app_views as views  # noqa: E402
from app_service import FileRow, LoupeService, answer_meta  # noqa: E402
from ingest.parse_worker import warm_up  # noqa: E402
from openai_api import add_openai_routes  # noqa: E402
from rag.answering import Answer  # noqa: E402
from rag.cli import add_generator_flags  # noqa: E402
from rag.conversations import check_session, new_session_id  # noqa: E402
from rag.followups import Rewrite  # noqa: E402
from rag.logs import configure_logging  # noqa: E402
from webapi import (  # noqa: E402
    ReceivedFiles,
    add_named_endpoints,
    add_rest_routes,
    app_kwargs,
    gradio_error,
    user_message,
)

# Named, not __name__: run as a script that is "__main__", a logger configure_logging leaves alone.
logger = logging.getLogger("app")
PRIVATE = {"api_visibility": "private"}  # UI events: not part of the documented Gradio API


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="Loupe: the browser app.")
    add = parser.add_argument
    add("--host", help="address to serve on (env LOUPE_HOST, default 127.0.0.1)")
    add("--port", type=int, help="port (env LOUPE_PORT, default 7860)")
    add("--store", type=Path, help="default knowledge-base folder; others sit beside it (env LOUPE_STORE)")
    add("--share", action="store_const", const=True, help="ask Gradio for a public share link (env LOUPE_SHARE)")
    add("--auth", help="user:password protecting the UI and the API (env LOUPE_AUTH)")
    add("--text-model", dest="text_model", help="Sentence-BERT model (env LOUPE_TEXT_MODEL)")
    add("--clip-model", dest="clip_model", help="open_clip architecture (env LOUPE_CLIP_MODEL)")
    add("--clip-pretrained", dest="clip_pretrained", help="open_clip weights tag or file (env LOUPE_CLIP_PRETRAINED)")
    add_generator_flags(add)
    add("--device", choices=("auto", "cpu", "cuda"), help="env LOUPE_DEVICE")
    add("--max-upload-mb", dest="max_upload_mb", type=float, help="largest upload, per file (env LOUPE_MAX_UPLOAD_MB)")
    add("--max-upload-files", dest="max_upload_files", type=int, help="files per upload (env LOUPE_MAX_UPLOAD_FILES)")
    add("--allowed-origins", dest="allowed_origins",
        help="comma-separated scheme://host:port of other sites whose pages may send changes "
             "(env LOUPE_ALLOWED_ORIGINS)")
    add("--public-demo", dest="public_demo", action="store_const", const=True,
        help="serving beyond this computer without --auth is meant: a public demo (env LOUPE_PUBLIC_DEMO)")
    return parser


def failure_note(error: BaseException, doing: str) -> str:
    """A failed UI action as the page shows it: the translator's message (a bug logged, its text withheld),
    escaped for Markdown."""
    return f"⚠ {views.plain(user_message(error, doing))}"


def exposure_notice(settings: Settings) -> str:
    return views.exposure_notice(settings.host, settings.share, settings.auth, settings.public_demo)


# --- the UI -----------------------------------------------------------------------------------------
def build_ui(service: LoupeService) -> gr.Blocks:
    settings, models = service.settings, service.models
    clip_note = f"⚠ {models.clip_status}" if models.clip_status else ""

    def kb_view(kb: str):
        docs = service.documents(kb)
        waiting = sum(d.images_waiting for d in docs)
        status = (f"**Knowledge base:** `{kb}` · {len(docs)} documents · {sum(d.chunks for d in docs)} passages · "
                  f"{sum(d.images for d in docs)} images" + (f" ({waiting} waiting for CLIP)" if waiting else ""))
        table = [[d.id, d.name, d.kind, d.pages, d.chunks, d.images, d.images_waiting, f"{d.size_bytes / 1024:.0f} KB",
                  d.added_at.replace("T", " ").removesuffix("Z")[:16] + " UTC"] for d in docs]
        picker = gr.Dropdown(choices=[(f"{d.name} (id {d.id})", d.id) for d in docs], value=None)
        return status, gr.Column(visible=not docs), table, picker

    with gr.Blocks(title="Loupe — ask your documents") as demo:
        received = ReceivedFiles(demo, settings.max_upload_mb)
        service.on_display_removed = received.remove_cached_copies
        exposure = exposure_notice(settings)
        gr.Markdown(exposure, visible=bool(exposure), elem_id="exposure-warning")
        session = gr.State(None)  # the browser's session id, from localStorage (SESSION_JS) at page load
        session_carrier = gr.Textbox(visible=False)
        sources_state = gr.State([])
        with gr.Row(equal_height=True):
            gr.Markdown("# Loupe\nAsk your documents: every answer shows the passages it comes from.", scale=3)
            kb_pick = gr.Dropdown(service.kb_names(), value=service.default_kb, label="Knowledge base", scale=1,
                                  elem_id="kb-pick")
        status = gr.Markdown(elem_id="kb-status")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Column(visible=False, elem_id="empty-banner") as banner:
                    gr.Markdown("### This knowledge base is empty\nLoad a small sample knowledge base (a user guide, "
                                "an FAQ, a PDF and a diagram about Loupe) to try it at once, or add your own files "
                                "in the **Documents** tab.")
                    sample_button = gr.Button("Load the sample knowledge base", variant="primary")
                    sample_progress = gr.HTML()
                with gr.Row():
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chatbot", feedback_options=None,
                                             buttons=["copy"], placeholder="Ask a question about your documents.")
                        with gr.Row():
                            question = gr.Textbox(placeholder="Ask a question… (Enter to send)", show_label=False,
                                                  scale=5, elem_id="question", autofocus=True)
                            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                        with gr.Row():
                            top_k = gr.Slider(1, 20, value=settings.top_k, step=1, label="Top-k passages")
                            mode = gr.Radio(list(ANSWER_MODES), value=settings.answer_mode, label="Answer mode",
                                            info=" · ".join(f"{m}: {d}" for m, d in MODE_DESCRIPTIONS.items()))
                            new_chat = gr.Button("New chat", size="sm")
                    with gr.Column(scale=2):
                        note = gr.Markdown(elem_id="answer-note")
                        sources = gr.Dataframe(headers=views.SOURCE_HEADERS, interactive=False, wrap=True,
                                               label="Sources — click one to read it in context",
                                               elem_id="sources", max_height=320,
                                               column_widths=["11%", "25%", "14%", "50%"])
                        context = gr.HTML(elem_id="context")
                        gallery = gr.Gallery(label="Images from the answer", columns=3, height=220,
                                             elem_id="answer-images")
                        gr.Markdown(clip_note, visible=bool(clip_note), elem_id="clip-note-chat")
            with gr.Tab("Documents", id="documents"):
                files = gr.File(label="Drop files here (PDF, Word, HTML, Markdown, text, images)", height=150,
                                file_count="multiple", elem_id="upload")
                add = gr.Button("Add to knowledge base", variant="primary", elem_id="add-files")
                progress = gr.HTML(elem_id="progress")
                library = gr.Dataframe(headers=views.DOC_HEADERS, label="Library", interactive=False, elem_id="library")
                with gr.Row():
                    doc_pick = gr.Dropdown(label="Document", choices=[], elem_id="doc-pick", scale=3)
                    delete_doc = gr.Button("Delete document", variant="stop", elem_id="delete-doc", scale=1)
                    embed = gr.Button("Re-embed waiting images", scale=1)
                doc_message = gr.Markdown(elem_id="doc-message")
                with gr.Accordion("Knowledge bases", open=False):
                    with gr.Row():
                        new_kb = gr.Textbox(label="New knowledge base", placeholder="letters, digits, - and _")
                        create_kb = gr.Button("Create and switch")
                    with gr.Row():
                        confirm = gr.Checkbox(label="Yes, delete the selected knowledge base and all its documents")
                        drop_kb = gr.Button("Delete knowledge base", variant="stop")
                    kb_message = gr.Markdown()
            with gr.Tab("Image search", id="images"):
                gr.Markdown(clip_note, visible=bool(clip_note), elem_id="clip-note")
                with gr.Row():
                    with gr.Column():
                        clip_on = models.image_embedder is not None
                        image_query = gr.Textbox(label="Describe the image", interactive=clip_on)
                        search_text = gr.Button("Search by text", interactive=clip_on)
                    with gr.Column():
                        # image_mode=None: the handler gets the uploaded file itself, not a converted copy
                        query_image = gr.Image(label="…or find images similar to this one", type="filepath",
                                               sources=["upload", "clipboard"], image_mode=None,
                                               height=180, elem_id="query-image")
                        search_image = gr.Button("Find similar images", elem_id="find-similar")
                image_message = gr.Markdown(elem_id="image-message")
                image_results = gr.Gallery(label="Matching images", columns=4, height=360, elem_id="image-results")

        kb_outputs = [status, banner, library, doc_pick]

        # --- session, history and knowledge base ---
        def on_load(session_id):
            try:
                session_id = check_session(session_id)
            except ValueError:
                session_id = new_session_id()
            kb = service.conversations.kb_of(session_id)
            kb = kb if kb in service.kb_names() else service.default_kb
            messages = service.conversations.messages(session_id)
            history = [{"role": m.role, "content": views.answer_markdown(m.content, m.meta) if m.role == "assistant"
                        else m.content} for m in messages]
            last = next((m.meta for m in reversed(messages) if m.role == "assistant"), {})
            rows, found, text, images = views.panel(last, service.display_copy)
            return (session_id, gr.Dropdown(choices=service.kb_names(), value=kb), history, rows, found, text,
                    images, *kb_view(kb))

        demo.load(on_load, [session_carrier], [session, kb_pick, chatbot, sources, sources_state, note, gallery,
                                               *kb_outputs], js=views.SESSION_JS, **PRIVATE)

        # a user's switch (.input, not .change: on_load sets the value too, and must keep the restored panel)
        def switch(kb, session_id):
            if session_id:
                service.conversations.set_kb(session_id, kb)
            return (*kb_view(kb), [], [], "", [], "")

        switched = [*kb_outputs, sources, sources_state, note, gallery, context]
        kb_pick.input(switch, [kb_pick, session], switched, **PRIVATE)

        # --- chat ---
        def respond(message, history, session_id, kb, k, answer_mode):
            asked = views.text_of(message).strip()
            if not asked:
                raise gr.Error("Type a question first.")
            history = [{"role": m["role"], "content": views.text_of(m["content"])} for m in history or []]
            history += [{"role": "user", "content": asked},
                        {"role": "assistant", "content": "_Searching the documents…_"}]
            yield history, "", [], [], "", [], ""
            pieces, searched, rewrite = [], "", Rewrite(asked, asked)
            try:
                for event in service.chat(kb, asked, int(k), answer_mode, session_id):
                    if isinstance(event, Rewrite):
                        rewrite = event
                        searched = f"↻ {views.plain(event.explanation)}" if event.rewritten else ""
                    elif isinstance(event, str):
                        pieces.append(event)
                        history[-1]["content"] = views.plain("".join(pieces))
                        yield history, gr.skip(), gr.skip(), gr.skip(), searched, gr.skip(), gr.skip()
                    elif isinstance(event, Answer):
                        meta = answer_meta(event, rewrite)
                        history[-1]["content"] = views.answer_markdown(event.text, meta)
                        rows, found, text, images = views.panel(meta, service.display_copy)
                        yield history, "", rows, found, text, images, ""
            except Exception as error:  # the user's to fix, or a bug (logged): said in the chat either way
                history[-1]["content"] = failure_note(error, "answer")
                yield history, gr.skip(), [], [], "", [], ""

        chat_io = dict(inputs=[question, chatbot, session, kb_pick, top_k, mode],
                       outputs=[chatbot, question, sources, sources_state, note, gallery, context],
                       concurrency_limit=service.chat_concurrency, concurrency_id="chat", **PRIVATE)
        question.submit(respond, **chat_io)
        send.click(respond, **chat_io)

        def show_context(found, kb, evt: gr.SelectData):
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not found or row is None or row >= len(found):
                return ""
            try:
                return views.context_html(service.passage(kb, found[row]["chunk_id"]))
            except Exception as error:
                return f"<p>⚠ {html.escape(user_message(error, 'show the passage'))}</p>"

        sources.select(show_context, [sources_state, kb_pick], context, **PRIVATE)

        def clear_chat(session_id):
            if session_id:
                service.conversations.clear(session_id)
            return [], [], [], "", [], ""

        new_chat.click(clear_chat, [session], [chatbot, sources, sources_state, note, gallery, context], **PRIVATE)

        # --- documents ---
        def run_ingest(kb, uploads):
            rows: list[FileRow] = []
            for rows in service.ingest_live(kb, uploads):
                yield views.progress_html(rows), *[gr.skip()] * len(kb_outputs)
            yield views.progress_html(rows), *kb_view(kb)

        def upload(paths, kb):
            if not paths:
                raise gr.Error("Drop or choose files first.")
            try:
                checked = [received.path(p) for p in paths]
            except Exception as error:
                raise gradio_error(error, "read the upload") from None
            try:
                yield from run_ingest(kb, [(p.name, p) for p in checked])
            finally:
                received.discard(checked)  # Loupe has its own copy now

        ingest_io = dict(concurrency_limit=2, concurrency_id="ingest", **PRIVATE)
        add.click(upload, [files, kb_pick], [progress, *kb_outputs], **ingest_io).then(
            lambda: None, None, files, **PRIVATE)
        def load_samples(kb):
            yield from run_ingest(kb, service.sample_files())

        sample_button.click(load_samples, [kb_pick], [sample_progress, *kb_outputs], **ingest_io)

        def remove(document_id, kb):
            if document_id is None:
                raise gr.Error("Pick a document to delete.")
            try:
                info = service.delete_document(kb, int(document_id))
            except Exception as error:
                raise gradio_error(error, "delete the document") from None
            done = f"Deleted **{views.plain(info.name)}** (id {info.id}): {info.chunks} passages, {info.images} images."
            return done, *kb_view(kb)

        delete_doc.click(remove, [doc_pick, kb_pick], [doc_message, *kb_outputs], **PRIVATE)

        def embed_waiting(kb):
            try:
                count = service.embed_waiting_images(kb)
            except Exception as error:
                return failure_note(error, "embed the images"), *kb_view(kb)
            return f"Embedded {count} waiting images.", *kb_view(kb)

        embed.click(embed_waiting, [kb_pick], [doc_message, *kb_outputs], **ingest_io)

        unchanged = [gr.skip()] * len(switched)

        def make_kb(name, session_id):
            name = str(name or "").strip()
            try:
                service.create_kb(name)
            except Exception as error:
                return failure_note(error, "create the knowledge base"), gr.skip(), gr.skip(), \
                    *unchanged
            return (f"Created **{name}**.", gr.Dropdown(choices=service.kb_names(), value=name), "",
                    *switch(name, session_id))

        create_kb.click(make_kb, [new_kb, session], [kb_message, kb_pick, new_kb, *switched], **PRIVATE)

        def remove_kb(kb, confirmed, session_id):
            if not confirmed:
                return "Tick the box to confirm first.", gr.skip(), False, *unchanged
            try:
                service.delete_kb(kb)
            except Exception as error:
                return failure_note(error, "delete the knowledge base"), gr.skip(), False, \
                    *unchanged
            return (f"Deleted knowledge base **{kb}**.", gr.Dropdown(choices=service.kb_names(),
                    value=service.default_kb), False, *switch(service.default_kb, session_id))

        drop_kb.click(remove_kb, [kb_pick, confirm, session], [kb_message, kb_pick, confirm, *switched], **ingest_io)

        # --- image search ---
        def show_images(results) -> tuple[list, str]:
            items = [(r.path, f"{r.file}, page {r.page} ({r.score:.3f})") for r in results]
            return items, (f"{len(results)} images; best score {results[0].score:.3f}." if results
                           else "No images in this knowledge base yet.")

        def by_text(query, kb):
            try:
                return show_images(service.search_images(kb, query))
            except Exception as error:
                return [], failure_note(error, "search images")

        def by_image(path, kb):
            if not path:
                return [], "Upload an image first."
            try:
                return show_images(service.similar_images(kb, received.read(path)))
            except Exception as error:
                return [], failure_note(error, "search images")

        image_query.submit(by_text, [image_query, kb_pick], [image_results, image_message], **PRIVATE)
        search_text.click(by_text, [image_query, kb_pick], [image_results, image_message], **PRIVATE)
        search_image.click(by_image, [query_image, kb_pick], [image_results, image_message], **PRIVATE)
        add_named_endpoints(service, received)
    return demo


# --- start ------------------------------------------------------------------------------------------
def create_app(settings: Settings, models: Models | None = None) -> tuple[gr.Blocks, LoupeService]:
    if models is None:
        configure_hub()
        models = Models.load(settings)
    service = LoupeService(settings, models)
    demo = build_ui(service)
    demo.queue(default_concurrency_limit=8)
    return demo, service


def launch(demo: gr.Blocks, service: LoupeService, quiet: bool = False) -> str:
    """Start serving (without blocking), mount the REST API, and return the local URL."""
    settings = service.settings
    auth = tuple(settings.auth.split(":", 1)) if settings.auth else None
    # Gradio explains a failed share link in ten lines of download instructions: say it in one instead.
    with contextlib.redirect_stdout(io.StringIO()) if settings.share else contextlib.nullcontext():
        _, url, share_url = demo.launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                                        auth=auth, max_file_size=settings.max_upload_bytes,
                                        prevent_thread_lock=True, quiet=quiet, css=views.CSS, footer_links=["api"],
                                        theme=gr.themes.Soft(), show_error=False,
                                        app_kwargs=app_kwargs(settings))
    add_rest_routes(demo.app, service)
    add_openai_routes(demo.app, service)  # /v1: Loupe as an OpenAI-compatible chat server
    warn_if_exposed(settings)
    if settings.share:
        print(f"Share link: {share_url}" if share_url else
              f"No share link: {share_failure_reason()} Loupe keeps serving on {url}", file=sys.stderr)
    return url


def warn_if_exposed(settings: Settings) -> None:
    notice = exposure_notice(settings)
    if notice and not settings.public_demo:
        logger.warning("\n%s\n%s\n%s", "!" * 100, notice.replace("*", "").replace("`", ""), "!" * 100)
    elif notice:
        logger.info(notice)


def share_failure_reason() -> str:
    try:
        from gradio.tunneling import BINARY_PATH
    except ImportError:
        return "Gradio could not open its share tunnel."
    if not Path(BINARY_PATH).exists():
        return (f"Gradio's tunnel program ({Path(BINARY_PATH).name}) is missing and could not be downloaded "
                "(no internet connection?).")
    return "Gradio's share server could not be reached (no internet connection?)."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host is None and os.environ.get("SPACE_ID") and not os.environ.get("LOUPE_HOST"):
        args.host = "0.0.0.0"  # a Hugging Face Space reaches the app from outside its container
    try:
        settings = Settings.from_args(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    start = time.perf_counter()
    demo, service = create_app(settings)
    if service.models.clip_status:
        print(service.models.clip_status, file=sys.stderr)
    url = launch(demo, service)
    threading.Thread(target=service.models.generator, name="load-generator", daemon=True).start()
    warm_up()  # a parse worker, started now so that the first upload doesn't wait for one
    print(f"Loupe is ready on {url} ({time.perf_counter() - start:.1f} s); REST API under {url.rstrip('/')}/api",
          flush=True)
    try:
        demo.block_thread()
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
