"""`python -m rag finetune` on a small real knowledge base: pairs from its chunks, real training of the real
MiniLM, the held-back check, and the errors a user can make."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from rag import finetune as finetune_module
from rag.cli import main
from rag.components import Models
from rag.finetune import (
    REPORT_FILE,
    FinetuneError,
    FinetuneOptions,
    Pair,
    _Timer,
    batches,
    build_pairs,
    finetune,
    read_chunks,
)
from rag.store import KnowledgeBase, KnowledgeBaseMissing
from rag.text_embedder import TextEmbedder
from tests.conftest import make_settings
from tests.threads import wait_until

# Thirty tools, one section each: a heading and three sentences that only fit that tool.
TOOLS = [
    ("Band saw", "workshop", "a soft brush", 340), ("Belt sander", "garage", "compressed air", 120),
    ("Bench grinder", "basement", "a dry cloth", 95), ("Biscuit joiner", "shed", "a vacuum nozzle", 150),
    ("Chainsaw", "barn", "warm soapy water", 280), ("Circular saw", "workshop", "a stiff nylon brush", 110),
    ("Drill press", "basement", "light machine oil", 410), ("Heat gun", "utility room", "a damp sponge", 45),
    ("Hedge trimmer", "garden shed", "resin solvent", 130), ("Jigsaw", "toolbox", "a paintbrush", 85),
    ("Jointer", "workshop", "paste wax", 520), ("Lathe", "basement", "a brass brush", 900),
    ("Leaf blower", "garage", "a garden hose", 160), ("Mitre saw", "workshop", "a shop vacuum", 240),
    ("Nail gun", "toolbox", "pneumatic oil", 190), ("Orbital sander", "drawer", "a rubber cleaning stick", 70),
    ("Planer", "workshop", "citrus degreaser", 450), ("Pressure washer", "garage", "descaling liquid", 300),
    ("Rotary hammer", "van", "a microfibre towel", 260), ("Router", "cabinet", "pitch remover", 180),
    ("Scroll saw", "attic", "a toothbrush", 210), ("Soldering iron", "desk drawer", "a brass wool tip", 40),
    ("Spray gun", "paint room", "lacquer thinner", 90), ("Table saw", "workshop", "blade cleaner", 700),
    ("Tile cutter", "porch", "clean water", 60), ("Impact driver", "van", "a lint-free rag", 140),
    ("Wet vacuum", "laundry", "mild disinfectant", 100), ("Welder", "barn", "anti-spatter spray", 650),
    ("Wood chipper", "barn", "a scraper", 1200), ("Log splitter", "woodpile shelter", "hydraulic fluid", 800),
]


def section(tool: str, room: str, cleaner: str, price: int) -> str:
    return (f"## {tool}\n\nThe {tool.lower()} is kept in the {room} between jobs. "
            f"Clean the {tool.lower()} with {cleaner} after every use. "
            f"A replacement {tool.lower()} costs about {price} euros. Ask first.\n")


@pytest.fixture(scope="module")
def tools_store(text_embedder, tmp_path_factory) -> Path:
    """A knowledge base of three Markdown manuals, one chunk per tool section."""
    from ingest.pipeline import Ingestor

    folder = tmp_path_factory.mktemp("tools")
    files = []
    for number in range(3):
        path = folder / f"manual-{number}.md"
        path.write_text(f"# Manual {number}\n\n" + "\n".join(section(*tool) for tool in TOOLS[number::3]))
        files.append(path)
    settings = make_settings(folder / "kb")
    kb = Models(settings, text_embedder, None, "no CLIP in this test").open_store()
    try:
        assert not Ingestor(kb, settings, text_embedder).ingest(files).failed
    finally:
        kb.close()
    return settings.store


@pytest.fixture(scope="module")
def tuned(tools_store, tmp_path_factory):
    """One epoch on the tools knowledge base, through the API, with every progress call recorded."""
    out = tmp_path_factory.mktemp("tuned") / "model"
    calls: list[tuple[int, int, float]] = []
    phases: list[str] = []
    options = FinetuneOptions(epochs=1, batch_size=8, held_back_fraction=0.2)
    report = finetune(tools_store, out, make_settings(tools_store), options,
                      progress=lambda *call: calls.append(call), on_phase=phases.append)
    return report, out, calls, phases


def test_pairs_are_headings_with_their_section_and_sentences_with_the_rest(tools_store):
    chunks = read_chunks(tools_store)
    pairs = build_pairs(chunks, sentences_per_chunk=1, seed=0)
    by_kind = {kind: [p for p in pairs if p.kind == kind] for kind in ("heading", "sentence")}
    assert len(by_kind["heading"]) == len(chunks) == len(TOOLS)
    saw = next(p for p in by_kind["heading"] if p.anchor == "Band saw")
    assert saw.positive.startswith("The band saw is kept in the workshop") and "Band saw" not in saw.positive
    for pair in by_kind["sentence"]:
        heading, text = next((h, t) for i, h, t in chunks if i == pair.chunk_id)
        assert pair.anchor in text and pair.anchor not in pair.positive
        assert pair.positive.startswith(f"{heading}\n")  # the rest of the passage as the index embeds it
        assert len(pair.anchor.split()) >= 5  # "Ask first." is too short to be an anchor
    assert len(by_kind["sentence"]) == len(TOOLS)  # one per chunk, as asked
    assert len([p for p in build_pairs(chunks, sentences_per_chunk=3) if p.kind == "sentence"]) == 3 * len(TOOLS)


def test_a_batch_never_holds_two_pairs_of_one_chunk_or_one_text():
    pairs = [Pair(f"sentence {i}", f"rest {i}", chunk_id=i // 2, kind="sentence") for i in range(20)]
    pairs += [Pair("Same heading", f"section {i}", chunk_id=100 + i, kind="heading") for i in range(5)]
    made = batches(pairs, 4, random.Random(0))
    for batch in made:
        assert len({p.chunk_id for p in batch}) == len(batch)
        assert len({p.anchor for p in batch}) == len(batch)
    used = [p for b in made for p in b]
    assert len(used) == len(set(used))
    # A pair that clashes is deferred to a later batch, not dropped; only a last lone pair has nothing to learn from.
    assert len(used) >= len(pairs) - 1


def test_one_epoch_writes_a_model_that_loads_as_the_text_embedder(tuned, text_embedder):
    report, out, calls, phases = tuned
    assert phases == ["training"]  # no pseudo-questions unless asked
    total = calls[0][1]
    steps = [c[0] for c in calls]
    # every step in order, each reported once it is done (and again while the next one runs, if it runs long)
    assert sorted(steps) == steps and sorted(set(steps)) == list(range(total + 1)) and calls[-1][2] == 0.0
    assert report.pairs["heading"] > 0 and report.pairs["sentence"] > 0
    assert report.held_back_chunks == 6 and report.held_back_pairs == 12  # 20% of 30 chunks, 2 pairs each
    assert 0 < report.before.mrr <= 1 and 0 < report.after.mrr <= 1
    assert json.loads((out / REPORT_FILE).read_text())["after"] == {"mrr": report.after.mrr,
                                                                   "recall_at_1": report.after.recall_at_1}
    embedder = TextEmbedder(str(out), "cpu")
    assert embedder.dim == text_embedder.dim
    texts = ["Where is the lathe kept?", "The drill press is kept in the basement."]
    tuned_vectors, base_vectors = embedder.embed(texts), text_embedder.embed(texts)
    assert np.allclose(np.linalg.norm(tuned_vectors, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(tuned_vectors * base_vectors, axis=1)) < 0.9999  # trained: not the base model's vectors


@pytest.fixture
def command_env(monkeypatch):
    """`main()` reads the environment, as a user's shell would: keep the model settings at their defaults."""
    for name in ("LOUPE_TEXT_MODEL", "LOUPE_DEVICE", "LOUPE_TORCH_THREADS", "LOUPE_STORE"):
        monkeypatch.delenv(name, raising=False)


