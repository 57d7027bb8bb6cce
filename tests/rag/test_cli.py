"""`python -m rag` as a user runs it: the real models, JSON out, exit codes. One test starts real processes; the
others run the same `main` in this process (rag_main), which spares a torch import per command."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.app.conftest import free_port
from tests.builders import make_pdf, png_bytes, sample_image
from tests.conftest import cli_env, rag_process

PAGES = [
    ["Installation: unpack the archive and run the setup wizard."],
    ["The pump must be descaled every 90 days with citric acid."],
    ["Warranty claims go to service@example.org within two years."],
]


@pytest.fixture
def env(tmp_path, tiny_clip_dir) -> dict[str, str]:
    return cli_env(LOUPE_STORE=str(tmp_path / "kb"), LOUPE_CLIP_MODEL=f"local-dir:{tiny_clip_dir}")


@pytest.fixture
def cli(rag_main, env) -> Callable[..., subprocess.CompletedProcess]:
    return lambda *args, expect=0: rag_main(env, *args, expect=expect)


def test_ingest_ask_search_list_delete(cli, tmp_path):
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    make_pdf(docs / "manual.pdf", PAGES)
    (docs / "guides" / "espresso.md").write_text("# Espresso\n\nGrind 18 grams of coffee very fine.\n")
    (docs / "guides" / "latte.md").write_text("# Latte\n\nSteam the milk to 60 degrees Celsius.\n")
    (docs / "cat.png").write_bytes(png_bytes(sample_image("chelsea")))

    ingested = json.loads(cli("ingest", str(docs), "--json").stdout)
    assert sorted(f["status"] for f in ingested["files"]) == ["added"] * 4
    assert ingested["totals"]["pages"] == 3 + 1 + 1 + 1

    answer = json.loads(cli("ask", "How often must the pump be descaled?", "--mode", "extractive", "--json").stdout)
    assert "90 days" in answer["answer"]
    assert (answer["sources"][0]["file"], answer["sources"][0]["page"]) == ("manual.pdf", 2)
    assert answer["sources"][0]["score"] > 0.3

    chunks = json.loads(cli("search", "milk temperature", "-k", "2", "--json").stdout)
    assert chunks[0]["file"] == "latte.md" and chunks[0]["heading"] == "Latte"
    images = json.loads(cli("search", "--image", str(docs / "cat.png"), "x", "--json").stdout)
    assert images[0]["file"] == "cat.png" and images[0]["score"] == pytest.approx(1.0, abs=1e-4)

    listed = json.loads(cli("list", "--json").stdout)
    assert {d["name"]: d["pages"] for d in listed} == {"manual.pdf": 3, "espresso.md": 1, "latte.md": 1, "cat.png": 1}
    assert "deleted manual.pdf" in cli("delete", "manual.pdf").stdout
    assert "manual.pdf" not in [d["name"] for d in json.loads(cli("list", "--json").stdout)]


def test_failures_exit_non_zero_with_the_reason_on_stderr(cli, env, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    fine = tmp_path / "fine.txt"
    fine.write_text("Ferrets sleep eighteen hours a day.")
    done = rag_process(env, "ingest", str(broken), str(fine), expect=1)  # the real `python -m rag`: its exit status
    assert "broken.pdf:" in done.stderr and "fine.txt: added" in done.stdout
    done = cli("ask", "anything", "--store", str(tmp_path / "nowhere"), expect=1)
    assert "no knowledge base at" in done.stderr
    done = cli("delete", "no-such-file.pdf", expect=1)
    assert "no document 'no-such-file.pdf'" in done.stderr


def test_one_translator_for_every_command(capsys, caplog, tmp_path):
    """A problem the user can act on is one line and exit 1; a bug is logged with its traceback and exit 70."""
    import argparse
    import logging

    from rag.cli import run_translated
    from rag.errors import NotFound
    from tests.conftest import make_settings

    settings, args = make_settings(tmp_path / "kb"), argparse.Namespace(command="delete")

    def missing(args, settings):
        raise NotFound("no document 'a.pdf' in kb")

    def bug(args, settings):
        raise KeyError("chunk 7")

    assert run_translated(missing, args, settings) == 1
    assert capsys.readouterr().err == "error: no document 'a.pdf' in kb\n"
    with caplog.at_level(logging.ERROR, logger="rag.cli"):
        assert run_translated(bug, args, settings) == 70
    assert "unexpectedly" in capsys.readouterr().err
    logged = [r for r in caplog.records if r.name == "rag.cli"]
    assert logged and logged[0].exc_info is not None and "KeyError" in caplog.text


def test_the_int8_embedder_from_export_to_search_and_a_store_that_refuses_another(cli, tmp_path):
    exported = json.loads(cli("export-onnx", "--json").stdout)
    assert exported["model"] == "all-MiniLM-L6-v2" and "loupe-onnx.json" in os.listdir(exported["folder"])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "espresso.md").write_text("# Espresso\n\nGrind 18 grams of coffee very fine.\n")
    (docs / "latte.md").write_text("# Latte\n\nSteam the milk to 60 degrees Celsius.\n")
    int8 = ("--embedder", "onnx-int8")
    assert json.loads(cli("ingest", str(docs), "--json", *int8).stdout)["totals"]["chunks"] == 2
    hits = json.loads(cli("search", "milk temperature", "-k", "1", "--json", *int8).stdout)
    assert hits[0]["file"] == "latte.md"
    refused = cli("search", "milk temperature", "--json", expect=1)  # the default fp32 model: other vectors
    assert "built with the text model 'all-MiniLM-L6-v2+onnx-int8'" in refused.stderr
    listed = json.loads(cli("list", "--json", *int8).stdout)  # without loading the model
    assert sorted(d["name"] for d in listed) == ["espresso.md", "latte.md"]


def test_every_command_takes_the_embedder_flags():
    from rag.cli import build_parser
    from rag.settings import Settings

    for command in (["ingest", "a.pdf"], ["ask", "why?"], ["search", "x"], ["list"], ["eval", "--intrinsic"]):
        args = build_parser().parse_args([*command, "--embedder", "openai", "--openai-base-url",
                                          "http://127.0.0.1:9/v1", "--openai-model", "m", "--embed-dims", "64"])
        settings = Settings.from_args(args)
        assert (settings.embedder, settings.openai_base_url, settings.openai_model, settings.embed_dims) == (
            "openai", "http://127.0.0.1:9/v1", "m", 64)


def test_a_database_that_cannot_be_reached_is_said_before_any_model_loads(rag_main, env):
    """Regression: `ask` loaded the models (and printed CLIP's status) before finding the server down. No server
    listens on the port: nothing to fake."""
    port = free_port()
    # the default CLIP, whose weights are not here: loading the models would print that image search is off
    done = rag_main({**env, "LOUPE_STORE": f"postgresql://loupe:s3cret@127.0.0.1:{port}/team",
                     "LOUPE_CLIP_MODEL": "ViT-B-32"}, "ask", "Is anyone there?", expect=1)
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # only the error: no CLIP line
    assert done.stderr.startswith("error: ") and f"127.0.0.1:{port}/team" in done.stderr and "s3cret" not in done.stderr
