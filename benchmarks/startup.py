"""hive-train start-up: from the command to the end of its first optimizer step (model on disk).

Runs `hive-train SHARDS -o RUN --max-steps 1 ...` several times in fresh processes and prints, per
run, the total and where it went: before `train()` (interpreter start, `import torch`, hive's own
modules) and the phases `train()` records (shards opened, tokenizer checked, run directory
written, model loaded, first step done). The first run of a fresh machine is the cold one: its
page cache is empty and nothing is compiled yet (Python bytecode, Triton kernels).

It also prints what decides import time on the machine (whether the packages carry compiled
bytecode and whether Python may write it) and an import-time profile of the modules hive-train
loads (`python -X importtime`), the largest first.

Usage (from the repo root), on the device machine with the data of `make_train_data.py`:
    python3 benchmarks/startup.py --runs 3 --json $OUT/startup.json
On a CPU machine, with the fixtures:
    python benchmarks/startup.py --shards SHARDS --model fixtures/tiny-qwen3 \\
        --tokenizer fixtures/tokenizer --extra "--device cpu --batch-size 1 --grad-accum 1"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# what hive-train imports on its way to the first step
IMPORTS = (
    "import hive_train.cli, hive_train.loop, peft, bitsandbytes; "
    "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer"
)
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "triton", "liger_kernel", "tokenizers")


def bytecode_facts() -> dict:
    """Whether Python may write bytecode, and whether each package directory holds it already."""
    facts = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX"),
        "packages": {},
    }
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        folder = Path(spec.origin).parent
        facts["packages"][name] = {
            "path": str(folder),
            "has_pycache": (folder / "__pycache__").is_dir(),
            "writable": os.access(folder, os.W_OK),
        }
    return facts


def run_once(shards: str, model: str, tokenizer: str, extra: list[str], env: dict | None = None) -> dict:
    """One hive-train start in a fresh process: total seconds to the end of the first step, and
    the seconds before train() began and at each of its start-up phases."""
    from hive_train.metrics import read_metrics

    out = Path(tempfile.mkdtemp(prefix="hive-startup-"))
    cmd = [
        sys.executable, "-m", "hive_train", shards, "-o", str(out), "--overwrite", "--model", model,
        "--tokenizer", tokenizer, "--max-steps", "1", "--eval-every", "0", "--save-every", "0", "--quiet",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"hive-train failed: {done.stderr[-2000:]}")
    first = next(r for r in read_metrics(out / "metrics.jsonl") if "loss" in r)
    phases = first.get("startup") or {}
    total = first["wall_time"] - started
    return {
        "startup_s": round(total, 2),
        "before_train_s": round(total - phases.get("first_step", 0.0), 2),
        "phases_s": phases,
        "step_s": round(first["step_time"], 2),
    }


def import_profile(top: int = 20) -> dict:
    """`python -X importtime` of hive-train's imports: wall seconds and the costliest modules."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORTS],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            self_us = int(parts[0].split(":")[1])
            rows.append((int(parts[1]), self_us, parts[2].strip()))
    return {
        "wall_s": round(wall, 2),
        "modules": len(rows),
        "cumulative": [(name, round(us / 1e6, 3)) for us, _, name in sorted(rows, reverse=True)[:top]],
        "self": [(name, round(us / 1e6, 3)) for _, us, name in sorted(rows, key=lambda r: -r[1])[:top]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".bench/train", help="output of make_train_data.py")
    parser.add_argument("--shards", help="default: DATA/shards")
    parser.add_argument("--tokenizer", help="default: DATA/tokenizer")
    parser.add_argument("--model", help="default: Qwen3-0.6B's architecture, random weights, in /tmp")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--extra", default="--vram 80", help="more hive-train flags (one string)")
    parser.add_argument(
        "--pycache-prefix",
        help="also time runs with PYTHONPYCACHEPREFIX=DIR (bytecode written there when the "
        "package folders hold none and cannot be written)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    data = Path(args.data)
    shards = args.shards or str(data / "shards")
    if args.tokenizer:
        tokenizer = args.tokenizer
    else:
        from train_throughput import unpack_tokenizer

        tokenizer = str(unpack_tokenizer(data / "tokenizer"))
    if args.model:
        model = args.model
    else:
        from train_throughput import make_model_dir

        model = str(make_model_dir(Path(tempfile.gettempdir()) / "qwen3-0.6b-random"))
    extra = shlex.split(args.extra)

    results: dict = {"bytecode": bytecode_facts(), "runs": []}
    print(json.dumps(results["bytecode"], indent=1), flush=True)
    for i in range(args.runs):  # first, so that run 1 finds the machine cold
        results["runs"].append(run_once(shards, model, tokenizer, extra))
        print(f"run {i + 1}: {json.dumps(results['runs'][-1])}", flush=True)
    results["import_profile"] = import_profile()
    if args.pycache_prefix:
        env = {"PYTHONPYCACHEPREFIX": args.pycache_prefix, "PYTHONDONTWRITEBYTECODE": ""}
        results["pycache_runs"] = [run_once(shards, model, tokenizer, extra, env) for _ in range(2)]
        for run in results["pycache_runs"]:
            print(f"with PYTHONPYCACHEPREFIX: {json.dumps(run)}", flush=True)
    profile = results["import_profile"]
    print(f"\nimports ({profile['modules']} modules) in a fresh process: {profile['wall_s']} s; costliest:")
    for name, seconds in profile["cumulative"]:
        print(f"  {seconds:7.3f} s  {name}")
    print("\n| run | to first step | before train() | " + " | ".join(results["runs"][0]["phases_s"]) + " |")
    print("|---" * (3 + len(results["runs"][0]["phases_s"])) + "|")
    for i, run in enumerate(results["runs"], 1):
        cells = " | ".join(f"{v:.1f}" for v in run["phases_s"].values())
        print(f"| {i} | {run['startup_s']:.1f} s | {run['before_train_s']:.1f} s | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
