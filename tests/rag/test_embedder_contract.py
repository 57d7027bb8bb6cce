"""The contract every text embedder backend keeps (rag.embedder.Embedder): shape, unit length, deterministic
output, token counts and the model's window, errors on empty or over-long input, and turns at the compute gate.

All four backends run the real all-MiniLM-L6-v2: sentence-transformers, its ONNX export (fp32 and int8), and the
OpenAI-compatible HTTP backend against a real Loupe /v1/embeddings served by uvicorn on a free port. So each
one's vectors can also be held against sentence-transformers' own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from rag.components import Models
from rag.devices import ComputeGate
from rag.embedder import MAX_TEXT_CHARS, Embedder, build_embedder
from rag.errors import LoupeError, ModelServerError, TooLarge
from rag.onnx_embedder import OnnxEmbedder, export_onnx
from rag.openai_embedder import OpenAIEmbedder, approximate_tokens
from tests.conftest import make_settings
from tests.threads import wait_until

TEXTS = ["a cat", "The walrus operator := assigns a value inside an expression.", "x",
         "Supply flights land on the ice runway every second Tuesday, weather permitting."]
# How close each backend's vectors are to sentence-transformers' (cosine, every row).
AGREEMENT = {"sbert": 0.99999, "onnx": 0.9999, "onnx-int8": 0.97, "openai": 0.999}
BACKENDS = list(AGREEMENT)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    return export_onnx("all-MiniLM-L6-v2", tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="module")
def loupe_server(tmp_path_factory, text_embedder) -> Iterator[str]:
    """Loupe's /v1 routes with the real service and MiniLM, served by uvicorn: the server the HTTP backend calls."""
    import uvicorn
    from fastapi import FastAPI

    from openai_api import add_openai_routes
    from service import LoupeService
    from tests.app.conftest import free_port

    settings = make_settings(tmp_path_factory.mktemp("server") / "indexes" / "default")
    app = FastAPI()
    service = LoupeService(settings, Models(settings, text_embedder, None, "no CLIP in this test"))
    add_openai_routes(app, service)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the embeddings server listening")
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join()
    service.close()


@pytest.fixture(scope="module")
def backends(text_embedder, onnx_folder, loupe_server) -> dict[str, Embedder]:
    return {"sbert": text_embedder, "onnx": OnnxEmbedder(onnx_folder), "onnx-int8": OnnxEmbedder(onnx_folder, True),
            "openai": OpenAIEmbedder(loupe_server, "all-MiniLM-L6-v2", max_retries=0)}


@pytest.fixture(params=BACKENDS)
def backend(request, backends) -> tuple[str, Embedder]:
    return request.param, backends[request.param]


def test_rows_are_unit_length_float32_in_the_callers_order_and_agree_with_sentence_transformers(backend,
                                                                                                text_embedder):
    name, embedder = backend
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(TEXTS, batch_size=3)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32 and embedder.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    reference = text_embedder.model.encode(TEXTS, normalize_embeddings=True)
    assert (vectors * reference).sum(axis=1).min() >= AGREEMENT[name]
    assert embedder.embed([]).shape == (0, 384)


def test_output_is_deterministic_whatever_the_batch(backend):
    _, embedder = backend
    first = embedder.embed(TEXTS)
    assert np.array_equal(first, embedder.embed(TEXTS))
    alone = np.vstack([embedder.embed([text]) for text in TEXTS])
    assert np.allclose(first, alone, atol=1e-4)  # padding in a batch changes the last digits only


def test_token_counts_and_the_model_window(backend, text_embedder):
    """The model reads max_tokens tokens of a text: what lies past them changes nothing, what lies within does."""
    _, embedder = backend
    counts = embedder.count_tokens_batch(TEXTS)
    assert counts == [embedder.count_tokens(t) for t in TEXTS] and all(c >= 1 for c in counts)
    words = " ".join(f"word{i % 50} lantern harbour" for i in range(200))
    assert embedder.count_tokens(words) > embedder.max_tokens >= 200  # the chunker's budget fits in the window
    ids = text_embedder.tokenizer(words, add_special_tokens=False)["input_ids"]  # the served model's own tokens
    window = text_embedder.max_tokens
    head, shorter = (text_embedder.tokenizer.decode(ids[:n]) for n in (window, window - 30))
    whole, cut, short = embedder.embed([words, head, shorter])
    assert whole @ cut > 0.999
    assert whole @ short < 0.999


def test_empty_and_over_long_texts_are_refused_by_position(backend):
    _, embedder = backend
    with pytest.raises(LoupeError, match="text 2 of 2 is empty"):
        embedder.embed(["fine", "  "])
    with pytest.raises(TooLarge, match=f"at most {MAX_TEXT_CHARS:,}"):
        embedder.embed(["a" * (MAX_TEXT_CHARS + 1)])


