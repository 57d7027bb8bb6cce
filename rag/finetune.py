"""`python -m rag finetune`: adapt the text embedder to a knowledge base's own language, without labelled queries.

Training pairs come from the documents themselves (`build_pairs`):
- a heading and its section (the chunk under it);
- a sentence and the rest of its passage;
- optionally (`--questions`), a question the generator writes for a passage, and the passage.
The model learns with in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss): each anchor must
be closer to its own passage than to the other passages of the batch.

The chunks of a held-back slice of the knowledge base are kept out of training, with all their pairs. Their
pairs are the check: each anchor ranks all held-back passages, before and after training (MRR and recall@1).
When the check gets worse, the report says so and the CLI warns; the model is written either way, for the user
to judge. The output is a sentence-transformers model folder that `--text-model DIR` loads.

The loop is written here rather than run through SentenceTransformerTrainer or `fit()`: in
sentence-transformers 6 both need the `datasets` package (pyarrow and more), which Loupe does not otherwise
install, and `old_fit()` is deprecated. The loop is the library's loss, AdamW and a linear warm-up schedule.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.catalog import Catalog
from rag.errors import LoupeError
from rag.grounding import split_sentences
from rag.records import heading_parts, indexed_text
from rag.settings import Settings
from rag.store import require_store

logger = logging.getLogger(__name__)

Chunk = tuple[int, str | None, str]  # (id, heading, text), as the catalog gives them
# progress(done, total, seconds_left): called after each training step (and each pseudo-question), and every TICK_S
# between them with the time left counting down: on a CPU one step may take many seconds.
Progress = Callable[[int, int, float], None]
TICK_S = 1.0
REPORT_FILE = "loupe-finetune.json"
# A sentence shorter than this says too little to find its passage by ("See Figure 2.").
MIN_SENTENCE_WORDS = 5
QUESTION_PROMPT = ("Write one short question that the passage below answers. Reply with the question only.\n\n"
                   "Passage: {passage}")


class FinetuneError(LoupeError):
    """The knowledge base or the options leave nothing sensible to train on; the message says why."""


@dataclass(frozen=True)
class Pair:
    anchor: str  # what a user might search with
    positive: str  # the passage it should find
    chunk_id: int
    kind: str  # "heading", "sentence" or "question"


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    sentences_per_chunk: int = 1
    # Training reads at most this many tokens of a text (inference keeps the model's own limit): on 2 CPU cores
    # a step costs about a fifth less at 128 than at 256, and anchors are short anyway.
    max_tokens: int = 128
    questions: bool = False  # pseudo-questions from the generator: slow on a CPU (docs/EVALUATION.md)
    held_back_fraction: float = 0.1
    max_held_back_chunks: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise FinetuneError("--epochs must be at least 1 and --batch-size at least 2 (in-batch negatives)")
        if self.learning_rate <= 0 or not 0 < self.held_back_fraction < 1:
            raise FinetuneError("the learning rate must be positive and the held-back fraction between 0 and 1")


@dataclass(frozen=True)
class CheckScore:
    """How well held-back anchors find their own passage among all held-back passages."""

    mrr: float
    recall_at_1: float


@dataclass
class FinetuneReport:
    base_model: str
    output: str
    pairs: dict[str, int]  # training pairs by kind
    held_back_pairs: int
    held_back_chunks: int
    before: CheckScore
    after: CheckScore
    options: FinetuneOptions
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def worse(self) -> bool:
        return self.after.mrr < self.before.mrr

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"worse": self.worse}


# --- pairs ----------------------------------------------------------------------------------------------------
def read_chunks(store: Path) -> list[Chunk]:
    """Every chunk of the knowledge base, read in one snapshot; the store is not modified."""
    catalog = Catalog.open(require_store(store))
    try:
        with catalog.snapshot():
            return list(catalog.iter_chunk_texts())
    finally:
        catalog.close()


def build_pairs(chunks: Iterable[Chunk], sentences_per_chunk: int = 1, seed: int = 0) -> list[Pair]:
    """Heading/section and sentence/rest-of-passage pairs. The positive is what the index embeds of a chunk
    (heading and text), except for heading pairs, whose positive leaves the heading out: otherwise the anchor
    would be copied into its own positive."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for chunk_id, heading, text in chunks:
        title = heading_parts(heading)[0]
        if title and title.strip() and text.strip():
            pairs.append(Pair(title.strip(), text, chunk_id, "heading"))
        sentences = split_sentences(text)
        if len(sentences) < 2:
            continue  # the rest of a one-sentence passage is empty
        candidates = [i for i, s in enumerate(sentences) if len(s.split()) >= MIN_SENTENCE_WORDS]
        for i in sorted(rng.sample(candidates, min(sentences_per_chunk, len(candidates)))):
            rest = " ".join(sentences[:i] + sentences[i + 1:])
            pairs.append(Pair(sentences[i], indexed_text(heading, rest), chunk_id, "sentence"))
    return pairs


