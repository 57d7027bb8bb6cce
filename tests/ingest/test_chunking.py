from ingest.chunking import ChunkBudget, chunk_blocks, split_sentences
from ingest.parsed import TextBlock


def word_counter(texts):
    return [len(t.split()) for t in texts]


def test_sentences_split_at_terminal_punctuation_and_blank_lines():
    text = 'First one. Second one? "Third," she said! Fourth\n\nFifth without stop'
    assert split_sentences(text) == ["First one.", "Second one?", '"Third," she said!', "Fourth", "Fifth without stop"]


def test_chunks_respect_budget_break_at_sentences_and_overlap():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(20)]  # 7 words each
    chunks = list(chunk_blocks([TextBlock(3, " ".join(sentences), "Intro")], word_counter, ChunkBudget(30, 10)))
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk.text.split()) <= 30
        assert chunk.text.endswith(".")  # whole sentences only
        assert chunk.page == 3 and chunk.heading == "Intro"
    # consecutive chunks share their boundary sentence (overlap of one 7-word sentence fits in 10)
    for first, second in zip(chunks, chunks[1:]):
        last_sentence = "Sentence" + first.text.rsplit("Sentence", 1)[1]
        assert second.text.startswith(last_sentence)
    covered = " ".join(c.text for c in chunks)
    assert all(s in covered for s in sentences)


def test_chunks_never_span_pages_or_headings():
    blocks = [TextBlock(1, "Alpha one. Alpha two.", "A"), TextBlock(1, "Beta one.", "B"),
              TextBlock(2, "Beta two.", "B")]
    chunks = list(chunk_blocks(blocks, word_counter, ChunkBudget(100, 10)))
    assert [(c.page, c.heading, c.text) for c in chunks] == [
        (1, "A", "Alpha one. Alpha two."), (1, "B", "Beta one."), (2, "B", "Beta two.")]


def test_overlong_sentence_is_cut_by_words_within_budget():
    long_sentence = " ".join(f"w{i}" for i in range(95))
    chunks = list(chunk_blocks([TextBlock(1, long_sentence)], word_counter, ChunkBudget(40, 5)))
    assert [len(c.text.split()) for c in chunks] == [40, 40, 15]
    assert " ".join(c.text for c in chunks) == long_sentence


def test_real_tokenizer_budget(text_embedder):
    """With MiniLM's own tokenizer, no chunk exceeds what the model reads."""
    text = " ".join(f"Antidisestablishmentarianism paragraph {i} mentions photosynthesis." for i in range(200))

    def count(texts):
        return [len(ids) for ids in text_embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    chunks = list(chunk_blocks([TextBlock(1, text)], count, ChunkBudget(text_embedder.max_tokens, 40)))
    assert len(chunks) > 5
    assert max(count([c.text for c in chunks])) <= text_embedder.max_tokens
