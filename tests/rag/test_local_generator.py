"""The generator's scheduler with real models: concurrent questions decoded in one batch give the same text as
one at a time; a closed stream, the deadline and the context window each end generation early; a full queue
answers Busy at once.

Decoding steps are counted with a forward hook on the real model (each call of the model is one prefill or one
step), so every check counts work done, never time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rag.errors import Busy, TooLarge
from rag.local_generator import LocalGenerator
from tests.threads import WAIT_S, wait_until

PROMPTS = ["What is the capital of France?",
           "Write a short poem about a lighthouse keeper who counts ships in winter.",
           "Explain in two sentences why the sky is blue."]


def messages(question: str, system: str | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] * bool(system) + [{"role": "user", "content": question}]


class ForwardLog:
    """Counts the model's forward calls and the batch size of each. Calls after the first `hold_after` wait
    until `release` is set, so a test can act while the model is known to be at a given step."""

    def __init__(self, model: torch.nn.Module, hold_after: int | None = None) -> None:
        self.sizes: list[int] = []
        self.lengths: list[int] = []  # tokens fed per row: a prompt's length for a whole prefill, 1 for a step
        self.hold_after = hold_after
        self.entered = threading.Event()  # a call is being held
        self.release = threading.Event()
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, _args, kwargs) -> None:
        self.sizes.append(int(kwargs["input_ids"].shape[0]))
        self.lengths.append(int(kwargs["input_ids"].shape[1]))
        if self.hold_after is not None and len(self.sizes) > self.hold_after:
            self.entered.set()
            assert self.release.wait(WAIT_S), "the test never released the model"

    def remove(self) -> None:
        self._handle.remove()


def alone(generator: LocalGenerator, question: str, max_new_tokens: int, system: str | None = None) -> str:
    """One-at-a-time greedy decoding by transformers' own generate(): the reference."""
    ids = torch.tensor([generator.prompt_ids(messages(question, system))])
    out = generator.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                   do_sample=False, pad_token_id=generator.tokenizer.eos_token_id)
    return generator.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def drain(stream: Iterator[str], into: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append("".join(stream)))
    thread.start()
    return thread


@pytest.fixture(scope="module")
def tiny(tiny_generator_dir) -> LocalGenerator:
    generator = LocalGenerator(str(tiny_generator_dir), Path("unused"))  # the default batch size, 8
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def smollm2(smollm2_dir) -> LocalGenerator:
    generator = LocalGenerator(str(smollm2_dir), Path("unused"))
    yield generator
    generator.close()


def decode_concurrently(generator: LocalGenerator, max_new_tokens: int) -> tuple[list[str], list[int]]:
    """The first prompt starts alone; the others arrive while it is in the model and join its batch."""
    log = ForwardLog(generator.model, hold_after=0)
    try:
        results: list[list[str]] = [[] for _ in PROMPTS]
        threads = [drain(generator.stream(messages(PROMPTS[0]), max_new_tokens), results[0])]
        assert log.entered.wait(WAIT_S)
        threads += [drain(generator.stream(messages(q), max_new_tokens), out)
                    for q, out in zip(PROMPTS[1:], results[1:])]
        wait_until(lambda: generator.waiting == len(PROMPTS) - 1)
        log.release.set()
        for thread in threads:
            thread.join()
    finally:
        log.remove()
    return [out[0] for out in results], log.sizes


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_concurrent_questions_share_a_batch_and_match_one_at_a_time(which, request):
    generator = request.getfixturevalue(which)
    texts, sizes = decode_concurrently(generator, max_new_tokens=24)
    assert sizes[0] == 1 and max(sizes) == len(PROMPTS)  # alone first, then all three in one batch
    assert texts == [alone(generator, q, 24) for q in PROMPTS]
    assert all(texts)