def question_pairs(chunks: Sequence[Chunk], generator: Any, workers: int,
                   progress: Progress | None = None) -> list[Pair]:
    """One pseudo-question per chunk from the generator (rag.generator.Generator). Questions are asked from
    `workers` threads so a local model decodes them in one batch."""
    def ask(chunk: Chunk) -> Pair | None:
        chunk_id, heading, text = chunk
        messages = [{"role": "user", "content": QUESTION_PROMPT.format(passage=text)}]
        question = _first_line("".join(generator.stream(messages, max_new_tokens=40)))
        return Pair(question, indexed_text(heading, text), chunk_id, "question") if question.endswith("?") else None

    pairs: list[Pair] = []
    with _Timer(len(chunks), progress) as timer, ThreadPoolExecutor(max_workers=workers) as pool:
        for pair in pool.map(ask, chunks):
            if pair is not None:
                pairs.append(pair)
            timer.tick()
    return pairs


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def split_held_back(pairs: list[Pair], fraction: float, max_chunks: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-back pairs), split by chunk: no held-back passage is ever seen in training."""
    chunk_ids = sorted({p.chunk_id for p in pairs})
    random.Random(seed).shuffle(chunk_ids)
    held = set(chunk_ids[:min(max_chunks, max(1, round(fraction * len(chunk_ids))))])
    return [p for p in pairs if p.chunk_id not in held], [p for p in pairs if p.chunk_id in held]


def batches(pairs: list[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches with at most one pair per chunk and no text twice. With in-batch negatives, a second
    pair of the same chunk (whose "rest of the passage" holds the first pair's sentence), or another chunk
    under the same heading, would be scored as a wrong answer that is in fact right."""
    pending = pairs[:]
    rng.shuffle(pending)
    result: list[list[Pair]] = []
    while len(pending) > 1:
        batch: list[Pair] = []
        seen: set[int | str] = set()
        deferred: list[Pair] = []
        for pair in pending:
            keys = (pair.chunk_id, pair.anchor, pair.positive)
            if len(batch) < batch_size and not seen.intersection(keys):
                batch.append(pair)
                seen.update(keys)
            else:
                deferred.append(pair)
        if len(batch) < 2:  # what is left are pairs of one chunk or one heading: nothing to contrast them with
            break
        result.append(batch)
        pending = deferred
    return result


# --- the check ------------------------------------------------------------------------------------------------
def held_back_check(model: Any, pairs: list[Pair], batch_size: int = 32) -> CheckScore:
    """Each held-back anchor ranks every distinct held-back passage. Right answers are the passages of the
    anchor's own chunks: a heading heads several chunks, and the "rest of the passage" of another sentence of
    the same chunk holds the anchor itself."""
    passages = sorted({p.positive for p in pairs})
    index = {text: i for i, text in enumerate(passages)}
    passages_of_chunk: dict[int, set[int]] = {}
    chunks_of_anchor: dict[str, set[int]] = {}
    for pair in pairs:
        passages_of_chunk.setdefault(pair.chunk_id, set()).add(index[pair.positive])
        chunks_of_anchor.setdefault(pair.anchor, set()).add(pair.chunk_id)
    anchors = sorted(chunks_of_anchor)
    encode = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    scores = model.encode(anchors, **encode) @ model.encode(passages, **encode).T
    reciprocal_ranks = []
    for row, anchor in zip(scores, anchors):
        right = np.zeros(len(passages), bool)
        right[sorted(set().union(*(passages_of_chunk[c] for c in chunks_of_anchor[anchor])))] = True
        wrong_above = int(np.sum(row[~right] >= row[right].max()))  # a tie is no win
        reciprocal_ranks.append(1.0 / (1 + wrong_above))
    ranks = np.array(reciprocal_ranks)
    return CheckScore(round(float(ranks.mean()), 4), round(float(np.mean(ranks == 1.0)), 4))


