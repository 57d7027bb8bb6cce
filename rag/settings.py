"""One settings object for the whole of Loupe: flags, then environment, then defaults.

It is built once at an entry point (CLI, app, tests) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ANSWER_MODES = ("answer-first", "generate", "extractive")
# What each answer mode does, in one line each (the app and the CLI show these).
MODE_DESCRIPTIONS = {
    "answer-first": "the passages' best sentences, cited, at once; then the model's own line where they support it",
    "generate": "the model writes the answer from the best sentences; unsupported sentences are flagged",
    "extractive": "the passages' best sentences only, cited; no model",
}
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
GENERATOR_BACKENDS = ("local", "openai")
EMBEDDERS = ("sbert", "onnx", "onnx-int8", "openai")  # rag.embedder describes each
DEVICES = ("auto", "cpu", "cuda")
ANN_KINDS = ("auto", "flat", "hnsw")  # the folder store's vector index (rag.vector_index)
ANN_THRESHOLD = 50_000  # chunks from which "auto" searches an HNSW graph (docs/BENCHMARKS.md, "Scale")
# Zero-shot image tags (rag.explore.image_tags): general labels every knowledge base starts with; each adds its own.
DEFAULT_IMAGE_LABELS = ("photo, diagram, chart, table, screenshot, map, drawing, text, person, group of people, "
                        "building, landscape, animal, plant, food, vehicle, logo, document")


class SettingsError(ValueError):
    """A setting has a value Loupe cannot use; the message names the setting."""


def _env(*names: str) -> dict[str, tuple[str, ...]]:
    """The environment variables of a setting, the first one set winning."""
    return {"env": names}


@dataclass(frozen=True)
class Settings:
    # Where the knowledge base lives: a folder holding the catalog and the indexes, or a PostgreSQL URL (kept as a
    # str: postgresql://user@host:5432/db?kb=NAME, rag.store_factory; the password best in PGPASSWORD or ~/.pgpass).
    store: Path = field(default=PROJECT_ROOT / "indexes" / "default", metadata=_env("LOUPE_STORE"))
    # Models. Names resolve to a packaged copy when one is installed (see rag.models), else to a hub id.
    text_model: str = field(default="all-MiniLM-L6-v2", metadata=_env("LOUPE_TEXT_MODEL"))
    clip_model: str = field(default="ViT-B-32", metadata=_env("LOUPE_CLIP_MODEL"))
    clip_pretrained: str = field(default="laion2b_s34b_b79k", metadata=_env("LOUPE_CLIP_PRETRAINED"))
    generator_model: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata=_env("LOUPE_GENERATOR"))
    # Where answers are generated: "local" (transformers in this process) or "openai" (an OpenAI-compatible
    # chat-completions server at generator_base_url, serving generator_model). Nothing leaves the machine unless
    # the user sets a URL.
    generator_backend: str = field(default="local", metadata=_env("LOUPE_GENERATOR_BACKEND"))
    generator_base_url: str = field(default="", metadata=_env("LOUPE_GENERATOR_BASE_URL"))
    # A secret: from the environment only (never a flag, which `ps` shows), and never printed (repr=False).
    generator_api_key: str = field(default="", repr=False, metadata=_env("LOUPE_GENERATOR_API_KEY"))
    # The text embedder's backend (rag.embedder): sbert (sentence-transformers, the default), onnx and onnx-int8
    # (text_model exported to ONNX, run by onnxruntime on the CPU), or openai (an OpenAI-compatible /v1/embeddings
    # server at openai_base_url serving openai_model; text_model is then unused). Nothing leaves the machine
    # unless the user sets a URL.
    embedder: str = field(default="sbert", metadata=_env("LOUPE_EMBEDDER"))
    openai_base_url: str = field(default="", metadata=_env("LOUPE_OPENAI_BASE_URL"))
    openai_model: str = field(default="text-embedding-3-small", metadata=_env("LOUPE_OPENAI_MODEL"))
    # A secret: from the environment only, and never printed (repr=False).
    openai_api_key: str = field(default="", repr=False, metadata=_env("LOUPE_OPENAI_API_KEY", "OPENAI_API_KEY"))
    # Dimensions kept by PCA fitted on the knowledge base's own chunks (rag.pca; `reembed --embed-dims N` fits it);
    # 0 keeps them all.
    embed_dims: int = field(default=0, metadata=_env("LOUPE_EMBED_DIMS"))
    device: str = field(default="auto", metadata=_env("LOUPE_DEVICE"))
    cache_dir: Path = field(default=Path.home() / ".cache" / "loupe", metadata=_env("LOUPE_CACHE_DIR"))
    # Ingest.
    chunk_tokens: int = field(default=200, metadata=_env("LOUPE_CHUNK_TOKENS"))
    chunk_overlap: int = field(default=40, metadata=_env("LOUPE_CHUNK_OVERLAP"))
    max_file_mb: float = field(default=200.0, metadata=_env("LOUPE_MAX_FILE_MB"))
    ocr: bool = field(default=True, metadata=_env("LOUPE_OCR"))
    # Untrusted files are parsed in a worker process with these bounds (ingest.parse_worker): a file that takes
    # longer, or needs more memory on top of the worker's own, fails alone with a message that says so.
    parse_timeout_s: float = field(default=120.0, metadata=_env("LOUPE_PARSE_TIMEOUT_S"))
    parse_memory_mb: int = field(default=1536, metadata=_env("LOUPE_PARSE_MEMORY_MB"))
    # Decompression limits: a small file must not decode to gigabytes.
    max_image_megapixels: float = field(default=64.0, metadata=_env("LOUPE_MAX_IMAGE_MEGAPIXELS"))
    max_page_image_mb: int = field(default=512, metadata=_env("LOUPE_MAX_PAGE_IMAGE_MB"))  # decoded, one page
    max_file_image_mb: int = field(default=4096, metadata=_env("LOUPE_MAX_FILE_IMAGE_MB"))  # decoded, whole file
    max_unzipped_mb: int = field(default=512, metadata=_env("LOUPE_MAX_UNZIPPED_MB"))  # a DOCX's parts together
    max_zip_ratio: int = field(default=200, metadata=_env("LOUPE_MAX_ZIP_RATIO"))  # uncompressed/compressed, a part
    # 0 picks by device: 16 on the CPU (fastest and ~100 MB, docs/BENCHMARKS.md), 128 on a GPU.
    embed_batch_size: int = field(default=0, metadata=_env("LOUPE_EMBED_BATCH"))
    # Answers.
    top_k: int = field(default=5, metadata=_env("LOUPE_TOP_K"))
    answer_mode: str = field(default="answer-first", metadata=_env("LOUPE_ANSWER_MODE"))
    retrieval_mode: str = field(default="hybrid", metadata=_env("LOUPE_RETRIEVAL_MODE"))
    # Chunks on each side of the best passage whose sentences an answer may also use (0: none). Off by default:
    # on pallets-docs it lowered the gold answer in the answer from 42% to 36% (docs/EVALUATION.md).
    neighbour_chunks: int = field(default=0, metadata=_env("LOUPE_NEIGHBOUR_CHUNKS"))
    max_new_tokens: int = field(default=200, metadata=_env("LOUPE_MAX_NEW_TOKENS"))
    # One cap for every path a question takes (chat, Gradio API, REST, CLI).
    max_question_chars: int = field(default=2000, metadata=_env("LOUPE_MAX_QUESTION_CHARS"))
    # Generation stops after this long, however many tokens it has (a deadline, not a speed).
    generation_timeout_s: float = field(default=60.0, metadata=_env("LOUPE_GENERATION_TIMEOUT_S"))
    # Serving: questions decoded together in one batch, and how many may wait beyond that before "busy".
    generation_batch: int = field(default=8, metadata=_env("LOUPE_GENERATION_BATCH"))
    max_waiting_questions: int = field(default=32, metadata=_env("LOUPE_MAX_WAITING_QUESTIONS"))
    torch_threads: int = field(default=0, metadata=_env("LOUPE_TORCH_THREADS"))  # 0: torch's own choice
    # Browser app.
    host: str = field(default="127.0.0.1", metadata=_env("LOUPE_HOST"))
    port: int = field(default=7860, metadata=_env("LOUPE_PORT"))
    share: bool = field(default=False, metadata=_env("LOUPE_SHARE"))
    auth: str = field(default="", metadata=_env("LOUPE_AUTH"))  # "user:password", empty = open
    max_upload_mb: float = field(default=100.0, metadata=_env("LOUPE_MAX_UPLOAD_MB"))
    max_upload_files: int = field(default=50, metadata=_env("LOUPE_MAX_UPLOAD_FILES"))
    # Origins (scheme://host:port, comma-separated) besides the app's own that may send state-changing requests.
    allowed_origins: str = field(default="", metadata=_env("LOUPE_ALLOWED_ORIGINS"))
    # A public demo on purpose (a Space): serving beyond loopback without --auth then warns less loudly.
    public_demo: bool = field(default=False, metadata=_env("LOUPE_PUBLIC_DEMO"))
    log_level: str = field(default="INFO", metadata=_env("LOUPE_LOG_LEVEL"))
    # Explore: the default labels of zero-shot image tags, comma-separated (a knowledge base adds its own).
    image_labels: str = field(default=DEFAULT_IMAGE_LABELS, metadata=_env("LOUPE_IMAGE_LABELS"))
    # The folder store's vector search (rag.vector_index): "auto" is exact (flat) below ann_threshold chunks and
    # HNSW from there (on a GPU always exact, on the GPU); "flat" or "hnsw" forces one.
    ann: str = field(default="auto", metadata=_env("LOUPE_ANN"))
    ann_threshold: int = field(default=ANN_THRESHOLD, metadata=_env("LOUPE_ANN_THRESHOLD"))

    def __post_init__(self) -> None:
        for name, choices in (("answer_mode", ANSWER_MODES), ("retrieval_mode", RETRIEVAL_MODES),
                              ("generator_backend", GENERATOR_BACKENDS), ("device", DEVICES),
                              ("embedder", EMBEDDERS), ("ann", ANN_KINDS)):
            if getattr(self, name) not in choices:
                raise SettingsError(f"{name} must be one of {choices}, not {getattr(self, name)!r}")
        if self.generator_backend == "openai" and not re.fullmatch(r"https?://\S+", self.generator_base_url):
            raise SettingsError("generator_backend 'openai' needs generator_base_url: http(s)://host[:port]/v1")
        if self.embedder == "openai" and not re.fullmatch(r"https?://\S+", self.openai_base_url):
            raise SettingsError("embedder 'openai' needs openai_base_url: http(s)://host[:port]/v1")
        if self.embedder == "openai" and not self.openai_model.strip():
            raise SettingsError("embedder 'openai' needs openai_model: the server's name of the model")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise SettingsError("chunk_overlap must be at least 0 and smaller than chunk_tokens")
        for name in ("top_k", "chunk_tokens", "max_new_tokens", "max_upload_files", "max_question_chars",
                     "generation_batch", "parse_memory_mb", "max_page_image_mb", "max_file_image_mb",
                     "max_unzipped_mb", "max_zip_ratio", "ann_threshold"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.embed_batch_size < 0:
            raise SettingsError("embed_batch_size must be 0 (by device) or more")
        if self.embed_dims < 0:
            raise SettingsError("embed_dims must be 0 (all dimensions) or more")
        for name in ("max_file_mb", "max_upload_mb", "parse_timeout_s", "max_image_megapixels",
                     "generation_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for name in ("max_waiting_questions", "torch_threads", "neighbour_chunks"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be 0 or more")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("log_level must be DEBUG, INFO, WARNING or ERROR")
        for origin in self.origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise SettingsError(f"allowed_origins: {origin!r} is not scheme://host[:port]")
        if self.auth and ":" not in self.auth:
            raise SettingsError("auth must be 'user:password'")

    @classmethod
    def load(cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Flags (None means 'not given') win over environment variables, which win over defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            env_name = next((n for n in f.metadata.get("env", ()) if environ.get(n, "") != ""), None)
            if env_name:
                values[f.name] = _convert(f.name, f.type, environ[env_name])
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = _convert(name, _field_type(cls, name), value)
        return cls(**values)

    @classmethod
    def from_args(cls, args: Any) -> Settings:
        """Settings from parsed command-line flags: those named like a field are settings; the rest
        (paths, a question, --json) belong to the command."""
        names = {f.name for f in fields(cls)}
        return cls.load({k: v for k, v in vars(args).items() if k in names})

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


def _field_type(cls: type, name: str) -> str:
    for f in fields(cls):
        if f.name == name:
            return str(f.type)
    raise SettingsError(f"unknown setting {name!r}")


def _convert(name: str, type_name: str | type, raw: Any) -> Any:
    type_name = str(type_name)
    if not isinstance(raw, str):
        return Path(raw) if type_name == "Path" else raw
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name == "Path":
            return raw if raw.lower().startswith(("postgresql://", "postgres://")) else Path(raw).expanduser()
    except ValueError:
        raise SettingsError(f"{name}: cannot read {raw!r} as {type_name}") from None
    return raw
