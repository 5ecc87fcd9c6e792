#!/usr/bin/env bash
# Install (into .venv) and run everything CI checks: ruff lint, ruff format, the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