def test_a_shared_prompt_start_is_prefilled_once_and_answers_do_not_change(smollm2_dir):
    """Every question's prompt starts with the same template and system line: later questions reuse its cached
    keys and values, prefill only their own tokens, and still decode exactly what a whole prefill gives."""
    generator = LocalGenerator(str(smollm2_dir), Path("unused"))
    system = "You answer questions about lighthouses in one short sentence, using only what you are told."
    log = ForwardLog(generator.model)
    try:
        texts = ["".join(generator.stream(messages(q, system), 16)) for q in PROMPTS]
    finally:
        log.remove()
        generator.close()
    prompts = [len(generator.prompt_ids(messages(q, system))) for q in PROMPTS]
    prefills = [n for n in log.lengths if n > 1]
    assert prefills[0] == prompts[0]  # nothing cached yet: the first prompt is prefilled whole
    shared = len(generator.prompt_ids(messages("", system))) - 8  # the template's user turn start and after differ
    assert all(fed < whole - shared for fed, whole in zip(prefills[1:], prompts[1:])), (prefills, prompts, shared)
    assert texts == [alone(generator, q, 16, system) for q in PROMPTS]


def test_closing_the_stream_stops_generation_at_the_next_step(tiny):
    log = ForwardLog(tiny.model, hold_after=3)  # the prefill and two steps (three tokens), then the model waits
    try:
        stream = tiny.stream(messages(PROMPTS[1]), max_new_tokens=200)
        pieces = [next(stream), next(stream)]
        assert log.entered.wait(WAIT_S)  # the fourth call is under way
        stream.close()
        log.release.set()
        # the next question gets the model once the closed one is gone
        assert "".join(tiny.stream(messages(PROMPTS[0]), max_new_tokens=1)) is not None
    finally:
        log.remove()
    assert all(pieces)
    # 3 calls, the one under way at close, then the next question's prefill: not the 200 tokens asked for
    assert len(log.sizes) <= 5, len(log.sizes)


def test_the_deadline_ends_generation(tiny_generator_dir):
    generator = LocalGenerator(str(tiny_generator_dir), Path("unused"), timeout_s=1e-9)  # past by the first token
    log = ForwardLog(generator.model)
    try:
        text = "".join(generator.stream(messages(PROMPTS[1]), max_new_tokens=200))
    finally:
        log.remove()
        generator.close()
    assert log.sizes == [1]  # the prefill, which made the one token, and no decoding step
    assert len(generator.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 2


def test_past_the_batch_and_the_waiting_line_a_question_gets_busy_at_once(tiny_generator_dir):
    generator = LocalGenerator(str(tiny_generator_dir), Path("unused"), batch_size=1, max_waiting=1)
    log = ForwardLog(generator.model, hold_after=0)
    try:
        results: list[str] = []
        threads = [drain(generator.stream(messages(PROMPTS[0]), 8), results)]
        assert log.entered.wait(WAIT_S)  # the first is in the model, holding the one row
        threads.append(drain(generator.stream(messages(PROMPTS[1]), 8), results))
        wait_until(lambda: generator.waiting == 1)
        with pytest.raises(Busy, match="busy answering other questions"):
            next(generator.stream(messages(PROMPTS[2]), 8))
        log.release.set()
        for thread in threads:
            thread.join()
    finally:
        log.remove()
        generator.close()
    assert len(results) == 2 and all(results)  # the two admitted ones still get their answers


@pytest.fixture(scope="module")
def short_context_dir(tiny_generator_dir, tmp_path_factory) -> Path:
    """The tiny Llama with a 96-token context window."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm-96")
    config = LlamaConfig.from_pretrained(tiny_generator_dir)
    config.max_position_embeddings = 96
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_generator_dir).save_pretrained(folder)
    return folder


def test_prompt_and_answer_never_exceed_the_context_window(short_context_dir):
    generator = LocalGenerator(str(short_context_dir), Path("unused"))
    log = ForwardLog(generator.model)
    try:
        prompt = len(generator.prompt_ids(messages(PROMPTS[0])))
        "".join(generator.stream(messages(PROMPTS[0]), max_new_tokens=200))
        with pytest.raises(TooLarge, match="Ask a shorter question"):
            next(generator.stream(messages("Why? " * 200), max_new_tokens=10))
    finally:
        log.remove()
        generator.close()
    assert generator.context_window == 96
    # one token from the prefill, one per step after it: the answer stops where the window ends
    assert prompt + len(log.sizes) == generator.context_window
