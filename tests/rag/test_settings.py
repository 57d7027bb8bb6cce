from pathlib import Path

import pytest

from rag.settings import Settings, SettingsError


def test_flags_win_over_environment_which_wins_over_defaults():
    environ = {"LOUPE_TOP_K": "7", "LOUPE_STORE": "/tmp/from-env", "LOUPE_OCR": "false"}
    settings = Settings.load({"top_k": 3, "store": None}, environ=environ)
    assert settings.top_k == 3  # flag
    assert settings.store == Path("/tmp/from-env")  # environment (flag not given)
    assert settings.ocr is False
    assert settings.answer_mode == "answer-first"  # default


@pytest.mark.parametrize(("env", "value", "message"), [
    ("LOUPE_TOP_K", "many", "top_k"),
    ("LOUPE_ANSWER_MODE", "poetry", "answer_mode"),
    ("LOUPE_OCR", "perhaps", "ocr"),
    ("LOUPE_AUTH", "no-colon", "auth"),
    ("LOUPE_CHUNK_OVERLAP", "500", "chunk_overlap"),
    ("LOUPE_EMBEDDER", "word2vec", "embedder"),
    ("LOUPE_EMBEDDER", "openai", "openai_base_url"),  # the default is local: a remote one needs its URL
    ("LOUPE_EMBED_DIMS", "-1", "embed_dims"),
])
def test_bad_values_name_the_setting(env, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ={env: value})


def test_unknown_flag_is_an_error():
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load({"colour": "blue"}, environ={})


def test_from_args_takes_only_flags_named_like_settings():
    import argparse

    args = argparse.Namespace(top_k=9, question="why?", json=True, store=None)
    settings = Settings.from_args(args)
    assert settings.top_k == 9 and not hasattr(settings, "question")


def test_embedder_settings_and_the_key_from_either_variable():
    environ = {"LOUPE_EMBEDDER": "openai", "LOUPE_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
               "OPENAI_API_KEY": "sk-general"}
    settings = Settings.load({"openai_model": "nomic-embed-text", "embed_dims": 128}, environ=environ)
    assert (settings.embedder, settings.openai_model, settings.embed_dims) == ("openai", "nomic-embed-text", 128)
    assert settings.openai_api_key == "sk-general" and "sk-general" not in repr(settings)
    loupe_first = Settings.load(environ={**environ, "LOUPE_OPENAI_API_KEY": "sk-loupe"})
    assert loupe_first.openai_api_key == "sk-loupe"  # Loupe's own variable wins over the general one
    assert Settings.load(environ={}).embedder == "sbert"