# --- training -------------------------------------------------------------------------------------------------
def train(model: Any, pairs: list[Pair], options: FinetuneOptions, progress: Progress | None = None) -> None:
    """Train `model` in place on `pairs` with MultipleNegativesRankingLoss."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    epochs = [batches(pairs, options.batch_size, rng) for _ in range(options.epochs)]
    total = sum(len(epoch) for epoch in epochs)
    if total == 0:
        raise FinetuneError("too few distinct training pairs to form a batch: add documents")
    loss_function = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(options.warmup_fraction * total), total)
    max_tokens = model.max_seq_length
    model.max_seq_length = min(max_tokens, options.max_tokens)
    model.train()
    try:
        with _Timer(total, progress) as timer:
            for batch in (batch for epoch in epochs for batch in epoch):
                columns = [[p.anchor for p in batch], [p.positive for p in batch]]
                features = [_to_device(model.preprocess(texts), model.device) for texts in columns]
                loss = loss_function(features, torch.zeros(len(batch)))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                timer.tick()
    finally:
        model.eval()
        model.max_seq_length = max_tokens


def _to_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


class _Timer:
    """Counts steps and reports them with the time left, from the mean time per step so far. Between steps a
    thread reports it every TICK_S, counting down, so that a page following a slow step sees the time pass; the
    reports never overlap (the CLI's bar and the app's job take them from either thread)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.done = total, progress, 0
        self.start = self.last = time.perf_counter()
        self._lock = threading.Lock()
        self._over = threading.Event()
        if progress:
            progress(0, total, float("nan"))  # nothing measured yet: the time left is unknown
            threading.Thread(target=self._count_down, name="finetune-time-left", daemon=True).start()

    def __enter__(self) -> _Timer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._over.set()

    def tick(self) -> None:
        with self._lock:
            self.done += 1
            self.last = time.perf_counter()
            if self.done >= self.total:
                self._over.set()
            self._report()

    def seconds_left(self) -> float:
        """The mean step's share of the steps to come, less the time the step under way has run; the steps after
        that one keep their share when it runs long."""
        if not self.done:
            return float("nan")
        per_step = (self.last - self.start) / self.done
        to_come = self.total - self.done
        return max(per_step * to_come - (time.perf_counter() - self.last), per_step * max(to_come - 1, 0))

    def _report(self) -> None:
        if self.progress:
            self.progress(self.done, self.total, self.seconds_left())

    def _count_down(self) -> None:
        while not self._over.wait(TICK_S):
            with self._lock:
                if self.done and not self._over.is_set():  # before the first step there is nothing to count down
                    self._report()


# --- the whole job --------------------------------------------------------------------------------------------
def finetune(store: Path, out: Path, settings: Settings, options: FinetuneOptions = FinetuneOptions(),
             progress: Progress | None = None, on_phase: Callable[[str], None] | None = None) -> FinetuneReport:
    """Fine-tune settings.text_model on the chunks of the knowledge base at `store` and save it to `out`.
    `on_phase` hears the name of each phase as it starts; `progress` hears the steps of each phase."""
    from sentence_transformers import SentenceTransformer

    from rag.devices import apply_torch_threads, torch_device
    from rag.text_embedder import resolve_text_model

    announce = on_phase or (lambda phase: logger.info("finetune: %s", phase))
    if settings.embedder == "openai":
        raise FinetuneError("fine-tuning trains a local sentence-transformers model, and --embedder openai runs on "
                            "a server: use --embedder sbert with --text-model set to that model's id or folder")
    check_output(store, out)
    seconds: dict[str, float] = {}
    training, held_back = _split_pairs(store, settings, options, progress, announce, seconds)
    apply_torch_threads(settings.torch_threads)
    model = SentenceTransformer(resolve_text_model(settings.text_model), device=torch_device(settings.device))
    before = held_back_check(model, held_back)
    announce("training")
    mark = time.perf_counter()
    train(model, training, options, progress)
    seconds["training"] = round(time.perf_counter() - mark, 1)
    after = held_back_check(model, held_back)
    report = FinetuneReport(settings.text_model, str(out), _count_kinds(training), len(held_back),
                            len({p.chunk_id for p in held_back}), before, after, options, seconds)
    _save(model, out, report)
    if report.worse:
        logger.warning("finetune: the held-back check got worse (MRR %.4f -> %.4f)", before.mrr, after.mrr)
    return report


