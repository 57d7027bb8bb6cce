#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up .venv (with test tools and Chromium), lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
