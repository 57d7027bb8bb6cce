"""Read a BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, and optionally answers.jsonl.

    corpus.jsonl     {"_id": "d1", "title": "...", "text": "..."}   one document a line
    queries.jsonl    {"_id": "q1", "text": "..."}
    qrels/test.tsv   query-id<TAB>corpus-id<TAB>score, after that header line
    answers.jsonl    {"_id": "q1", "answers": ["..."]}  (Loupe's addition: gold answers, [] = unanswerable)

Anything malformed raises BeirError naming the file and line and what is wrong there, never a traceback
from deep inside the evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

QRELS_HEADER = ("query-id", "corpus-id", "score")
MAX_LISTED = 5  # unknown ids named in one error


class BeirError(ValueError):
    """The BEIR folder cannot be used; the message names the file (and line) and what to fix."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass
class BeirSet:
    folder: Path
    corpus: list[Document]
    queries: dict[str, str]  # only the queries that have judgements, in file order
    qrels: dict[str, dict[str, int]]
    answers: dict[str, list[str]] | None = None
    skipped_queries: int = 0  # queries in queries.jsonl without a judgement in the split
    corpus_sha256: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        return self.folder.name


def load_beir(folder: str | Path, split: str = "test", with_answers: bool = False) -> BeirSet:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BeirError(f"{folder}: no such folder (expected a BEIR folder with corpus.jsonl, queries.jsonl "
                        f"and qrels/{split}.tsv)")
    corpus_path = _required(folder / "corpus.jsonl")
    corpus, seen = [], set()
    digest = hashlib.sha256()
    for line_number, record, raw in _jsonl(corpus_path):
        digest.update(raw)
        doc_id = _string_field(record, "_id", corpus_path, line_number, allow_empty=False)
        if doc_id in seen:
            raise BeirError(f"{corpus_path}:{line_number}: document id {doc_id!r} appears twice")
        seen.add(doc_id)
        title = _string_field(record, "title", corpus_path, line_number, required=False)
        text = _string_field(record, "text", corpus_path, line_number)
        corpus.append(Document(doc_id, title, text))
    if not corpus:
        raise BeirError(f"{corpus_path}: no documents")

    queries_path = _required(folder / "queries.jsonl")
    all_queries: dict[str, str] = {}
    for line_number, record, _ in _jsonl(queries_path):
        query_id = _string_field(record, "_id", queries_path, line_number, allow_empty=False)
        if query_id in all_queries:
            raise BeirError(f"{queries_path}:{line_number}: query id {query_id!r} appears twice")
        all_queries[query_id] = _string_field(record, "text", queries_path, line_number)

    qrels_path = _required(folder / "qrels" / f"{split}.tsv")
    qrels = _read_qrels(qrels_path, all_queries, seen)
    queries = {q: text for q, text in all_queries.items() if q in qrels}
    answers = _read_answers(_required(folder / "answers.jsonl"), queries) if with_answers else None
    return BeirSet(folder, corpus, queries, qrels, answers, len(all_queries) - len(queries), digest.hexdigest())


def _required(path: Path) -> Path:
    if not path.is_file():
        raise BeirError(f"{path}: file not found")
    return path


def _jsonl(path: Path) -> Iterator[tuple[int, dict, bytes]]:
    """(line number, object, raw line) for each non-blank line."""
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if line_number == 1 else "utf-8").rstrip())
            except UnicodeDecodeError as error:
                raise BeirError(f"{path}:{line_number}: not UTF-8 ({error.reason})") from None
            except json.JSONDecodeError as error:
                raise BeirError(f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno})") \
                    from None
            if not isinstance(record, dict):
                raise BeirError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record, raw


def _string_field(record: dict, name: str, path: Path, line_number: int, required: bool = True,
                  allow_empty: bool = True) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise BeirError(f"{path}:{line_number}: missing the field {name!r}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "_id":
        value = str(value)  # some data sets write numeric ids
    if not isinstance(value, str):
        raise BeirError(f"{path}:{line_number}: the field {name!r} should be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BeirError(f"{path}:{line_number}: the field {name!r} is empty")
    return value


def _read_qrels(path: Path, queries: dict[str, str], corpus_ids: set[str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    unknown_queries: list[str] = []
    unknown_docs: list[str] = []
    header_seen = False
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            columns = line.split("\t")
            if not header_seen:
                if tuple(c.strip().lower() for c in columns) != QRELS_HEADER:
                    raise BeirError(f"{path}:{line_number}: expected the header line "
                                    f"'{chr(9).join(QRELS_HEADER)}' (tab-separated), found {line[:80]!r}")
                header_seen = True
                continue
            if len(columns) != 3:
                raise BeirError(f"{path}:{line_number}: expected 3 tab-separated columns (query-id, corpus-id, "
                                f"score), found {len(columns)}")
            query_id, doc_id, score = (c.strip() for c in columns)
            grade = _grade(score)
            if grade is None:
                raise BeirError(f"{path}:{line_number}: the score {score!r} is not a whole number")
            if query_id not in queries:
                unknown_queries.append(f"{query_id} (line {line_number})")
            if doc_id not in corpus_ids:
                unknown_docs.append(f"{doc_id} (line {line_number})")
            qrels.setdefault(query_id, {})[doc_id] = grade
    if not header_seen:
        raise BeirError(f"{path}: empty: expected a header line and one judgement per line")
    for what, ids, source in (("query", unknown_queries, "queries.jsonl"), ("document", unknown_docs, "corpus.jsonl")):
        if ids:
            more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
            listed = ", ".join(ids[:MAX_LISTED]) + more
            raise BeirError(f"{path}: {len(ids)} judgements name a {what} id that is not in {source}: {listed}")
    judged = {q: docs for q, docs in qrels.items() if any(g > 0 for g in docs.values())}
    if not judged:
        raise BeirError(f"{path}: no judgement with a score above 0: nothing to evaluate")
    return judged


def _grade(score: str) -> int | None:
    try:
        return int(score)
    except ValueError:
        pass
    try:
        value = float(score)  # "1.0" in some exports
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _read_answers(path: Path, queries: dict[str, str]) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    for line_number, record, _ in _jsonl(path):
        query_id = _string_field(record, "_id", path, line_number, allow_empty=False)
        golds = record.get("answers")
        if not isinstance(golds, list) or not all(isinstance(g, str) for g in golds):
            raise BeirError(f"{path}:{line_number}: 'answers' should be a list of strings ([] = unanswerable)")
        if query_id in queries:
            answers[query_id] = golds
    if not answers:
        raise BeirError(f"{path}: no answers for the judged queries")
    return answers
