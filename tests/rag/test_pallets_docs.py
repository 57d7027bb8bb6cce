"""The committed evaluation set benchmarks/data/pallets-docs and the paraphrase-subset builder.

The set's files must load with the evaluation's own BEIR loader, every gold answer must be an exact
substring of a document judged for its question (answer metrics and neighbour merging rely on it), and
the set must stay what its README says: long documents, 60+ questions, about a quarter unanswerable.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.build_docs_set import check
from benchmarks.build_paraphrase_subset import write_subset
from rag.evaluation.beir import load_beir
from tests.rag.test_beir import write_folder

SET = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "pallets-docs"


def test_the_docs_set_loads_and_every_gold_answer_is_in_a_judged_document():
    beir = load_beir(SET, with_answers=True)
    assert beir.skipped_queries == 0 and set(beir.answers) == set(beir.queries)
    texts = {doc.id: doc.text for doc in beir.corpus}
    for query_id, golds in beir.answers.items():
        judged = [d for d, grade in beir.qrels[query_id].items() if grade > 0]
        for gold in golds:
            assert any(gold in texts[d] for d in judged), (query_id, gold)
    check(SET)  # the builder's own check agrees


def test_the_docs_set_is_the_size_and_mix_its_readme_describes():
    beir = load_beir(SET, with_answers=True)
    words = [len(doc.text.split()) for doc in beir.corpus]
    assert 200 <= min(words) and max(words) <= 1500, (min(words), max(words))
    assert sum(words) / len(words) > 300  # Disfl-QA's paragraphs average about 120 words
    unanswerable = sum(1 for golds in beir.answers.values() if not golds)
    assert len(beir.queries) >= 60 and 0.2 <= unanswerable / len(beir.queries) <= 0.3
    assert sum(path.stat().st_size for path in SET.rglob("*") if path.is_file()) < 2_000_000
    assert "Licence" in (SET / "README.md").read_text()


def test_the_paraphrase_subset_keeps_the_queries_sharing_fewest_words(tmp_path):
    corpus = [{"_id": "d1", "title": "Pumps", "text": "The centrifugal pump moves cooling water."},
              {"_id": "d2", "title": "Valves", "text": "A gate valve stops the flow."}]
    queries = [{"_id": "q1", "text": "centrifugal pump cooling water"},  # every token in d1
               {"_id": "q2", "text": "which device halts liquid"},  # no token in d2
               {"_id": "q3", "text": "gate valve liquid"}]  # two of three tokens in d2
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td2\t1\n"
    source = write_folder(tmp_path / "full", corpus, queries, qrels,
                          answers=[{"_id": "q1", "answers": ["pump"]}, {"_id": "q2", "answers": []},
                                   {"_id": "q3", "answers": ["gate valve"]}])
    kept, largest = write_subset(source, tmp_path / "subset", keep=2)
    assert (kept, round(largest, 2)) == (2, 0.67)
    subset = load_beir(tmp_path / "subset", with_answers=True)
    assert list(subset.queries) == ["q2", "q3"] and subset.answers == {"q2": [], "q3": ["gate valve"]}
    assert (tmp_path / "subset" / "corpus.jsonl").read_bytes() == (source / "corpus.jsonl").read_bytes()
    assert [json.loads(line)["_id"] for line in (tmp_path / "subset" / "queries.jsonl").open()] == ["q2", "q3"]
