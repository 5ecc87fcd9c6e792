#!/usr/bin/env bash
# The whole pipeline on the bundled fixtures, on CPU: normalize -> pack -> train -> evaluate.
# Installs into .venv first (scripts/setup.sh). Output goes to out/quickstart/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-out/quickstart}
mkdir -p "$out"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. canonical schema from a MySQL dump (dialect detected)"
hive-data normalize fixtures/ddl/shop_mysql.sql --dialect postgres

step "2. a text-to-SQL dataset: schemas canonicalized, answers transpiled and EXPLAINed in PostgreSQL"
hive-data normalize fixtures/datasets/demo_sql.jsonl --read mysql --dialect postgres --verify explain \
  -o "$out/clean.jsonl"

step "3. rendered with the chat template, loss on answers only, packed into Arrow shards"
hive-data pack "$out/clean.jsonl" -o "$out/shards" --config pipelines/sql-postgres.yaml \
  --tokenizer fixtures/tokenizer --seq 1024 --force
hive-data inspect "$out/shards"

step "4. QLoRA (NF4) + DoRA training of the tiny fixture model on CPU"
hive-train "$out/shards" -o "$out/run" --config pipelines/sql-postgres.yaml \
  --model fixtures/tiny-qwen3 --tokenizer fixtures/tokenizer \
  --batch-size 4 --grad-accum 1 --max-steps 40 --lr 3e-3 --warmup-ratio 0.1 --eval-every 10 --overwrite

step "5. the trained expert answers the questions; answers run on databases synthesized from each schema"
hive-eval "$out/run" "$out/clean.jsonl" --device cpu --max-new-tokens 48 --no-progress

step "done"
echo "adapter:     $out/run/adapter"
echo "loss curve:  $out/run/loss.png"
echo "report:      $out/run/report.md"
echo "evaluation:  $out/run/eval/predictions.jsonl, $out/run/eval/summary.json"
