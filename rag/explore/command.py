"""`python -m rag explore map|words|similarity|tags`: the Explore tab's views from the command line.

    explore map --store KB --out map.html [--projection pca|umap] [--question Q]   a self-contained plotly map
    explore words neighbours WORD --store KB [-k N] [--architecture skipgram|cbow] [--json]
    explore words analogy A B C --store KB [-k N] [--json]                         A - B + C
    explore words scores --store KB [--json]       intrinsic scores beside the text embedder's
    explore similarity "TEXT" "TEXT" ... [--json]                                  the cosine matrix
    explore tags --store KB [--search Q] [--json]                                 zero-shot CLIP tags
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rag.settings import Settings


def add_explore_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    explore = commands.add_parser("explore", help="see the knowledge base as vectors: map, word vectors, "
                                                  "similarity, image tags")
    # The shared flags go on each leaf only: argparse would let a leaf's unset defaults hide the parent's values.
    views = explore.add_subparsers(dest="view", required=True)
    chunk_map = views.add_parser("map", parents=[common], help="write an interactive map of every passage")
    chunk_map.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    chunk_map.add_argument("--projection", choices=("pca", "umap"), default="pca",
                           help="pca (default) or umap (needs umap-learn)")
    chunk_map.add_argument("--question", help="draw this question and its retrieved passages")
    chunk_map.add_argument("-k", dest="top_k", type=int, help="passages retrieved for --question")

    words = views.add_parser("words", help="word2vec trained on the knowledge base's text")
    asks = words.add_subparsers(dest="ask", required=True)
    neighbours = asks.add_parser("neighbours", parents=[common], help="the words nearest WORD")
    neighbours.add_argument("word")
    analogy = asks.add_parser("analogy", parents=[common], help="the words nearest A - B + C")
    for name in ("a", "b", "c"):
        analogy.add_argument(name, metavar=name.upper())
    scores = asks.add_parser("scores", parents=[common],
                             help="WordSim-353, SimLex-999 and Google analogies beside the text embedder's")
    for parser in (neighbours, analogy, scores):
        parser.add_argument("--architecture", choices=("skipgram", "cbow"), default="skipgram")
    for parser in (neighbours, analogy):
        parser.add_argument("-k", dest="count", type=int, default=10, help="how many words (default 10)")

    similarity = views.add_parser("similarity", parents=[common],
                                  help="cosine matrix of texts with the text embedder")
    similarity.add_argument("texts", nargs="+", metavar="TEXT")

    tags = views.add_parser("tags", parents=[common], help="zero-shot CLIP tags of the stored images")
    tags.add_argument("--search", default="", help="only images with a tag containing this")
    tags.add_argument("--image-labels", dest="image_labels", help="the default labels, comma-separated "
                                                                  "(env LOUPE_IMAGE_LABELS)")


def run_explore(args: argparse.Namespace, settings: Settings) -> int:
    if args.view == "map":
        return _map(args, settings)
    if args.view == "similarity":
        return _similarity(args, settings)
    if args.view == "tags":
        return _tags(args, settings)
    return _words(args, settings)


def _map(args: argparse.Namespace, settings: Settings) -> int:
    from rag.explore.figures import map_figure, standalone_html
    from rag.explore.projection import build_map, place_question
    from rag.opening import load_models, open_existing_store, open_without_models

    if args.question:
        models = load_models(settings, with_images=False)
        kb = open_existing_store(models, settings)
        retriever = models.assistant(kb).retriever
    else:  # the stored vectors are enough: no model to load
        kb = open_without_models(settings)
    chunk_map = build_map(kb, args.projection)
    placed = None
    if args.question:
        vector = retriever.embed_query(args.question)
        hits = [(p.chunk.id, p.score) for p in retriever.search(args.question, settings.top_k, vector=vector)]
        placed = place_question(chunk_map, kb, args.question, vector[None, :], hits)
    args.out.write_text(standalone_html(map_figure(chunk_map, placed), f"Loupe map: {kb.folder.name}"),
                        encoding="utf-8")
    summary = {"out": str(args.out), "points": len(chunk_map.points), "total": chunk_map.total,
               "sampled": chunk_map.sampled, "projection": chunk_map.method}
    print(json.dumps(summary) if args.json else f"{args.out}: {chunk_map.note()}")
    return 0


def _progress(done: float) -> None:
    print(f"\rtraining word vectors: {100 * done:.0f}%", end="\n" if done >= 1 else "", file=sys.stderr, flush=True)


def _words(args: argparse.Namespace, settings: Settings) -> int:
    from rag.explore import word_vectors
    from rag.opening import open_without_models

    kb = open_without_models(settings)
    vectors = word_vectors.load_or_train(kb, args.architecture, None if args.json else _progress)
    if args.ask == "scores":
        return _scores(args, settings, vectors)
    found = (word_vectors.neighbours(vectors, args.word, args.count) if args.ask == "neighbours"
             else word_vectors.analogy(vectors, args.a, args.b, args.c, args.count))
    if args.json:
        print(json.dumps([asdict(w) for w in found], indent=2))
    else:
        for w in found:
            print(f"{w.score:.3f}  {w.word}")
    return 0


def _scores(args: argparse.Namespace, settings: Settings, vectors) -> int:
    from rag.explore.word_vectors import intrinsic
    from rag.opening import load_models

    embedder = load_models(settings, with_images=False).text_embedder
    rows = intrinsic(vectors, lambda words: embedder.embed(words, settings.embed_batch_size))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['set']} ({row['measure']}, {row['covered']} of {row['total']} known): word2vec "
              f"{_figure(row['word2vec'])}, {embedder.model_id.name} {_figure(row['reference_covered'])} "
              f"(all items: {_figure(row['reference_all'])})")
    return 0


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _similarity(args: argparse.Namespace, settings: Settings) -> int:
    from rag.explore.similarity import check_texts, cosine_matrix
    from rag.opening import load_models

    texts = check_texts(args.texts)
    matrix = cosine_matrix(load_models(settings, with_images=False).text_embedder, texts)
    rows = [[round(float(v), 4) for v in row] for row in matrix]
    if args.json:
        print(json.dumps(rows))
        return 0
    for i, (text, row) in enumerate(zip(texts, rows), 1):
        print(" ".join(f"{v:6.3f}" for v in row), f" {i}. {text}")
    return 0


def _tags(args: argparse.Namespace, settings: Settings) -> int:
    from rag.explore.image_tags import WAITING_FOR_CLIP, label_list, refresh_tags, search_tags, tagged_images
    from rag.opening import load_models, open_existing_store

    models = load_models(settings)
    if models.image_embedder is None:  # load_models printed why CLIP did not load
        print(WAITING_FOR_CLIP, file=sys.stderr)
        return 1
    kb = open_existing_store(models, settings)
    images = tagged_images(kb, refresh_tags(kb, models.image_embedder, label_list(settings.image_labels, kb)))
    found = search_tags(images, args.search) if args.search else images
    rows = [{"file": t.image.file, "page": t.image.page, "name": t.image.name,
             "tags": [asdict(tag) for tag in t.tags]} for t in found]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"]) or "no tags (waiting for CLIP)"
        print(f"{row['file']}, page {row['page']}, {row['name']}: {tags}")
    return 0
