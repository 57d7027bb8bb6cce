"""The "documents don't say" cut-offs, calibrated per embedder (rag.calibration): MiniLM keeps its 0.25 / 0.3, the
int8 export gets its own, and an embedder whose cosines all sit high refuses off-topic questions as MiniLM does.

Real MiniLM and its real int8 ONNX export. The high-cosine embedder is MiniLM with one shared direction added to
every vector: a stand-in for models such as e5, whose unrelated texts sit at cosines near 0.7 and which no package
registry ships (so none can be loaded here); its ranking is MiniLM's, only its cosine scale moves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from ingest.pipeline import Ingestor
from rag import calibration
from rag.calibration import Cutoffs, cutoffs_for
from rag.components import Models
from rag.embedder import EmbedderWrapper, build_embedder
from rag.prompts import NOT_IN_DOCUMENTS
from rag.records import ModelId
from rag.store import KnowledgeBase
from tests.conftest import make_settings

DOCUMENTS = {
    "chess.txt": "The knight moves in an L shape and is the only chess piece that can jump over other pieces.",
    "tides.txt": "The moon's gravity pulls the oceans, which causes two high tides and two low tides every day.",
    "bread.txt": "Knead the dough for ten minutes, then leave the bread to rise in a warm place for one hour.",
}


class Shifted(EmbedderWrapper):
    """MiniLM's vectors with one direction shared by all of them (weight `shift`), re-normalised."""

    def __init__(self, base, shift: float = 1.5) -> None:
        super().__init__(base)
        self.shift = shift
        self.direction = np.random.default_rng(0).normal(size=base.dim).astype(np.float32)
        self.direction /= np.linalg.norm(self.direction)
        self.model_id = ModelId(f"{base.model_id.name}+shifted{shift}", base.dim)

    def embed(self, texts: Sequence[str], batch_size: int = 0, urgent: bool = False,
              query: bool = False) -> np.ndarray:
        vectors = self.base.embed(texts, batch_size, urgent, query) + self.shift * self.direction
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    """Each test starts without this process's remembered cut-offs (the cache files are the tests' own)."""
    monkeypatch.setattr(calibration, "_cache", {})


def test_minilm_keeps_its_hand_tuned_cutoffs_and_they_are_cached(tmp_path, text_embedder):
    cutoffs = cutoffs_for(text_embedder, tmp_path)
    assert cutoffs.passage == pytest.approx(0.25, abs=0.005)
    assert cutoffs.sentence == pytest.approx(0.3, abs=0.005)
    [cached] = (tmp_path / "calibration").iterdir()
    assert json.loads(cached.read_text())["cutoffs"] == {"passage": cutoffs.passage, "sentence": cutoffs.sentence}

    cached.write_text(json.dumps({"cutoffs": {"passage": 0.5, "sentence": 0.6}}))  # read, not measured again
    calibration._cache.clear()
    assert cutoffs_for(text_embedder, tmp_path) == Cutoffs(0.5, 0.6)
    cached.write_text("{not json")  # damaged: measured again and rewritten
    calibration._cache.clear()
    assert cutoffs_for(text_embedder, tmp_path) == cutoffs


def test_int8_gets_cutoffs_of_its_own_close_to_fp32(tmp_path, text_embedder):
    settings = make_settings(tmp_path / "kb", embedder="onnx-int8")
    try:
        int8 = build_embedder(settings)
    except Exception as error:  # the export needs the packaged MiniLM and onnxruntime
        pytest.skip(f"no int8 ONNX export of MiniLM here: {error}")
    fp32, quantized = cutoffs_for(text_embedder, tmp_path), cutoffs_for(int8, tmp_path)
    assert len(list((tmp_path / "calibration").iterdir())) == 2  # one calibration each
    assert quantized.passage == pytest.approx(fp32.passage, abs=0.03)
    assert quantized.sentence == pytest.approx(fp32.sentence, abs=0.03)


def test_an_embedder_with_high_cosines_still_refuses_off_topic_questions(tmp_path, text_embedder):
    shifted = Shifted(text_embedder)
    cutoffs = cutoffs_for(shifted, tmp_path)
    assert cutoffs.passage > 0.5  # MiniLM's 0.25 would let every question through
    settings = make_settings(tmp_path / "kb", cache_dir=tmp_path, retrieval_mode="dense")
    for name, text in DOCUMENTS.items():
        (tmp_path / name).write_text(text)
    kb = KnowledgeBase(settings.store, shifted.model_id, use_gpu=False)
    try:
        assert not Ingestor(kb, settings, shifted).ingest([tmp_path / n for n in DOCUMENTS]).failed
        assistant = Models(settings, shifted, None, "no CLIP in this test").assistant(kb)
        off_topic = assistant.ask("Who painted the Mona Lisa?", mode="extractive")
        assert off_topic.text == NOT_IN_DOCUMENTS
        assert off_topic.sources == [] and kb.search_chunks(shifted.embed(["Mona Lisa"]), 1)[0][1] > 0.25
        on_topic = assistant.ask("How does the knight move in chess?", mode="extractive")
        assert "L shape" in on_topic.text and on_topic.sources[0].file == "chess.txt"
    finally:
        kb.close()


def test_the_set_up_scripts_warm_run_caches_what_the_app_reads(tmp_path, monkeypatch, capsys, text_embedder):
    """`python -m rag.calibration --warm` (scripts/setup.sh) leaves the cut-offs in the cache the app reads, so the
    first question of a new install does not measure them (a new user's first answer waited 42 s for that)."""
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["rag.calibration", "--warm"])
    calibration.main()
    assert "cut-offs for all-MiniLM-L6-v2" in capsys.readouterr().out
    [cached] = (tmp_path / "calibration").iterdir()
    calibration._cache.clear()
    cached.write_text(json.dumps({"cutoffs": {"passage": 0.5, "sentence": 0.6}}))  # what the app finds is this file
    assert cutoffs_for(text_embedder, tmp_path) == Cutoffs(0.5, 0.6)
