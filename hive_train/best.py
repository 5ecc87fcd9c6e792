"""`RUN/best/`: the adapter of the best evaluation so far, by the run's `select_by` metric.

    runs/NAME/best/
        adapter_config.json, adapter_model.safetensors   the adapter (PEFT format, as adapter/)
        best.json                                         {"step", "metric", "value", "scores"}

After each evaluation the loop offers the step's metrics; when the selected one improved (`ex`:
higher, `val_loss`: lower; a tie keeps the earlier step) rank 0 writes the adapter and best.json
into a staging directory and swaps it in (`hive_core.atomic.commit_dir`), so best/ is always one
complete adapter and the record of its step. A resumed run continues from the recorded best when
it was selected the same way (same metric; for `ex`, the same data and rows).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from hive_core.atomic import commit_dir, new_staging_dir, remove_stale
from hive_train.model import save_adapter

BEST = "best"
RECORD = "best.json"
# metric -> (its key in a metrics.jsonl record, whether higher is better)
METRICS = {"ex": ("eval_ex", True), "val_loss": ("val_loss", False)}


def read_best(run_dir: str | Path) -> dict | None:
    """best/best.json of a run directory, or None when there is none or it cannot be read."""
    try:
        record = json.loads((Path(run_dir) / BEST / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class BestAdapter:
    """Keeps `out/best/` (rank 0). `selection` names the metric ("ex" or "val_loss"); `scope` is
    what the metric's values are comparable under (for ex: the eval data and rows), recorded in
    best.json and checked when `resume` adopts an earlier best."""

    def __init__(self, out: Path, selection: str, scope: dict | None = None, resume: bool = False):
        self.out, self.selection, self.scope = out, selection, dict(scope or {})
        self.key, self.higher = METRICS[selection]
        self.record: dict | None = None
        remove_stale(out / BEST)  # what a save interrupted by a crash left (a swap is put back first)
        if resume:
            earlier = read_best(out)
            if earlier and earlier.get("metric") == selection and earlier.get("scope", {}) == self.scope:
                self.record = earlier

    def offer(self, step: int, metrics: dict, model) -> bool:
        """Save `model`'s adapter as best/ when `metrics[self.key]` beats the best so far; return
        whether it did. A missing or non-finite value never wins."""
        value = metrics.get(self.key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not self._better(value):
            return False
        scores = {k: v for k, v in metrics.items() if k == "val_loss" or k.startswith("eval_")}
        record = {
            "step": step, "metric": self.selection, "value": value, "scope": self.scope, "scores": scores,
        }  # fmt: skip
        target = self.out / BEST
        staging = new_staging_dir(target)
        try:
            save_adapter(model, staging)
            (staging / RECORD).write_text(
                json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            commit_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.record = record
        return True

    def _better(self, value: float) -> bool:
        if self.record is None:
            return True
        best = self.record["value"]
        return value > best if self.higher else value < best