def test_the_command_reports_the_check_and_warns_when_it_gets_worse(tools_store, tmp_path, capsys, command_env):
    # A learning rate a thousand times too high wrecks the model: the held-back check must catch it.
    code = main(["finetune", "--store", str(tools_store), "--out", str(tmp_path / "wrecked"), "--epochs", "1",
                 "--batch-size", "8", "--learning-rate", "0.02", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["worse"] and report["after"]["mrr"] < report["before"]["mrr"]
    assert "warning: the held-back check got worse" in err
    assert (tmp_path / "wrecked" / "config.json").is_file()  # written anyway: the user decides


def test_bad_input_gives_a_clear_error(tools_store, tmp_path, text_embedder, capsys, command_env):
    settings = make_settings(tmp_path / "nowhere")
    with pytest.raises(KnowledgeBaseMissing, match="no knowledge base at"):
        finetune(tmp_path / "nowhere", tmp_path / "out", settings)
    empty = tmp_path / "empty"
    KnowledgeBase(empty, text_embedder.model_id).close()
    with pytest.raises(FinetuneError, match="'empty' has no text to learn from"):
        finetune(empty, tmp_path / "out", make_settings(empty))
    with pytest.raises(FinetuneError, match="--out is inside the knowledge base"):
        finetune(tools_store, tools_store / "model", make_settings(tools_store))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(FinetuneError, match="'taken' already exists and is not empty"):
        finetune(tools_store, taken, make_settings(tools_store))
    assert (taken / "notes.txt").read_text() == "keep me"
    remote = make_settings(tools_store, embedder="openai", openai_base_url="http://127.0.0.1:9/v1", openai_model="m")
    with pytest.raises(FinetuneError, match="--embedder openai runs on a server"):
        finetune(tools_store, tmp_path / "out", remote)
    with pytest.raises(FinetuneError, match="--epochs must be at least 1"):
        FinetuneOptions(epochs=0)
    # Through the command: one line on stderr and exit 1, no traceback.
    assert main(["finetune", "--store", str(empty), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == "error: the knowledge base 'empty' has no text to learn from: " \
                                              "ingest documents first"


def test_the_time_left_counts_down_while_a_step_runs(monkeypatch):
    """A training step may take many seconds on a CPU: the time left must move between steps, not wait for the next
    one (the page showed it frozen). The ticking is made fast here (TICK_S); no duration is asserted."""
    monkeypatch.setattr(finetune_module, "TICK_S", 0.01, raising=False)
    calls: list[tuple[int, int, float]] = []
    timer = _Timer(4, lambda *call: calls.append(call))
    threading.Event().wait(0.3)  # the first step
    timer.tick()
    wait_until(lambda: sum(done == 1 for done, _, _ in calls) >= 6, "the time left reported between steps")
    for _ in range(3):
        timer.tick()  # the last step ends the phase
    after_first = [left for done, _, left in calls if done == 1]
    assert after_first[0] > after_first[-1] and after_first == sorted(after_first, reverse=True)  # counting down
    # the two steps after the one under way keep their share: about 2/3 of the three steps' time
    assert after_first[-1] >= after_first[0] * 2 / 3 * 0.99
    count = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) == count  # the phase is over: nothing more is reported

