"""Grounding check: precision and recall of "unsupported" on the adversarial set, before and after, in one run.

"Before" is rag/grounding.py as it was at commit BEFORE_COMMIT (word overlap and exact numbers only), read
from git history, so the old rules are not kept twice in the code. "After" is today's rag.grounding, given the
question too. An item is flagged when any sentence of its answer is unsupported; the positive class is
"unsupported".

A second check measures false alarms on real text: Disfl-QA answerable questions, each answered with the sentence
of its gold paragraph that holds the gold answer, copied with a citation, among 4 other paragraphs. Every one
is supported, so every flag there is a false alarm.

    .venv/bin/python -m benchmarks.grounding [--set benchmarks/data/grounding_adversarial.jsonl] [--details]
        [--copies 500]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag import grounding
from rag.evaluation.beir import load_beir
from rag.settings import PROJECT_ROOT

BEFORE_COMMIT = "492ec34"
DEFAULT_SET = PROJECT_ROOT / "benchmarks" / "data" / "grounding_adversarial.jsonl"
DEFAULT_BEIR = PROJECT_ROOT.parent / "shared" / "data" / "disflqa"
UNSUPPORTED = "unsupported"
Checker = Callable[[dict], list]


@dataclass
class Counts:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    items: int = 0
    flagged: int = 0

    def add(self, flagged: bool, unsupported: bool) -> None:
        self.items += 1
        self.flagged += flagged
        self.true_positive += flagged and unsupported
        self.false_positive += flagged and not unsupported
        self.false_negative += unsupported and not flagged

    @property
    def precision(self) -> float | None:
        return self.true_positive / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        positives = self.true_positive + self.false_negative
        return self.true_positive / positives if positives else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p and r else None


def load_items(path: Path = DEFAULT_SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def copied_sentences(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """Supported items from real text: the gold paragraph's sentence holding the gold answer, cited, with the
    paragraph placed at random among 4 other random paragraphs."""
    beir = load_beir(folder, with_answers=True)
    texts = {doc.id: doc.text for doc in beir.corpus}
    rng = random.Random(seed)
    items = []
    for query_id in rng.sample(sorted(beir.queries), len(beir.queries)):
        answers = (beir.answers or {}).get(query_id) or []
        gold = next(iter(beir.qrels[query_id]))
        sentence = next((s for s in grounding.split_sentences(texts[gold]) if answers and answers[0] in s), None)
        if sentence is None:
            continue  # unanswerable, or the answer spans two sentences
        passages = [texts[i] for i in rng.sample(sorted(texts.keys() - {gold}), 4)]
        position = rng.randrange(5)
        passages.insert(position, texts[gold])
        items.append({"id": query_id, "kind": "disflqa_copy", "label": "supported", "supported_by": position + 1,
                      "question": beir.queries[query_id], "answer": f"{sentence} [{position + 1}]",
                      "passages": passages})
        if len(items) == count:
            break
    return items


def old_module(commit: str = BEFORE_COMMIT) -> types.ModuleType:
    """rag/grounding.py as it was at `commit`, loaded as its own module."""
    source = subprocess.run(["git", "-C", str(PROJECT_ROOT), "show", f"{commit}:rag/grounding.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("grounding_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{commit}:rag/grounding.py", "exec"), module.__dict__)  # our own history, not input
    return module


def before_checker() -> Checker:
    module = old_module()
    return lambda item: module.check_answer(item["answer"], item["passages"])


def after_checker(item: dict) -> list:
    return grounding.check_answer(item["answer"], item["passages"], question=item.get("question"))


def flagged(checks: list) -> bool:
    return any(not check.supported for check in checks)


def score(items: list[dict], checker: Checker) -> tuple[dict[str, Counts], dict[str, bool]]:
    """Counts per kind and overall ('all'), and whether each item was flagged."""
    counts: dict[str, Counts] = {"all": Counts()}
    verdicts = {}
    for item in items:
        verdicts[item["id"]] = flagged(checker(item))
        for key in ("all", item["kind"]):
            counts.setdefault(key, Counts()).add(verdicts[item["id"]], item["label"] == UNSUPPORTED)
    return counts, verdicts


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def table(items: list[dict], before: dict[str, Counts], after: dict[str, Counts]) -> str:
    """Markdown: overall precision/recall/F1, then per kind the share flagged (recall for unsupported kinds,
    false alarms for supported ones)."""
    lines = ["| | before | after |", "|---|---|---|"]
    for name in ("precision", "recall", "f1"):
        lines.append(f"| {name} of \"unsupported\" | {_percent(getattr(before['all'], name))} "
                     f"| {_percent(getattr(after['all'], name))} |")
    lines += ["", "| kind | label | items | flagged before | flagged after |", "|---|---|---|---|---|"]
    labels = {item["kind"]: item["label"] for item in items}
    for kind in sorted(labels, key=lambda k: (labels[k] != UNSUPPORTED, k)):
        b, a = before[kind], after[kind]
        lines.append(f"| {kind} | {labels[kind]} | {a.items} | {b.flagged} | {a.flagged} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--details", action="store_true", help="list every item whose verdict is wrong after")
    parser.add_argument("--copies", type=int, default=500, help="Disfl-QA copied sentences (0: skip)")
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    args = parser.parse_args(argv)
    items = load_items(args.set)
    old = before_checker()
    # "dev" items were in view while the rules were written; "held_out" ones were written after, scored once
    for split in ("dev", "held_out", None):
        chosen = [item for item in items if split in (None, item.get("split"))]
        if not chosen:
            continue
        before, _ = score(chosen, old)
        after, verdicts = score(chosen, after_checker)
        unsupported = sum(item["label"] == UNSUPPORTED for item in chosen)
        print(f"\n{split or 'whole set'}: {len(chosen)} items, {unsupported} unsupported\n")
        print(table(chosen, before, after))
    if args.details:
        for item in items:
            if verdicts[item["id"]] != (item["label"] == UNSUPPORTED):
                reasons = [c.reason for c in after_checker(item) if not c.supported]
                print(f"{item['id']}: {item['label']}, flagged={verdicts[item['id']]} {reasons} | {item['answer']}")
    if args.copies:
        copies = copied_sentences(args.beir, args.copies)
        flagged_before, flagged_after = score(copies, old)[0]["all"], score(copies, after_checker)[0]["all"]
        print(f"\nDisfl-QA sentences copied with their citation ({len(copies)}, all supported): flagged "
              f"{flagged_before.flagged} before, {flagged_after.flagged} after")
        if args.details:
            for item in copies:
                for check in after_checker(item):
                    if not check.supported:
                        print(f"{item['id']}: {check.reason} | {check.text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
