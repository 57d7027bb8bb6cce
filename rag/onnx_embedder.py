"""The ONNX backends: the sentence-transformers model exported once to ONNX and run by onnxruntime on the CPU,
in fp32 (`onnx`) or with its weights quantised to int8 (`onnx-int8`).

Why not sentence-transformers' own `backend="onnx"`: it needs optimum, and no optimum release resolves beside
transformers 5. So the export is torch.onnx.export of the model's transformer (its pooling and normalisation
are done here, in numpy), and the quantisation is onnxruntime's dynamic int8, per channel: per tensor, it
moved vectors too far (mean cosine to fp32 0.949, docs/BENCHMARKS.md).

The export runs once, from the packaged or local weights (nothing is downloaded for it), into
<cache dir>/onnx/<model>-<hash>/, written to a temporary folder and renamed when complete, so a killed export
leaves nothing that looks finished. `python -m rag export-onnx` does it ahead of time (scripts/setup.sh);
otherwise the first use does it (about 5 s for all-MiniLM-L6-v2). At run time only onnxruntime and the
tokenizer are needed: neither torch nor sentence-transformers is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.devices import ComputeGate
from rag.embedder import INT8_SUFFIX, BatchedEmbedder, tokenizer_counts
from rag.errors import LoupeError
from rag.records import ModelId
from rag.settings import Settings

logger = logging.getLogger(__name__)

MANIFEST = "loupe-onnx.json"
FP32_FILE, INT8_FILE = "model.onnx", "model-int8.onnx"
POOLING_MODES = ("mean", "cls")


def export_folder(name: str, cache_dir: Path) -> Path:
    """Where the export of `name` is cached: one folder per model name and the weights' location."""
    from rag.text_embedder import resolve_text_model

    digest = hashlib.sha256(resolve_text_model(name).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[-60:] or "model"
    return Path(cache_dir) / "onnx" / f"{slug}-{digest}"


def export_onnx(name: str, cache_dir: Path) -> Path:
    """Export `name` to ONNX (fp32 and int8) unless already cached; returns the folder."""
    folder = export_folder(name, cache_dir)
    if (folder / MANIFEST).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        logger.info("exporting the text model %s to ONNX (once; cached)", name)
        _export_into(name, work)
        try:
            os.replace(work, folder)
        except OSError:  # another process finished the same export first: keep its copy
            if not (folder / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _export_into(name: str, work: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from rag.text_embedder import model_prefixes, resolve_text_model

    model = SentenceTransformer(resolve_text_model(name), device="cpu")
    pooling = _pooling_mode(model)
    tokenizer = model.tokenizer
    inputs = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    sample = tokenizer(["an example", "a second, longer example"], padding=True, return_tensors="pt")
    transformer = _last_hidden_state(model[0].auto_model, inputs).eval()
    axes = {n: {0: "batch", 1: "tokens"} for n in [*inputs, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow: about shapes it keeps dynamic
        torch.onnx.export(transformer, tuple(sample[n] for n in inputs), str(work / FP32_FILE), input_names=inputs,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(str(work / FP32_FILE), str(work / INT8_FILE), weight_type=QuantType.QInt8, per_channel=True)
    tokenizer.save_pretrained(str(work))
    query_prefix, passage_prefix = model_prefixes(model.prompts, name)
    manifest = {"name": name, "dim": int(model.get_embedding_dimension()), "max_tokens": int(model.max_seq_length) - 2,
                "pooling": pooling, "inputs": inputs, "query_prefix": query_prefix, "passage_prefix": passage_prefix}
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _last_hidden_state(transformer, inputs: list[str]):
    """The transformer as a module of positional tensors (how torch.onnx.export passes them), giving its last
    hidden state; pooling happens after, in numpy."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(inputs, tensors))).last_hidden_state

    return LastHiddenState()


def _pooling_mode(model) -> str:
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    mode = getattr(pooling, "pooling_mode", "mean")
    if mode not in POOLING_MODES:
        raise LoupeError(f"the ONNX backend pools by mean or CLS token; this model pools by {mode!r}: "
                         "use --embedder sbert")
    return mode


class OnnxEmbedder(BatchedEmbedder):
    """An exported model run by onnxruntime on the CPU; `quantized` picks the int8 weights."""

    def __init__(self, folder: Path, quantized: bool = False, gate: ComputeGate | None = None,
                 threads: int = 0) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        manifest = json.loads((folder / MANIFEST).read_text())
        self.name = manifest["name"]
        self.quantized = quantized
        self.model_id = ModelId(self.name + (INT8_SUFFIX if quantized else ""), int(manifest["dim"]))
        self.max_tokens = int(manifest["max_tokens"])
        self.pooling = manifest["pooling"]
        self.inputs = list(manifest["inputs"])
        self.query_prefix, self.passage_prefix = manifest["query_prefix"], manifest["passage_prefix"]
        self.batch_size = 16  # as for sentence-transformers on the CPU
        self.gate = gate or ComputeGate()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core, as torch
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: spinning burns the cores that the generator and ingest need
        # between turns at the gate (short queries ran twice as fast without it on the shared 2-core machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(folder / (INT8_FILE if quantized else FP32_FILE)), options,
                                                    providers=["CPUExecutionProvider"])

    @classmethod
    def from_settings(cls, settings: Settings, gate: ComputeGate | None, quantized: bool) -> OnnxEmbedder:
        return cls(export_onnx(settings.text_model, settings.cache_dir), quantized, gate, settings.torch_threads)

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.name!r}, quantized={self.quantized})"

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.quantized:
            # Dynamic quantisation scales each call's activations by their range over the whole batch, so a text's
            # vector would depend on its batch-mates (and their padding). One text a call keeps it independent
            # and costs no throughput: without padding there is less to compute (docs/BENCHMARKS.md).
            return np.vstack([self._run([text]) for text in texts])
        return self._run(texts)

    def _run(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens + 2,
                                 return_tensors="np")
        feed = {name: encoded[name].astype(np.int64) for name in self.inputs}
        hidden = self.session.run(None, feed)[0]
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        return tokenizer_counts(self.tokenizer, texts)
