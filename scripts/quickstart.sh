#!/usr/bin/env bash
# The whole pipeline on the bundled fixtures: normalize -> pack -> train a few steps on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-out/quickstart}
mkdir -p "$out"
set -x
hive-data normalize fixtures/ddl/multi_dialect_mysql.sql --read auto --dialect postgres
