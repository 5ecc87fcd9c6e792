#!/usr/bin/env bash
# Issue 6's measurements on the GPU device machine, in one call: install the carried wheels (with
# bytecode compiled, as `pip install` does for a user), then the start-up probe and the whole
# throughput benchmark (TRL stock, TRL tuned, hive, the --vram tiers, numerics, start-up, a recipe).
#
# On the CPU machine first (once):
#   ../shared/tools/device-wheels.sh
#   python benchmarks/make_train_data.py --out .bench/train --tokens 1500000
# Then the device call, carrying .whl and .bench:
#   bash benchmarks/device_run.sh probe      start-up probe, hive, numerics, start-up (about 6 minutes)
#   bash benchmarks/device_run.sh compare    hive, graphs vs eager, the tiers, a recipe, TRL tuned and stock
#                                            (about 7 minutes)
# (`all`, the default, runs both: more than one 10-minute call may allow.) Logs and JSON land in $OUT.
set -uo pipefail
out=${OUT:-/tmp/hive-bench}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
mode=${1:-all}
case $mode in
  probe) only=hive,numerics,startup ;;
  compare) only=hive,graphs,tiers,recipe,trl_tuned,trl_stock ;;
  all) only=hive,graphs,tiers,numerics,startup,recipe,trl_tuned,trl_stock ;;
  *) echo "usage: $0 [probe|compare|all]" >&2; exit 2 ;;
esac
if [ "$mode" != compare ]; then  # first, while the machine is cold
  python3 benchmarks/startup.py --runs 2 --pycache-prefix /tmp/pyc --json "$out/startup.json" 2>&1 |
    grep -v -E 'Warning|warn\(' | tee "$out/startup.log"
fi
python3 benchmarks/train_throughput.py --data .bench/train --only "$only" --json "$out/results-$mode.json" 2>&1 |
  grep -v -E 'Warning|warn\(|Loading weights' | tee "$out/throughput-$mode.log"
