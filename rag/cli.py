"""The command line: `python -m rag ingest|ask|search|list|delete|embed-images|export-onnx|eval|finetune|explore|
reembed`.

This module is an entry point, like app.py: it builds Settings once and wires rag and ingest together,
so it is the one module in `rag` that imports `ingest`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rag.errors import LoupeError
from rag.logs import configure_logging
from rag.opening import load_models, open_existing_store, open_without_models
from rag.records import heading_parts, place
from rag.settings import (
    ANN_KINDS,
    ANSWER_MODES,
    EMBEDDERS,
    GENERATOR_BACKENDS,
    MODE_DESCRIPTIONS,
    RETRIEVAL_MODES,
    Settings,
    SettingsError,
)

logger = logging.getLogger(__name__)


def add_generator_flags(add: Callable[..., object]) -> None:
    """The generator's flags, shared by the CLI and the app. The API key comes from the environment only."""
    add("--generator-model", "--generator", dest="generator_model",
        help="causal LM id or path, or the server's model name (env LOUPE_GENERATOR)")
    add("--generator-backend", dest="generator_backend", choices=GENERATOR_BACKENDS,
        help="local (transformers here) or openai (an OpenAI-compatible server; env LOUPE_GENERATOR_BACKEND); "
             "the server's key comes from env LOUPE_GENERATOR_API_KEY")
    add("--generator-base-url", dest="generator_base_url",
        help="the server's URL, e.g. http://127.0.0.1:11434/v1 (env LOUPE_GENERATOR_BASE_URL)")


