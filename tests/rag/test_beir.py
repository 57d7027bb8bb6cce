"""The BEIR loader: a well-formed folder loads; a malformed one fails with the file, the line and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.evaluation.beir import BeirError, load_beir

CORPUS = [
    {"_id": "d1", "title": "Pumps", "text": "The pump moves water."},
    {"_id": "d2", "title": "", "text": "Valves stop water."},
    {"_id": 3, "text": "A numeric id and no title."},
]
QUERIES = [{"_id": "q1", "text": "what moves water"}, {"_id": "q2", "text": "what stops water"},
           {"_id": "q3", "text": "a query without judgements"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\t3\t0\n"


def write_folder(folder: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS, answers=None) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    if answers is not None:
        (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers))
    return folder


def test_a_well_formed_folder_loads(tmp_path):
    beir = load_beir(write_folder(tmp_path, answers=[{"_id": "q1", "answers": ["the pump"]},
                                                     {"_id": "q2", "answers": []}]), with_answers=True)
    assert [d.id for d in beir.corpus] == ["d1", "d2", "3"]
    assert beir.corpus[0].title == "Pumps" and beir.corpus[2].title == ""
    assert beir.queries == {"q1": "what moves water", "q2": "what stops water"}  # q3 has no judgement
    assert beir.skipped_queries == 1
    assert beir.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1, "3": 0}}
    assert beir.answers == {"q1": ["the pump"], "q2": []}
    assert len(beir.corpus_sha256) == 64


def test_blank_lines_bom_crlf_and_float_scores_are_accepted(tmp_path):
    folder = write_folder(tmp_path, qrels="query-id\tcorpus-id\tscore\r\nq1\td1\t1.0\r\n\r\nq2\td2\t2\r\n")
    corpus = folder / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + corpus.read_bytes() + b"\n\n")
    beir = load_beir(folder)
    assert beir.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert len(beir.corpus) == 3


def message(tmp_path, **changes) -> str:
    with pytest.raises(BeirError) as error:
        load_beir(write_folder(tmp_path, **changes), with_answers="answers" in changes)
    return str(error.value)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(BeirError, match="no such folder"):
        load_beir(tmp_path / "nowhere")
    folder = write_folder(tmp_path)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(BeirError, match=r"qrels/test\.tsv: file not found"):
        load_beir(folder)
    with pytest.raises(BeirError, match=r"qrels/dev\.tsv: file not found"):
        load_beir(folder, split="dev")
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(BeirError, match=r"corpus\.jsonl: file not found"):
        load_beir(folder)
    with pytest.raises(BeirError, match=r"answers\.jsonl: file not found"):
        load_beir(write_folder(tmp_path / "b"), with_answers=True)


def test_bad_json_names_file_and_line(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "cut off\n')
    with pytest.raises(BeirError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_beir(folder)
    (folder / "queries.jsonl").write_text('["a list"]\n')
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n')
    with pytest.raises(BeirError, match=r"queries\.jsonl:1: expected a JSON object, got list"):
        load_beir(folder)
    (folder / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(BeirError, match=r"corpus\.jsonl:1: not UTF-8"):
        load_beir(folder)


def test_bad_records(tmp_path):
    assert "corpus.jsonl:2: missing the field '_id'" in message(tmp_path / "a", corpus=[CORPUS[0], {"text": "x"}])
    assert "corpus.jsonl:1: missing the field 'text'" in message(tmp_path / "b", corpus=[{"_id": "d1"}])
    assert "corpus.jsonl:1: the field 'text' should be a string, not list" in message(
        tmp_path / "c", corpus=[{"_id": "d1", "text": ["x"]}])
    assert "corpus.jsonl:2: document id 'd1' appears twice" in message(tmp_path / "d", corpus=[CORPUS[0], CORPUS[0]])
    assert "queries.jsonl:2: query id 'q1' appears twice" in message(tmp_path / "e", queries=[QUERIES[0]] * 2)
    assert "corpus.jsonl: no documents" in message(tmp_path / "f", corpus=[])


def test_bad_qrels(tmp_path):
    assert "test.tsv:1: expected the header line" in message(tmp_path / "a", qrels="q1\td1\t1\n")
    assert "test.tsv:2: expected 3 tab-separated columns" in message(
        tmp_path / "b", qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n")
    assert "test.tsv:2: the score 'high' is not a whole number" in message(
        tmp_path / "c", qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    assert "test.tsv: empty" in message(tmp_path / "d", qrels="")
    assert "no judgement with a score above 0" in message(tmp_path / "e", qrels="query-id\tcorpus-id\tscore\n"
                                                                              "q1\td1\t0\n")


def test_qrels_with_unknown_ids(tmp_path):
    text = message(tmp_path / "a", qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n")
    assert "1 judgements name a query id that is not in queries.jsonl: q9 (line 3)" in text
    lines = "".join(f"q1\tx{n}\t1\n" for n in range(7))
    text = message(tmp_path / "b", qrels="query-id\tcorpus-id\tscore\n" + lines)
    assert "7 judgements name a document id that is not in corpus.jsonl: x0 (line 2)" in text
    assert "and 2 more" in text


def test_bad_answers(tmp_path):
    assert "answers.jsonl:1: 'answers' should be a list of strings" in message(
        tmp_path / "a", answers=[{"_id": "q1", "answers": "the pump"}])
    assert "answers.jsonl: no answers for the judged queries" in message(
        tmp_path / "b", answers=[{"_id": "q3", "answers": []}])
