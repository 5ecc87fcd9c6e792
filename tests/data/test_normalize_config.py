"""`NormalizeConfig`: options checked by `check()`, and a caller's config never changed by a run."""

from __future__ import annotations

import copy

import pytest

from hive_core.errors import ConfigError
from hive_data.normalize_rows import NormalizeConfig, normalize_dataset


def test_a_run_leaves_the_callers_config_as_it_was(fixtures_dir, tmp_path):
    cfg = NormalizeConfig(read="mysql", mapping="question=sql_prompt", num_proc=1, progress=False)
    before = copy.deepcopy(cfg)
    summary = normalize_dataset(
        fixtures_dir / "datasets" / "gretel.jsonl", tmp_path / "out.jsonl", cfg, strict=False
    )
    assert summary.rows_out > 0
    assert cfg == before  # the mapping string was parsed into the run's own copy


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verify": "run"}, "--verify must be one of parse, explain"),
        ({"verify": "explain", "dialect": "mysql"}, "needs --dialect postgres"),
        ({"fmt": "csv"}, "--format must be one of"),
        ({"read": "nosuch"}, "--read: unknown SQL dialect"),
    ],
)
def test_check_names_the_bad_option(options, message):
    with pytest.raises(ConfigError, match=message):
        NormalizeConfig(**options).check()
    NormalizeConfig().check()  # the defaults are valid
