"""Follow-up rewriting: how often a second question is read the right way, before and after, in one run.

Runs rag.followups.rewrite on every two-turn conversation of benchmarks/data/followups.jsonl (the README beside
it describes the set), and the same for the rules as committed at --before (loaded from git, so no second
checkout is needed). A follow-up counts as "rewritten" when its search differs from the question; its referent
is found when the search holds every `must_contain` term (a plural "s" allowed) and no `must_not_contain` term.

    .venv/bin/python -m benchmarks.followups [--before 492ec34] [--details] [--embedder] [--disflqa DIR]

--disflqa DIR (default ../shared/data/disflqa, skipped when absent) asks each Disfl-QA question after the one
before it, with that one's gold answer as the answer: the questions are independent, so every rewrite there is a
false alarm.

--embedder also measures whether the text embedder (all-MiniLM-L6-v2) could tell follow-ups from new topics:
how well three similarities separate them (ROC AUC, and the accuracy of the best threshold chosen on the set
itself, so an optimistic figure).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag import followups
from rag.conversations import Turn
from rag.settings import PROJECT_ROOT

SET = Path(__file__).parent / "data" / "followups.jsonl"
BEFORE = "492ec34"
# In the order written (README.md beside the set): the rules were developed on dev, then checked and mended on
# check1 and check2 in turn; unseen was written last and the rules did not change after its first run.
SPLITS = ("dev", "check1", "check2", "unseen")

Rewriter = Callable[[str, list[Turn]], "followups.Rewrite"]


@dataclass(frozen=True)
class Outcome:
    conversation: dict
    search: str
    rewritten: bool
    referent_found: bool

    @property
    def follow_up(self) -> bool:
        return self.conversation["label"] == "follow_up"

    @property
    def right(self) -> bool:
        return self.referent_found if self.follow_up else not self.rewritten


def load_set(path: Path = SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def contains_term(search: str, term: str) -> bool:
    """`term` as whole words in `search`, any case, a plural ending allowed ("answer mode" in "answer modes")."""
    return re.search(rf"(?<!\w){re.escape(term.lower())}(?:s|es)?(?!\w)", search.lower()) is not None


def first_turn(conversation: dict) -> Turn:
    return Turn(conversation["first_question"], conversation["first_answer"], conversation["first_question"], "kb")


def judge(conversation: dict, rewriter: Rewriter) -> Outcome:
    asked = rewriter(conversation["second_question"], [first_turn(conversation)])
    found = (asked.rewritten and all(contains_term(asked.search, t) for t in conversation["must_contain"])
             and not any(contains_term(asked.search, t) for t in conversation["must_not_contain"]))
    return Outcome(conversation, asked.search, asked.rewritten, found)


def scores(outcomes: list[Outcome]) -> dict[str, float]:
    follow_ups = [o for o in outcomes if o.follow_up]
    new_topics = [o for o in outcomes if not o.follow_up]
    flagged = [o for o in outcomes if o.rewritten]
    return {
        "follow-up precision": _share(sum(o.follow_up for o in flagged), len(flagged)),
        "follow-up recall": _share(sum(o.rewritten for o in follow_ups), len(follow_ups)),
        "new topic searched as asked": _share(sum(not o.rewritten for o in new_topics), len(new_topics)),
        "follow-up referent found": _share(sum(o.referent_found for o in follow_ups), len(follow_ups)),
        "all conversations right": _share(sum(o.right for o in outcomes), len(outcomes)),
    }


def rules_at(commit: str) -> Rewriter:
    """rag/followups.py as committed at `commit`, loaded as a module of its own."""
    source = subprocess.run(["git", "-C", str(PROJECT_ROOT), "show", f"{commit}:rag/followups.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"followups_{commit}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{commit}:rag/followups.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.rewrite


def microseconds_per_rewrite(rewriter: Rewriter, conversations: list[dict], repeats: int = 20) -> float:
    """The mean time of one rewrite over the whole set (the question and one earlier turn)."""
    cases = [(c["second_question"], [first_turn(c)]) for c in conversations]
    start = time.perf_counter()
    for _ in range(repeats):
        for question, history in cases:
            rewriter(question, history)
    return (time.perf_counter() - start) / (repeats * len(cases)) * 1e6


def independent_rewrite_share(rewriter: Rewriter, beir: Path) -> tuple[int, int]:
    """(rewritten, asked) over consecutive pairs of a BEIR set's questions, which are unrelated to each other."""
    questions = load_set(beir / "queries.jsonl")
    answers = {row["_id"]: row["answers"] for row in load_set(beir / "answers.jsonl")}
    rewritten = 0
    for before, question in zip(questions, questions[1:]):
        answer = (answers.get(before["_id"]) or ["The documents don't say."])[0] + " [1]"
        rewritten += rewriter(question["text"], [Turn(before["text"], answer, before["text"], "kb")]).rewritten
    return rewritten, len(questions) - 1


