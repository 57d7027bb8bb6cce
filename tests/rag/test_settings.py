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
