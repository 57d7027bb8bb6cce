"""Can anything known before the first word tell Disfl-QA's unanswerable questions from answerable ones?

For each question of a sample drawn like the eval's (half unanswerable; seed 1 by default, so the eval's seed-0
sample stays unseen), the script computes pre-answer signals on the default hybrid retrieval's top 5 and prints
each signal's ROC AUC (unanswerable = positive) and how many unanswerable questions a refusal rule would catch if
it refused at most 10% of the answerable ones (its threshold chosen on this sample itself: an optimistic figure).

- `best_score`: the fused score of the best passage (lower = refuse);
- `missing_best` / `missing_top3`: the share of the question's IDF weight (content words, document frequencies
  from the corpus) that the best passage / the top three passages lack (higher = refuse);
- `missing_rarest`: the IDF of the rarest question word the best passage lacks;
- `model_yes_no`: the generator's own judgement, log P("Yes") - log P("No") after "Does the passage answer the
  question? Reply Yes or No." with the best passage (lower = refuse). One forward pass, no generation.

    .venv/bin/python -m benchmarks.unanswerable_signals [--beir ../shared/data/disflqa] [--limit 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

WORD = re.compile(r"[a-z0-9]+")
FUNCTION_WORDS = frozenset("the a an of in on at to for by with from and or is was were are be been what which who "
                           "whom whose when where why how did does do that this these those it its as into than not"
                           .split())
# (signal, +1 when a higher value means "unanswerable", -1 when a lower one does)
SIGNALS = (("best_score", -1), ("missing_best", 1), ("missing_top3", 1), ("missing_rarest", 1), ("model_yes_no", -1))


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/disflqa"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import torch

    from ingest.pipeline import Ingestor
    from rag.components import Models, configure_hub
    from rag.evaluation.beir import load_beir
    from rag.evaluation.harness import prepare_store, sample_questions, stderr_log
    from rag.settings import Settings
    from rag.store_factory import eval_store_location

    configure_hub()
    settings = Settings.load()
    beir = load_beir(args.beir, "test", with_answers=True)
    models = Models.load(settings, with_images=False)
    store = prepare_store(beir, settings, lambda f: models.open_store(eval_store_location(settings.store, f)),
                          lambda kb: Ingestor(kb, settings, models.text_embedder), rebuild=False, log=stderr_log,
                          show_progress=False)
    retriever = models.assistant(store.kb).retriever
    generator = models.generator()
    tokenizer, model = generator.tokenizer, generator.model
    yes = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("Yes", " Yes", "yes")]
    no = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("No", " No", "no")]

    document_frequency: dict[str, int] = {}
    for document in beir.corpus:
        for word in words(document.text):
            document_frequency[word] = document_frequency.get(word, 0) + 1

    def idf(word: str) -> float:
        return math.log((len(beir.corpus) + 1) / (document_frequency.get(word, 0) + 0.5))

    def yes_no(passage: str, question: str) -> float:
        prompt = f"Passage: {passage}\n\nQuestion: {question}\n\nDoes the passage answer the question? Reply Yes or No."
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt")
        ids = ids if torch.is_tensor(ids) else ids["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1].float().log_softmax(-1)
        return float(torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0))

    sample = sample_questions(beir, args.limit, args.seed)
    rows = []
    try:
        for query_id, answerable in [(q, True) for q in sample.answerable] + [(q, False) for q in sample.unanswerable]:
            question = beir.queries[query_id]
            hits = retriever.search(question, 5)
            best = hits[0].chunk.text
            asked = [w for w in words(question) if w not in FUNCTION_WORDS]
            weight = sum(idf(w) for w in asked) or 1.0
            top3 = words(" ".join(h.chunk.text for h in hits[:3]))
            rows.append({"answerable": answerable, "best_score": hits[0].score,
                         "missing_best": sum(idf(w) for w in asked if w not in words(best)) / weight,
                         "missing_top3": sum(idf(w) for w in asked if w not in top3) / weight,
                         "missing_rarest": max([idf(w) for w in asked if w not in words(best)], default=0.0),
                         "model_yes_no": yes_no(best, question)})
            print(f"\r{len(rows)} questions", end="", file=sys.stderr, flush=True)
    finally:
        store.kb.close()
    print(file=sys.stderr)
    result = {"questions": len(rows), "unanswerable": sum(not r["answerable"] for r in rows), "seed": args.seed}
    for name, sign in SIGNALS:
        unanswerable = [sign * r[name] for r in rows if not r["answerable"]]
        answerable = [sign * r[name] for r in rows if r["answerable"]]
        threshold = float(np.quantile(answerable, 0.9))  # refuse above it: 10% of answerable questions
        result[name] = {"roc_auc": round(roc_auc(unanswerable, answerable), 3),
                        "unanswerable_refused_at_10pct_answerable": sum(v > threshold for v in unanswerable)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
