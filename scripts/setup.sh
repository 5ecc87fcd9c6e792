#!/usr/bin/env bash
# Create .venv (if missing) and install hive into it with its test tools.
# CPU machines get PyTorch's CPU build first, so pip never pulls a multi-GB CUDA build by accident;
# set HIVE_TORCH to choose another torch requirement (for example HIVE_TORCH=torch on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${HIVE_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
