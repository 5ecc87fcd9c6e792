"""`hive-train` caches bytecode under the user's cache when Python was told not to write it
(`hive_train.cli.cache_bytecode`): real interpreters, real imports, in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# imports a module this process has not loaded yet, after the cache is set up as `hive-train` does
PROBE = "from hive_train.cli import cache_bytecode; print(cache_bytecode()); import colorsys"


def probe(tmp_path: Path, **env) -> tuple[str, list[Path]]:
    cache = tmp_path / "xdg"
    full = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT), **env}
    full.pop("PYTHONPYCACHEPREFIX", None)
    for name, value in env.items():
        if value is None:
            full.pop(name)
    done = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, check=True)
    return done.stdout.strip(), sorted(cache.rglob("*.pyc"))


def test_no_bytecode_setting_gets_a_cache_under_the_user_cache(tmp_path):
    where, written = probe(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert where == str(tmp_path / "xdg" / "hive" / "pycache")
    assert any(p.name.startswith("colorsys.") for p in written)


def test_opt_out_and_normal_interpreters_are_left_alone(tmp_path):
    assert probe(tmp_path, PYTHONDONTWRITEBYTECODE="1", HIVE_BYTECODE_CACHE="0") == ("None", [])
    assert probe(tmp_path, PYTHONDONTWRITEBYTECODE=None) == ("None", [])