@pytest.mark.parametrize("quantized", [False, True])
def test_onnx_batches_take_their_turn_at_the_compute_gate(onnx_folder, quantized):
    """Like sentence-transformers' (tests/rag/test_text_embedder.py): no ONNX batch runs while another model
    computation holds the gate."""
    gate = ComputeGate()
    embedder = OnnxEmbedder(onnx_folder, quantized, gate)
    results: list[np.ndarray] = []
    with gate.turn():
        worker = threading.Thread(target=lambda: results.append(embedder.embed(TEXTS)))
        worker.start()
        wait_until(lambda: gate.waiting == 1, "the embedder waiting for its turn")
        assert not results
    worker.join()
    assert results[0].shape == (len(TEXTS), 384)


def test_build_embedder_builds_each_backend_from_settings(tmp_path, onnx_folder, loupe_server):
    settings = make_settings(tmp_path / "kb", cache_dir=onnx_folder.parent.parent)  # the export made above
    int8 = build_embedder(settings.with_(embedder="onnx-int8"))
    assert isinstance(int8, OnnxEmbedder) and int8.quantized
    assert int8.model_id.name == "all-MiniLM-L6-v2+onnx-int8"  # a store keeps int8 vectors apart from fp32 ones
    remote = build_embedder(settings.with_(embedder="openai", openai_base_url=loupe_server,
                                           openai_model="loupe-embedder", openai_api_key="sk-secret-123"))
    assert isinstance(remote, OpenAIEmbedder) and remote.model_id.dim == 384
    assert "sk-secret-123" not in repr(remote) and "sk-secret-123" not in repr(settings.with_(
        openai_api_key="sk-secret-123"))


def test_the_http_backend_names_the_server_and_the_status(loupe_server, caplog):
    with pytest.raises(ModelServerError, match=rf"{loupe_server}.*HTTP 404.*'no-such-model'") as refused:
        OpenAIEmbedder(loupe_server, "no-such-model", api_key="sk-secret-456", max_retries=0)
    assert refused.value.status == 502
    from tests.app.conftest import free_port

    nobody = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelServerError, match=rf"{nobody} could not be reached"):
        OpenAIEmbedder(nobody, "all-MiniLM-L6-v2", max_retries=0)
    assert "sk-secret-456" not in caplog.text


def test_the_approximate_count_errs_high_for_english(text_embedder):
    """The HTTP backend counts without the model's tokenizer; on English prose it must not count fewer tokens
    than a word-piece tokenizer does, or chunks cut by it would overflow the model's window."""
    prose = ("The Aurora research station keeps its seed vault at minus eighteen degrees Celsius. Supply flights "
             "land on the ice runway every second Tuesday, weather permitting; each brings fuel and the mail.")
    assert approximate_tokens(prose) >= text_embedder.count_tokens(prose)
    assert approximate_tokens("") == 0 and approximate_tokens("cat") == 1 and approximate_tokens("cats, dogs") == 3


def test_a_pca_projection_keeps_the_contract_and_comes_from_the_knowledge_base(tmp_path, text_embedder):
    """--embed-dims N: the vectors go through the knowledge base's own PCA projection (rag.pca), which must be
    there first; the projected embedder keeps every rule above at N dimensions."""
    from rag.calibration import CALIBRATION_TOPICS
    from rag.pca import ProjectedEmbedder, Projection, ProjectionError

    settings = make_settings(tmp_path / "kb", embed_dims=16)
    with pytest.raises(ProjectionError, match="'kb' has no PCA projection yet.*reembed"):
        build_embedder(settings)
    passages = text_embedder.embed([p for _, p in CALIBRATION_TOPICS])
    settings.store.mkdir()
    Projection.fit(passages, 16, "all-MiniLM-L6-v2").save(settings.store)

    embedder = build_embedder(settings)
    assert isinstance(embedder, ProjectedEmbedder) and isinstance(embedder, Embedder)
    assert embedder.model_id.name.startswith("all-MiniLM-L6-v2+pca16:") and embedder.dim == 16
    vectors = embedder.embed(TEXTS, batch_size=3)
    assert vectors.shape == (len(TEXTS), 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(embedder.embed(TEXTS), embedder.embed(TEXTS)) and embedder.embed([]).shape == (0, 16)
    assert np.allclose(vectors, embedder.embed(TEXTS), atol=1e-4)  # whatever the batch
    assert embedder.count_tokens_batch(TEXTS) == text_embedder.count_tokens_batch(TEXTS)
    assert embedder.max_tokens == text_embedder.max_tokens
    with pytest.raises(LoupeError, match="text 2 of 2 is empty"):
        embedder.embed(["fine", "  "])
    with pytest.raises(ProjectionError, match="reduced to 16 dimensions"):
        build_embedder(settings.with_(embed_dims=32))
