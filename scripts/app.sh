#!/usr/bin/env bash
# Start the browser app on the default models on a fresh machine: set up .venv, then serve on 127.0.0.1:7860.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
