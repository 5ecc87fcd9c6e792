#!/usr/bin/env bash
# One-GPU check of the data-parallel path (issue 8): the same run as a plain process and under torchrun
# (NCCL process group, one rank), then a torchrun run stopped at step 6 and resumed as a plain process.
# Run on the device machine from the repo root, with the wheels installed and PYTHONPATH set, after
# `python benchmarks/make_train_data.py --out .bench/train` on the CPU machine.
set -euo pipefail
data=${1:-.bench/train}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 - "$data" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from train_throughput import make_model_dir, unpack_tokenizer
make_model_dir(Path("/tmp/qwen3-0.6b-random")); unpack_tokenizer(Path(sys.argv[1]) / "tokenizer")
PY
args=("$data/shards" --model /tmp/qwen3-0.6b-random --tokenizer "$data/tokenizer" --vram 80
      --max-steps 12 --eval-every 6 --save-every 6 --quiet --overwrite)
python3 -m hive_train "${args[@]}" -o /tmp/plain
torchrun --standalone --nproc-per-node 1 -m hive_train "${args[@]}" -o /tmp/ddp1
torchrun --standalone --nproc-per-node 1 -m hive_train "${args[@]}" -o /tmp/split --stop-after 6
python3 -m hive_train "$data/shards" --model /tmp/qwen3-0.6b-random --tokenizer "$data/tokenizer" --vram 80 \
  --max-steps 12 --eval-every 6 --save-every 6 --quiet -o /tmp/split --resume
python3 - <<'PY'
import json
def read(run):
    rows = [json.loads(l) for l in open(f"/tmp/{run}/metrics.jsonl")]
    return {r["step"]: r for r in rows if "loss" in r}
plain, ddp, split = read("plain"), read("ddp1"), read("split")
for step in sorted(plain):
    print(f"step {step:2d}  loss plain {plain[step]['loss']:.5f}  torchrun {ddp[step]['loss']:.5f}  "
          f"torchrun->resumed {split[step]['loss']:.5f}  tok/s plain {plain[step]['tokens_per_s']:,.0f} torchrun {ddp[step]['tokens_per_s']:,.0f}")
worst = max(abs(plain[s]["loss"] - ddp[s]["loss"]) / plain[s]["loss"] for s in plain)
worst_split = max(abs(plain[s]["loss"] - split[s]["loss"]) / plain[s]["loss"] for s in plain)
mean = lambda m: sum(m[s]["tokens_per_s"] for s in m if s > 2) / (len(m) - 2)
print(f"max relative loss difference: torchrun {worst:.2e}, torchrun stopped at 6 then resumed plain {worst_split:.2e}")
print(f"mean tokens/s after 2 steps: plain {mean(plain):,.0f}, torchrun (1 rank, NCCL) {mean(ddp):,.0f}")
import os
print("run directories complete:", all(os.path.isfile(f"/tmp/{r}/adapter/adapter_model.safetensors") for r in ("plain", "ddp1", "split")))
PY