def _split_pairs(store: Path, settings: Settings, options: FinetuneOptions, progress: Progress | None,
                 announce: Callable[[str], None], seconds: dict[str, float]) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-back pairs) from the knowledge base's chunks, or why there are too few."""
    chunks = read_chunks(store)
    if not chunks:
        raise FinetuneError(f"the knowledge base '{Path(store).name}' has no text to learn from: "
                            "ingest documents first")
    pairs = build_pairs(chunks, options.sentences_per_chunk, options.seed)
    if options.questions:
        announce("writing questions")
        started = time.perf_counter()
        pairs += _generated_questions(chunks, settings, progress)
        seconds["questions"] = round(time.perf_counter() - started, 1)
    training, held_back = split_held_back(pairs, options.held_back_fraction, options.max_held_back_chunks,
                                          options.seed)
    if len(training) < 2 or not held_back:
        raise FinetuneError(f"the knowledge base '{Path(store).name}' yields only {len(pairs)} training pairs "
                            "(headings and sentences of several words): add documents")
    return training, held_back


def check_output(store: Path, out: Path) -> None:
    """Refuse an output folder that would overwrite a model or land in the knowledge base."""
    store, out = Path(store).resolve(), Path(out).resolve()
    require_store(store)
    if out == store or store in out.parents:
        raise FinetuneError("--out is inside the knowledge base folder: choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FinetuneError(f"the output folder '{out.name}' already exists and is not empty: choose another --out")


def _generated_questions(chunks: list[Chunk], settings: Settings, progress: Progress | None) -> list[Pair]:
    from rag.devices import torch_device
    from rag.generator import build_generator

    generator = build_generator(settings, torch_device(settings.device))
    try:
        return question_pairs(chunks, generator, settings.generation_batch, progress)
    finally:
        generator.close()


def _count_kinds(pairs: list[Pair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.kind] = counts.get(pair.kind, 0) + 1
    return counts


def _save(model: Any, out: Path, report: FinetuneReport) -> None:
    """Write the model beside `out` and rename it into place: a killed run leaves no half-written model."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save(str(partial))
    (partial / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2))
    if out.exists():
        out.rmdir()  # check_output allowed only an empty folder
    partial.rename(out)


# --- the command ----------------------------------------------------------------------------------------------
def add_finetune_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "finetune", parents=[common], help="adapt the text embedder to a knowledge base's documents",
        description="Build training pairs from the knowledge base's own chunks (heading/section, sentence/rest of "
                    "its passage, optionally generated questions), train the text model with in-batch negatives, "
                    "and write a sentence-transformers model folder that --text-model DIR loads. A held-back "
                    "slice of the pairs is checked before and after; a warning says when it got worse.")
    parser.add_argument("--out", required=True, type=Path, help="the new model's folder (must not exist yet)")
    parser.add_argument("--epochs", type=int, default=FinetuneOptions.epochs, help="passes over the pairs (default 1)")
    parser.add_argument("--batch-size", type=int, default=FinetuneOptions.batch_size,
                        help="pairs per step; each pair's negatives are the batch's other passages (default 32)")
    parser.add_argument("--learning-rate", type=float, default=FinetuneOptions.learning_rate,
                        help="AdamW learning rate (default 2e-5)")
    parser.add_argument("--questions", action="store_true",
                        help="also train on questions the generator writes for each chunk (slow on a CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_finetune(args: argparse.Namespace, settings: Settings) -> int:
    options = FinetuneOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                              questions=args.questions)
    bar = _ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        report = finetune(settings.store, args.out, settings, options, bar.update, bar.phase)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    if report.worse:
        print(f"warning: the held-back check got worse (MRR {report.before.mrr:.4f} -> {report.after.mrr:.4f}): "
              "the tuned model finds held-back passages less well than the base model; compare both with "
              "`python -m rag eval` before switching", file=sys.stderr)
    return 0


def format_report(report: FinetuneReport) -> str:
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in sorted(report.pairs.items()))
    return "\n".join([
        f"fine-tuned {report.base_model} -> {report.output}",
        f"  training pairs: {kinds}; {report.options.epochs} epoch(s), batch {report.options.batch_size}, "
        f"learning rate {report.options.learning_rate:g}",
        f"  held-back check ({report.held_back_pairs:,} pairs from {report.held_back_chunks:,} chunks): "
        f"MRR {report.before.mrr:.4f} -> {report.after.mrr:.4f}, "
        f"recall@1 {report.before.recall_at_1:.4f} -> {report.after.recall_at_1:.4f}",
        "  " + ", ".join(f"{phase} {s:.0f} s" for phase, s in report.seconds.items()),
        f"  use it with --text-model {report.output}",
    ])


class _ProgressBar:
    """tqdm bars for the CLI, one per phase; tqdm estimates the time left itself."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.name = ""

    def phase(self, name: str) -> None:
        self.close()
        self.name = name

    def update(self, done: int, total: int, seconds_left: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.name, unit="step", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
