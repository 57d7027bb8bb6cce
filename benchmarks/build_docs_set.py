"""Build benchmarks/data/pallets-docs/corpus.jsonl from the Sphinx docs in the Flask and Click sdists.

The questions (queries.jsonl, qrels/test.tsv, answers.jsonl) were written by hand from the built corpus and
are committed beside it; this script only rebuilds the corpus and checks that every judged document exists
and every gold answer is an exact substring of its document.

    .venv/bin/pip download --no-deps --no-binary :all: flask==3.1.3 click==8.5.1 -d /tmp/sdists
    .venv/bin/python -m benchmarks.build_docs_set /tmp/sdists/flask-3.1.3.tar.gz /tmp/sdists/click-8.5.1.tar.gz

A page is split at its section headings; sections shorter than MIN_WORDS are merged into the next one of the
same page, and sections longer than MAX_WORDS are cut at paragraph boundaries, so documents hold about
300-1500 words: whole pages or large parts of them, much longer than Disfl-QA's paragraphs.
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

OUT = Path(__file__).parent / "data" / "pallets-docs"
MIN_WORDS = 300
MAX_WORDS = 1500
PAGES = {  # sdist name prefix -> the doc pages used (the API references and changelogs are left out)
    "flask": ["quickstart.rst", "config.rst", "templating.rst", "testing.rst", "errorhandling.rst",
              "blueprints.rst", "logging.rst", "appcontext.rst", "reqcontext.rst", "signals.rst", "views.rst",
              "web-security.rst", "cli.rst", "server.rst", "debugging.rst", "async-await.rst",
              "patterns/fileuploads.rst", "patterns/sqlite3.rst", "patterns/packages.rst",
              "patterns/appfactories.rst", "patterns/flashing.rst", "patterns/streaming.rst",
              "deploying/gunicorn.rst", "deploying/nginx.rst"],
    "click": ["options.md", "arguments.md", "commands-and-groups.md", "testing.md", "utils.md", "prompts.md",
              "parameter-types.md", "shell-completion.md", "handling-files.md", "exceptions.md",
              "entry-points.md"],
}
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
_MD_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*$")


def sections(text: str, markdown: bool) -> Iterator[tuple[str, str]]:
    """(heading, body) for each section of a page, in order; the text before the first heading goes with it."""
    lines = text.splitlines()
    heading, body = "", []
    for number, line in enumerate(lines):
        if markdown:
            match = _MD_HEADING.match(line)
            title = match.group(2) if match else None
        else:
            following = lines[number + 1] if number + 1 < len(lines) else ""
            title = line.strip() if line.strip() and _RST_UNDERLINE.match(following) and \
                len(following.strip()) >= len(line.strip()) else None
        if title is not None:
            if body:
                yield heading, "\n".join(body).strip()
            heading, body = title, []
        elif not (not markdown and _RST_UNDERLINE.match(line)):
            body.append(line)
    if body:
        yield heading, "\n".join(body).strip()


def documents(page_title: str, page: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(title, text) of about MIN_WORDS..MAX_WORDS words: short sections merged forward (a short last one
    backward), long ones cut at paragraphs."""
    merged: list[tuple[str, str]] = []
    for heading, body in page:
        if not body:
            continue
        text = body if not heading or heading == page_title else f"{heading}\n\n{body}"
        if merged and len(merged[-1][1].split()) < MIN_WORDS:
            merged[-1] = (merged[-1][0], f"{merged[-1][1]}\n\n{text}")
        else:
            merged.append((heading or page_title, text))
    if len(merged) > 1 and len(merged[-1][1].split()) < MIN_WORDS:
        last = merged.pop()
        merged[-1] = (merged[-1][0], f"{merged[-1][1]}\n\n{last[1]}")
    titles = [page_title if h == page_title else f"{page_title}: {h}" for h, _ in merged]
    return [part for title, (_, text) in zip(titles, merged) for part in _cut(title, text)]


def _cut(title: str, text: str) -> Iterator[tuple[str, str]]:
    paragraphs, part = text.split("\n\n"), []
    for paragraph in paragraphs:
        if part and len(" ".join(part + [paragraph]).split()) > MAX_WORDS:
            yield title, "\n\n".join(part)
            part = []
        part.append(paragraph)
    if part:
        yield title, "\n\n".join(part)


def build_corpus(sdists: list[Path]) -> list[dict]:
    corpus = []
    for sdist in sdists:
        project = next(p for p in PAGES if sdist.name.lower().startswith(p))
        with tarfile.open(sdist) as archive:
            root = archive.getnames()[0].split("/")[0]
            licence = archive.extractfile(f"{root}/LICENSE.txt")  # BSD-3-Clause: the notice travels with the text
            if licence is None:
                raise SystemExit(f"{sdist.name}: LICENSE.txt is not a file")
            (OUT / f"LICENSE-{project}.txt").write_bytes(licence.read())
            for name in PAGES[project]:
                member = archive.extractfile(f"{root}/docs/{name}")
                if member is None:
                    raise SystemExit(f"{sdist.name}: docs/{name} is not a file")
                page = list(sections(member.read().decode("utf-8"), name.endswith(".md")))
                page_title = next((h for h, _ in page if h), name)
                for number, (title, text) in enumerate(documents(page_title, page)):
                    stem = name.rsplit(".", 1)[0].replace("/", "-")
                    corpus.append({"_id": f"{project}-{stem}-{number}", "title": f"{project.title()}: {title}",
                                   "text": text})
    return corpus


def check(folder: Path) -> None:
    """Every judged document exists and every gold answer is an exact substring of a judged document."""
    corpus = {d["_id"]: d["text"] for d in map(json.loads, (folder / "corpus.jsonl").open())}
    qrels: dict[str, list[str]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        if doc_id not in corpus:
            raise SystemExit(f"qrels/test.tsv: {query_id} judges {doc_id}, which the corpus no longer has")
        qrels.setdefault(query_id, []).append(doc_id)
    for record in map(json.loads, (folder / "answers.jsonl").open()):
        for gold in record["answers"]:
            if not any(gold in corpus[d] for d in qrels[record["_id"]]):
                raise SystemExit(f"answers.jsonl: {record['_id']}: {gold!r} is in none of its judged documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdists", nargs="+", type=Path, help="the flask and click .tar.gz sdists")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.sdists)
    with open(OUT / "corpus.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus)
    words = [len(d["text"].split()) for d in corpus]
    print(f"{len(corpus)} documents, {min(words)}-{max(words)} words (mean {sum(words) / len(words):.0f})")
    if (OUT / "answers.jsonl").is_file():
        check(OUT)
        print("questions checked")


if __name__ == "__main__":
    main()