def add_embedder_flags(add: Callable[..., object]) -> None:
    """The text embedder's flags, shared by the CLI and the app. The API key comes from the environment only."""
    add("--embedder", dest="embedder", choices=EMBEDDERS,
        help="sbert (sentence-transformers, default), onnx / onnx-int8 (the text model exported to ONNX, fp32 or "
             "int8, on the CPU) or openai (an OpenAI-compatible embeddings server; its key from env "
             "LOUPE_OPENAI_API_KEY or OPENAI_API_KEY) (env LOUPE_EMBEDDER)")
    add("--openai-base-url", dest="openai_base_url",
        help="the embeddings server's URL, e.g. http://127.0.0.1:11434/v1 (env LOUPE_OPENAI_BASE_URL)")
    add("--openai-model", dest="openai_model",
        help="the embeddings server's model name (default text-embedding-3-small; env LOUPE_OPENAI_MODEL)")
    add("--embed-dims", dest="embed_dims", type=int,
        help="dimensions to keep by PCA fitted on the knowledge base's own chunks, 0 = all; `reembed --embed-dims N` "
             "fits it (env LOUPE_EMBED_DIMS)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="knowledge-base folder, or a PostgreSQL URL "
                        "postgresql://user@host:5432/db[?kb=NAME] (env LOUPE_STORE)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), help="env LOUPE_DEVICE")
    common.add_argument("--text-model", dest="text_model", help="Sentence-BERT model (env LOUPE_TEXT_MODEL)")
    add_embedder_flags(common.add_argument)
    common.add_argument("--clip-model", dest="clip_model", help="open_clip architecture (env LOUPE_CLIP_MODEL)")
    common.add_argument("--clip-pretrained", dest="clip_pretrained",
                        help="open_clip weights tag or file (env LOUPE_CLIP_PRETRAINED)")
    common.add_argument("--ann", dest="ann", choices=ANN_KINDS,
                        help="vector search of a folder store: auto (exact below --ann-threshold chunks, HNSW from "
                             "there), flat (always exact) or hnsw (env LOUPE_ANN)")
    common.add_argument("--ann-threshold", dest="ann_threshold", type=int,
                        help="chunks from which --ann auto searches an HNSW graph (default 50000; env "
                             "LOUPE_ANN_THRESHOLD)")
    common.add_argument("--log-level", dest="log_level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="env LOUPE_LOG_LEVEL (default INFO)")

    parser = argparse.ArgumentParser(prog="python -m rag", description="Loupe: ask your documents.")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", parents=[common], help="add files, folders or globs")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--no-ocr", dest="ocr", action="store_false", default=None)
    ingest.add_argument("--quiet", action="store_true", help="no progress bars")

    ask = commands.add_parser("ask", parents=[common], help="answer a question from the documents")
    ask.add_argument("question")
    ask.add_argument("-k", dest="top_k", type=int)
    ask.add_argument("--mode", dest="answer_mode", choices=ANSWER_MODES,
                     help="; ".join(f"{m}: {d}" for m, d in MODE_DESCRIPTIONS.items()) + " (env LOUPE_ANSWER_MODE)")
    ask.add_argument("--retrieval", dest="retrieval_mode", choices=RETRIEVAL_MODES)
    add_generator_flags(ask.add_argument)

    search = commands.add_parser("search", parents=[common], help="show the best-matching chunks or images")
    search.add_argument("query")
    search.add_argument("-k", dest="top_k", type=int)
    search.add_argument("--images", action="store_true", help="search images with CLIP")
    search.add_argument("--image", dest="image_file", type=Path, help="find images similar to this one")
    search.add_argument("--retrieval", dest="retrieval_mode", choices=RETRIEVAL_MODES)

    commands.add_parser("list", parents=[common], help="list documents")
    delete = commands.add_parser("delete", parents=[common], help="delete a document by id, path or name")
    delete.add_argument("document")
    commands.add_parser("embed-images", parents=[common], help="embed images stored without CLIP weights")
    commands.add_parser("export-onnx", parents=[common],
                        help="export the text model to ONNX (fp32 and int8) for --embedder onnx / onnx-int8, "
                             "once, into the cache folder")
    from rag.evaluation.command import add_eval_parser

    add_eval_parser(commands, common)
    from rag.finetune import add_finetune_parser

    add_finetune_parser(commands, common)
    from rag.explore.command import add_explore_parser

    add_explore_parser(commands, common)
    from rag.reembed import add_reembed_parser

    add_reembed_parser(commands, common)
    return parser


def configured_settings(args: argparse.Namespace) -> Settings | None:
    """The settings the parsed flags give, with logging configured; None after printing why they are invalid (the
    entry point then exits 2). Shared by this CLI and app.py."""
    try:
        settings = Settings.from_args(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    configure_logging(settings.log_level)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = configured_settings(args)
    if settings is None:
        return 2
    from rag.components import configure_hub

    configure_hub()
    return run_translated(COMMANDS[args.command], args, settings)


def run_translated(command, args: argparse.Namespace, settings: Settings, what: str | None = None) -> int:
    """The command line's one error translator (this CLI's and app.py's): a problem the user can act on is one line
    on stderr and exit 1; anything else is a bug, logged with its traceback, and exit 70 (EX_SOFTWARE)."""
    try:
        return command(args, settings)
    except (LoupeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception:
        logger.exception("%s failed", what or f"python -m rag {args.command}")
        print("error: Loupe failed unexpectedly (the traceback is above)", file=sys.stderr)
        return 70



def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import Ingestor

    models = load_models(settings)
    kb = models.open_store()
    ingestor = Ingestor(kb, settings, models.text_embedder, models.image_embedder, settings.ocr)
    report = ingestor.ingest(args.paths, show_progress=not args.quiet and not args.json)
    tag_new_images(kb, models, settings)
    if args.json:
        print(json.dumps({"files": [vars(o) for o in report.outcomes], "seconds": dict(report.seconds),
                          "totals": report.totals(), "images_waiting": report.images_waiting}, indent=2))
    else:
        for outcome in report.outcomes:
            print(outcome.message, file=sys.stderr if not outcome.ok else sys.stdout)
        print(report.summary())
    return 1 if report.failed else 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    models = load_models(settings)
    assistant = models.assistant(open_existing_store(models, settings))
    answer = None
    for event in assistant.stream(args.question):
        if isinstance(event, str):
            if not args.json:
                print(event, end="", flush=True)
        else:
            answer = event
    if args.json:
        print(json.dumps(answer.to_json(), indent=2))
        return 0
    print()
    for sentence in answer.unsupported:  # sentences the grounding check found in no passage
        print(f'⚠ not supported by the sources: "{sentence}"')
    for source in answer.sources:
        mark = "*" if source.cited else " "
        snippet = source.text[:160].replace("\n", " ")
        where = place(source.file, source.page, source.heading)
        print(f"{mark}[{source.number}] {source.file}{', ' + where if where else ''} (score {source.score:.3f}): "
              f"{snippet}")
    for image in answer.images:
        print(f"  image: {image.file}, page {image.page} (score {image.score:.3f}) {image.path}")
    seconds = ", ".join(f"{k} {v:.2f}s" for k, v in answer.seconds.items())
    print(f"({seconds})", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    models = load_models(settings, with_images=args.images or args.image_file is not None)
    retriever = models.assistant(open_existing_store(models, settings)).retriever
    k = settings.top_k
    if args.images or args.image_file:
        if models.image_embedder is None:
            return 1
        hits = (retriever.similar_images(args.image_file.read_bytes(), k) if args.image_file
                else retriever.search_images(args.query, k))
        rows = [{"file": h.image.file, "page": h.image.page, "name": h.image.name, "score": round(h.score, 4),
                 "path": str(retriever.kb.image_path(h.image))} for h in hits]
    else:
        rows = [{"file": p.chunk.file, "page": p.chunk.page, "heading": heading_parts(p.chunk.heading)[0],
                 "link": heading_parts(p.chunk.heading)[1], "text": p.chunk.text, "score": round(p.score, 4)}
                for p in retriever.search(args.query, k)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            detail = row.get("text", row.get("path", ""))[:160].replace("\n", " ")
            print(f"{row['score']:.3f}  {row['file']}, page {row['page']}: {detail}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    documents = open_without_models(settings).documents()
    if args.json:
        print(json.dumps([vars(d) for d in documents], indent=2))
        return 0
    if not documents:
        from rag.store_factory import describe

        print(f"no documents in {describe(settings.store)}")
    for d in documents:
        waiting = f" ({d.images_waiting} waiting for CLIP)" if d.images_waiting else ""
        print(f"{d.id:>5}  {d.name}  [{d.kind}] {d.pages} pages, {d.chunks} chunks, {d.images} images{waiting}, "
              f"{d.size_bytes / 1024:.0f} KiB, added {d.added_at}")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    kb = open_without_models(settings)
    info = kb.delete(kb.resolve(args.document).id)
    print(f"deleted {info.name} (id {info.id}): {info.chunks} chunks, {info.images} images")
    return 0


def cmd_embed_images(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import Ingestor

    models = load_models(settings)
    if models.image_embedder is None:
        return 1
    kb = open_existing_store(models, settings)
    count = Ingestor(kb, settings, models.text_embedder, models.image_embedder).embed_waiting_images()
    tag_new_images(kb, models, settings)
    print(f"embedded {count} images")
    return 0




def tag_new_images(kb, models, settings: Settings) -> None:
    """Zero-shot tags for the images that have vectors and no tags yet, as the app tags them after an ingest."""
    if models.image_embedder is not None:
        from rag.explore.image_tags import tag_stored_images

        tag_stored_images(kb, models.image_embedder, settings.image_labels)


def cmd_export_onnx(args: argparse.Namespace, settings: Settings) -> int:
    from rag.onnx_embedder import export_onnx

    folder = export_onnx(settings.text_model, settings.cache_dir)
    print(json.dumps({"model": settings.text_model, "folder": str(folder)}) if args.json
          else f"{settings.text_model}: ONNX export ready in {folder}")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag.evaluation.command import run_eval

    return run_eval(args, settings)


def cmd_finetune(args: argparse.Namespace, settings: Settings) -> int:
    from rag.finetune import run_finetune

    return run_finetune(args, settings)


def cmd_explore(args: argparse.Namespace, settings: Settings) -> int:
    from rag.explore.command import run_explore

    return run_explore(args, settings)


def cmd_reembed(args: argparse.Namespace, settings: Settings) -> int:
    from rag.reembed import run_reembed

    return run_reembed(args, settings)


COMMANDS = {"ingest": cmd_ingest, "ask": cmd_ask, "search": cmd_search, "list": cmd_list, "delete": cmd_delete,
            "embed-images": cmd_embed_images, "export-onnx": cmd_export_onnx, "eval": cmd_eval,
            "finetune": cmd_finetune, "explore": cmd_explore,
            "reembed": cmd_reembed}
