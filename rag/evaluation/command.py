"""`python -m rag eval`: placeholder wiring, filled in by the evaluation work (issue 4)."""

from __future__ import annotations

import argparse
import sys

from rag.settings import Settings


def add_eval_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("eval", parents=[common], help="evaluate retrieval and answers on a BEIR folder")
    parser.add_argument("--beir", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/test.tsv")


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    print("error: eval is not implemented yet", file=sys.stderr)
    return 1
