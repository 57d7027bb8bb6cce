"""`python -m rag eval` end to end on a tiny BEIR folder: real ingest, real MiniLM, real BM25, JSON out."""

from __future__ import annotations

import json

import pytest

from rag.cli import main
from rag.evaluation.harness import IDS_FILE, is_degenerate, store_folder
from rag.records import ModelId
from rag.store import KnowledgeBase

CORPUS = [
    {"_id": "d1", "title": "", "text": "Ferrets sleep eighteen hours a day. They are playful in the evening."},
    {"_id": "d2", "title": "Lighthouse", "text": "The lighthouse keeper logged 412 ships in the winter of 1911."},
    {"_id": "d3", "text": "Sourdough bread rises slowly because wild yeast ferments the dough overnight."},
    {"_id": "d4", "title": "Markdown title",
     "text": "Gardening tools and rakes hang on the wall.\n# not a heading\n---\nThe shovel is kept in the shed."},
    {"_id": "d5", "title": "", "text": "Volcanoes erupt when magma pressure builds beneath the crust."},
    {"_id": "d6", "title": "", "text": "Volcanoes erupt when magma pressure builds beneath the crust."},  # same file
]
QUERIES = {
    "q1": ("How long do ferrets sleep?", "d1", ["eighteen hours"]),
    "q2": ("How many ships did the lighthouse keeper log?", "d2", ["412"]),
    "q3": ("Who built the garden shed?", "d4", []),  # on topic, but the text does not say
    "q4": ("Why do volcanoes erupt?", "d6", ["magma pressure"]),  # judged on the duplicate record
    "q5": ("Who won the 1998 football world cup?", "d3", []),  # off topic
}


def write_tiny_beir(folder):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, (t, _, _) in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_, d, _) in QUERIES.items()))
    (folder / "answers.jsonl").write_text("".join(json.dumps({"_id": q, "answers": a}) + "\n"
                                                  for q, (_, _, a) in QUERIES.items()))
    return folder


METRICS = {"ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "seconds_per_query"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LOUPE_STORE", str(tmp_path / "unused-store"))
    for name in ("LOUPE_RETRIEVAL_MODE", "LOUPE_ANSWER_MODE", "LOUPE_TOP_K", "LOUPE_TEXT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_json_ingests_once_then_reuses_the_store(env, capsys):
    folder = write_tiny_beir(env / "tiny")
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "hybrid", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert METRICS <= set(result)
    assert (result["mode"], result["documents"], result["queries"]) == ("hybrid", 6, 5)
    assert result["store"]["cached"] is False and "ingesting 6 documents" in err
    # q1-q3 are easy; q4's record d6 ranks right after its twin d5 (one document in the store: the order
    # of the pair is arbitrary); q5 is off topic. All 6 records fit in 10.
    assert result["ndcg@10"] >= 0.7 and result["recall@1"] >= 0.6 and result["recall@10"] == 1.0
    assert result["seconds_per_query"] > 0  # reported; its speed is the benchmarks' business, not a test's

    # the store came through the ingest pipeline: one document per record, named by its corpus id
    from rag.settings import Settings

    settings = Settings.load({"cache_dir": env / "cache"}, environ={})
    from rag.evaluation.beir import load_beir

    cached = store_folder(load_beir(folder), settings)
    assert (cached / IDS_FILE).is_file()
    kb = KnowledgeBase(cached, _minilm_id())
    assert sorted(d.name for d in kb.documents()) == ["d1", "d2", "d3", "d4", "d5"]  # d6 duplicates d5's file
    markdown = next(d for d in kb.documents() if d.name == "d4")
    text = " ".join(c.text for c in kb.chunks_of_document(markdown.id))
    assert "# not a heading" in text and "---" in text  # Markdown syntax in a text stays text
    assert kb.chunks_of_document(markdown.id)[0].heading == "Markdown title"
    kb.close()

    code, out, err = run(capsys, "--beir", str(folder), "--mode", "bm25", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["store"]["cached"] is True and "reusing the cached ingest" in err
    assert again["mode"] == "bm25" and again["recall@10"] == 0.8  # q5 shares no word with any record


def test_eval_answers_and_text_output(env, capsys):
    folder = write_tiny_beir(env / "tiny")
    details = env / "details.jsonl"
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--answers", "--answer-mode",
                         "extractive", "--limit", "5", "--details", str(details))
    assert code == 0, err
    assert "nDCG@10" in out and "R@100" in out and "ms/query" in out
    assert "gold answer in the answer" in out and "unanswerable questions" in out
    records = [json.loads(line) for line in details.read_text().splitlines()]
    assert len(records) == 5
    by_id = {r["id"]: r for r in records}
    assert by_id["q1"]["answer_has_gold"] is True  # extractive: the sentence holding "eighteen hours"
    assert by_id["q4"]["answer_has_gold"] is True  # found through the duplicate record d6
    assert by_id["q5"]["grounded"] is False  # off topic: the documents don't say

    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--answers", "--answer-mode",
                         "extractive", "--limit", "4", "--json")
    answers = json.loads(out)["answers"]
    assert (answers["questions"], answers["answerable"], answers["unanswerable"]) == (4, 2, 2)  # half and half
    assert answers["answer_has_gold"] == 1.0 and answers["abstained_unanswerable"] >= 0.5
    for key in ("cited_has_gold", "context_has_gold", "abstained_answerable", "unsupported_sentences",
                "seconds_per_answer"):
        assert key in answers
    assert answers["degenerate_answers"] == 0 and answers["loops_stopped"] == 0  # quotes never loop
    assert 0 < answers["first_text_p50_s"] <= answers["first_text_p95_s"]