def embedder_separation(conversations: list[dict]) -> dict[str, tuple[float, float]]:
    """(ROC AUC, best-threshold accuracy) of each embedding signal for "the second question is a follow-up"."""
    import numpy as np

    from rag.text_embedder import TextEmbedder

    embed = TextEmbedder("all-MiniLM-L6-v2").embed
    second = embed([c["second_question"] for c in conversations])
    first = embed([c["first_question"] for c in conversations])
    turn = embed([f"{c['first_question']} {c['first_answer']}" for c in conversations])
    joined = embed([f"{c['first_question']} {c['second_question']}" for c in conversations])
    is_follow_up = np.array([c["label"] == "follow_up" for c in conversations])
    signals = {  # each oriented so that higher means "more like a follow-up"
        "similarity to the first question": (second * first).sum(1),
        "similarity to the first question and answer": (second * turn).sum(1),
        "change when read after the first question": -(second * joined).sum(1),
    }
    return {name: _separation(values, is_follow_up) for name, values in signals.items()}


def _separation(values, positive) -> tuple[float, float]:
    pairs = [(p > n) + 0.5 * (p == n) for p in values[positive] for n in values[~positive]]
    best = max(((values >= threshold) == positive).mean() for threshold in values)
    return sum(pairs) / len(pairs), float(best)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="commit whose rag/followups.py is the baseline")
    parser.add_argument("--details", action="store_true", help="print every conversation the new rules get wrong")
    parser.add_argument("--embedder", action="store_true", help="also measure the text embedder as a detector")
    parser.add_argument("--disflqa", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "disflqa",
                        help="a BEIR folder with answers.jsonl whose questions are asked one after another")
    args = parser.parse_args(argv)
    conversations = load_set()
    rules = {f"before ({args.before})": rules_at(args.before), "after": followups.rewrite}
    results = {name: [judge(c, rewriter) for c in conversations] for name, rewriter in rules.items()}
    print_table(results, conversations)
    for name, rewriter in rules.items():
        print(f"{name}: {microseconds_per_rewrite(rewriter, conversations):.0f} microseconds per rewrite")
    if (args.disflqa / "answers.jsonl").is_file():
        for name, rewriter in rules.items():
            rewritten, asked = independent_rewrite_share(rewriter, args.disflqa)
            print(f"{name}: {rewritten} of {asked} independent Disfl-QA questions rewritten ({rewritten / asked:.1%})")
    if args.embedder:
        print("| embedding signal | ROC AUC | best-threshold accuracy |\n|---|---:|---:|")
        for name, (auc, accuracy) in embedder_separation(conversations).items():
            print(f"| {name} | {auc:.2f} | {accuracy:.0%} |")
    if args.details:
        for outcome in results["after"]:
            if not outcome.right:
                c = outcome.conversation
                print(f"\n{c['id']} ({c['split']}, {c['label']}): {c['second_question']!r}\n"
                      f"  searched: {outcome.search!r}", file=sys.stderr)


def print_table(results: dict[str, list[Outcome]], conversations: list[dict]) -> None:
    """A markdown table: one row per split (in the order written, then all) and rule set, one column per metric."""
    splits = {split: {c["id"] for c in conversations if c["split"] == split} for split in SPLITS}
    splits["all"] = {c["id"] for c in conversations}
    rows = {f"{split} ({len(ids)}) | {name}": scores([o for o in outcomes if o.conversation["id"] in ids])
            for split, ids in splits.items() for name, outcomes in results.items()}
    metrics = list(next(iter(rows.values())))
    print("| split (conversations) | rules | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---:|" * len(metrics))
    for row, values in rows.items():
        print(f"| {row} | " + " | ".join(f"{values[metric]:.0%}" for metric in metrics) + " |")

if __name__ == "__main__":
    main()
