"""Loupe in the browser: chat with a knowledge base, upload documents, see sources and images.

    python app.py [--host 127.0.0.1] [--port 7860] [--store FOLDER] [--share] [--auth user:password] ...

Every flag has an environment variable (see rag/settings.py). The REST API (webapi.py) is served beside
the UI under /api, and the named Gradio endpoints (ask, search_images, similar_images, list_documents,
ingest, delete_document, knowledge_bases) are callable from gradio_client.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rag.cli import add_embedder_flags, add_generator_flags, configured_settings, run_translated
from rag.components import Models, configure_hub
from rag.settings import Settings

if TYPE_CHECKING:
    import gradio as gr

    from service import LoupeService

# Named, not __name__: run as a script that is "__main__", a logger configure_logging leaves alone.
logger = logging.getLogger("app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="Loupe: the browser app.")
    add = parser.add_argument
    add("--host", help="address to serve on (env LOUPE_HOST, default 127.0.0.1)")
    add("--port", type=int, help="port (env LOUPE_PORT, default 7860)")
    add("--store", help="default knowledge base: a folder (others sit beside it) or a PostgreSQL URL "
                        "postgresql://user@host:5432/db?kb=NAME (env LOUPE_STORE)")
    add("--share", action="store_const", const=True, help="ask Gradio for a public share link (env LOUPE_SHARE)")
    add("--auth", help="user:password protecting the UI and the API (env LOUPE_AUTH)")
    add("--text-model", dest="text_model", help="Sentence-BERT model (env LOUPE_TEXT_MODEL)")
    add("--clip-model", dest="clip_model", help="open_clip architecture (env LOUPE_CLIP_MODEL)")
    add("--clip-pretrained", dest="clip_pretrained", help="open_clip weights tag or file (env LOUPE_CLIP_PRETRAINED)")
    add_generator_flags(add)
    add_embedder_flags(add)
    add("--device", choices=("auto", "cpu", "cuda"), help="env LOUPE_DEVICE")
    add("--max-upload-mb", dest="max_upload_mb", type=float, help="largest upload, per file (env LOUPE_MAX_UPLOAD_MB)")
    add("--max-upload-files", dest="max_upload_files", type=int, help="files per upload (env LOUPE_MAX_UPLOAD_FILES)")
    add("--allowed-origins", dest="allowed_origins",
        help="comma-separated scheme://host:port of other sites whose pages may send changes "
             "(env LOUPE_ALLOWED_ORIGINS)")
    add("--public-demo", dest="public_demo", action="store_const", const=True,
        help="serving beyond this computer without --auth is meant: a public demo (env LOUPE_PUBLIC_DEMO)")
    return parser


# --- start ------------------------------------------------------------------------------------------
def create_app(settings: Settings, models: Models | None = None) -> tuple[gr.Blocks, LoupeService]:
    if models is None:
        configure_hub()
        models = Models.load(settings)
    # Imported only now: huggingface_hub reads HF_HUB_OFFLINE once, when gradio first imports it, so configure_hub
    # must have decided it (a missing CLIP download would otherwise retry for ~45 s on a machine offline).
    from service import LoupeService
    from ui import build_ui

    service = LoupeService(settings, models)
    demo = build_ui(service)
    demo.queue(default_concurrency_limit=8)
    return demo, service


def launch(demo: gr.Blocks, service: LoupeService, quiet: bool = False) -> str:
    """Start serving (without blocking), mount the REST API, and return the local URL."""
    import gradio as gr

    from openai_api import add_openai_routes
    from ui import CSS, PAGE_JS
    from webapi import add_rest_routes, app_kwargs

    settings = service.settings
    auth = tuple(settings.auth.split(":", 1)) if settings.auth else None
    # Gradio explains a failed share link in ten lines of download instructions: say it in one instead.
    with contextlib.redirect_stdout(io.StringIO()) if settings.share else contextlib.nullcontext():
        _, url, share_url = demo.launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                                        auth=auth, max_file_size=settings.max_upload_bytes,
                                        prevent_thread_lock=True, quiet=quiet, css=CSS, js=PAGE_JS,
                                        footer_links=["api"],
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
    from ui.views import exposure_notice

    notice = exposure_notice(settings.host, settings.share, settings.auth, settings.public_demo)
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
    settings = configured_settings(args)
    if settings is None:
        return 2
    # A store that cannot be opened (a wrong password, a server down, ...) is one line and exit 1, as in the CLI.
    return run_translated(serve, args, settings, what="python app.py")


def serve(_: argparse.Namespace, settings: Settings) -> int:
    from rag.opening import reach_store

    start = time.perf_counter()
    reach_store(settings)
    demo, service = create_app(settings)
    if service.models.clip_status:
        print(service.models.clip_status, file=sys.stderr)
    url = launch(demo, service, quiet=True)  # Loupe says where it serves (below), and --share is its own flag
    from ingest.parse_worker import warm_up

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