def test_malformed_folder_is_one_clear_error(env, capsys):
    folder = write_tiny_beir(env / "tiny")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": \n')
    code, out, err = run(capsys, "--beir", str(folder))
    assert code == 2 and out == ""
    assert err.strip() == f"error: {folder / 'queries.jsonl'}:2: not valid JSON (Expecting value at column 22)"
    code, out, err = run(capsys, "--beir", str(env / "missing"))
    assert code == 2 and "no such folder" in err
    code, out, err = run(capsys, "--beir", str(folder), "--answers", "--limit", "0")
    assert code == 2 and "at least 1" in err


def _minilm_id():
    from rag.records import ModelId

    return ModelId("all-MiniLM-L6-v2", 384)


def test_a_degenerate_answer_is_one_a_reader_would_call_broken():
    assert is_degenerate("It opens at nine. [1] It closes at five. It opens at nine. [2]")  # a sentence twice
    assert is_degenerate("the keeper logged the ships in winter " * 4)  # a phrase looping
    assert not is_degenerate("It opens at nine. [1] The keeper logged 412 ships in the winter of 1911. [2]")


def test_eval_with_another_embedder_keeps_its_own_store_and_the_ingest_figures(env, capsys):
    folder = write_tiny_beir(env / "tiny")
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--embedder", "onnx-int8", "--json")
    assert code == 0, err
    built = json.loads(out)
    assert (built["embedder"], built["text_model"]) == ("onnx-int8", "all-MiniLM-L6-v2+onnx-int8")
    assert built["recall@10"] == 1.0 and built["recall@1"] >= 0.6
    assert built["ingest"]["chunks"] == 5 and built["ingest"]["chunks_per_second"] > 0
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--embedder", "onnx-int8", "--json")
    again = json.loads(out)
    assert again["store"]["cached"] and again["ingest"] == built["ingest"]  # the figures of the run that built it
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--json")  # sbert: a store of its own
    assert code == 0, err
    fp32 = json.loads(out)
    assert not fp32["store"]["cached"] and fp32["store"]["folder"] != built["store"]["folder"]


def test_eval_intrinsic_on_gensims_real_sets(env, capsys):
    code, out, err = run(capsys, "--intrinsic", "--json")
    assert code == 0, err
    result = json.loads(out)
    # all-MiniLM-L6-v2 with each word embedded alone: 0.729 and 0.446 (docs/EVALUATION.md)
    assert result["wordsim353"] == pytest.approx(0.729, abs=0.01)
    assert result["simlex999"] == pytest.approx(0.446, abs=0.01)
    assert 0.3 < result["analogies"] < 1
    assert result["pairs"] == {"wordsim353": 353, "simlex999": 999} and result["analogy_questions"] == 19544
    with pytest.raises(SystemExit):
        run(capsys, "--intrinsic", "--beir", "x")
    assert "not allowed with" in capsys.readouterr().err


def test_eval_embed_dims_reduces_the_cached_store_by_pca_and_caches_each_size_apart(env, capsys):
    folder = write_tiny_beir(env / "tiny")
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--embed-dims", "3", "--json")
    assert code == 0, err
    reduced = json.loads(out)
    assert reduced["embed_dims"] == 3 and reduced["text_model"].startswith("all-MiniLM-L6-v2+pca3:")
    assert reduced["recall@10"] == 1.0 and not reduced["store"]["cached"]
    assert reduced["ingest"]["chunks"] == 5 and reduced["ingest"]["chunks_per_second"] > 0  # the full ingest's
    kb = KnowledgeBase(reduced["store"]["folder"], ModelId(reduced["text_model"], 3))  # 3-d vectors stored
    assert sorted(d.name for d in kb.documents()) == ["d1", "d2", "d3", "d4", "d5"]
    kb.close()

    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--json")  # the full store, reused
    full = json.loads(out)
    assert code == 0 and full["store"]["cached"] and full["embed_dims"] == 0
    assert full["store"]["folder"] != reduced["store"]["folder"] and full["ingest"] == reduced["ingest"]
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--embed-dims", "3", "--json")
    again = json.loads(out)
    assert again["store"]["cached"] and again["store"]["folder"] == reduced["store"]["folder"]
    assert again["ndcg@10"] == reduced["ndcg@10"] and again["text_model"] == reduced["text_model"]
    code, out, err = run(capsys, "--beir", str(folder), "--mode", "dense", "--embed-dims", "4", "--json")
    assert code == 0, err
    four = json.loads(out)
    assert four["text_model"].startswith("all-MiniLM-L6-v2+pca4:") and four["store"]["folder"] not in (
        reduced["store"]["folder"], full["store"]["folder"])
