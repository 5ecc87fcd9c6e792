"""Issue 13, hive-train: every config value range-checked with its source, hostile recipes,
resume and extend, the base model's fingerprint, offline hub ids, the adapter snippet of docs/training.md.

Each test goes through the real `hive-train` command (in-process, `CliRunner`) on the tiny model.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_train.cli import main

SMALL = ["--batch-size", "2", "--grad-accum", "1", "-q"]
BASE = ["--model", str(TINY_MODEL), "--tokenizer", str(TOKENIZER), *SMALL]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=24, val_docs=4)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def one_line_error(result, *fragments) -> str:
    """Exit status 1, exactly one line on stderr, `error: ...` holding every fragment."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- ranges, named by their source -------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--seed", "-1", "seed must be an integer in [0, "),
        ("--weight-decay", "-0.1", "weight_decay must be a number in [0, 1]"),
        ("--max-grad-norm", "nan", "max_grad_norm must be a number"),
        ("--lr", "1e30", "lr must be a number in (0, 1]"),
    ],
)
def test_out_of_range_flags_are_one_line_errors_naming_the_flag(shards, tmp_path, flag, value, fragment):
    out = tmp_path / "run"
    line = one_line_error(run(shards, "-o", out, *BASE, "--max-steps", 1, flag, value), fragment)
    assert line.startswith(f"error: {flag}: "), line
    assert not (out / "adapter").exists()  # nothing was trained


@pytest.mark.parametrize(
    "key_line, fragment",
    [
        ("max_grad_norm: .nan", "max_grad_norm must be a number"),
        ("seed: -3", "seed must be an integer"),
        ("weight_decay: -1.0", "weight_decay must be a number"),
        ("lr: 1.0e+30", "lr must be a number in (0, 1]"),
        ("warmup_ratio: 1.5", "warmup_ratio must be a number in [0, 1)"),
    ],
)
def test_out_of_range_recipe_values_name_the_recipe_line(shards, tmp_path, key_line, fragment):
    recipe = write(tmp_path / "recipe.yaml", f"pack:\n  seq: 96\ntrain:\n  rank: 4\n  {key_line}\n")
    line = one_line_error(
        run(shards, "-o", tmp_path / "run", "--config", recipe, *BASE, "--max-steps", 1), fragment
    )
    assert line.startswith(f"error: {recipe}:5:3: "), line  # the key's line and column, not <input>


def test_decoding_settings_are_checked_before_they_are_written(shards, tmp_path):
    recipe = write(tmp_path / "recipe.yaml", "train:\n  decoding: {temperature: 0.3, top_p: 7}\n")
    out = tmp_path / "run"
    line = one_line_error(
        run(shards, "-o", out, "--config", recipe, *BASE, "--max-steps", 1), "decoding.top_p", "(0, 1]"
    )
    assert line.startswith(f"error: {recipe}:2:32: "), line
    assert not (out / "generation_config.json").exists()
    write(recipe, "train:\n  decoding:\n    temperature: 0.3\n    beam_width: 4\n")
    line = one_line_error(
        run(shards, "-o", out, "--config", recipe, *BASE, "--max-steps", 1),
        "decoding.beam_width is not a decoding setting",
    )
    assert line.startswith(f"error: {recipe}:4:5: "), line


# ---- hostile YAML ----------------------------------------------------------------------------------

# The shape of the 541-byte "billion laughs": each level a list of nine aliases to the level below.
# (Four levels here, so a build without the limit does not take the machine down.)
LAUGHS = """train:
  decoding:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""


def test_yaml_aliases_are_limited(tmp_path):
    recipe = write(tmp_path / "laughs.yaml", LAUGHS)
    line = one_line_error(
        run(tmp_path / "no-shards", "-o", tmp_path / "run", "--config", recipe, *BASE), "alias *a"
    )
    assert line.startswith(f"error: {recipe}:4:12: "), line
    # scalar aliases are fine in moderation, not by the hundred
    many = (
        "train:\n  model: &m "
        + str(TINY_MODEL)
        + "\n  tokenizer: *m\n"
        + "description: ["
        + ", ".join(["*m"] * 100)
        + "]\n"
    )
    recipe = write(tmp_path / "many.yaml", many)
    line = one_line_error(
        run(tmp_path / "no-shards", "-o", tmp_path / "run", "--config", recipe, *BASE), "YAML aliases"
    )
    assert line.startswith(f"error: {recipe}:4:"), line
    from hive_train.config_sources import resolve_config

    few = write(tmp_path / "few.yaml", "train:\n  model: &m some/model\n  tokenizer: *m\n")
    assert resolve_config(few, {})[0].tokenizer == "some/model"


# ---- a run's own config.yaml, resume, extend ----------------------------------------------------


def test_a_runs_config_yaml_is_accepted_back_by_config(shards, tmp_path):
    first = tmp_path / "first"
    ok(run(shards, "-o", first, *BASE, "--max-steps", 1, "--rank", 4))
    second = tmp_path / "second"
    ok(run(shards, "-o", second, "--config", first / "config.yaml", "-q"))
    a = yaml.safe_load((first / "config.yaml").read_text())
    b = yaml.safe_load((second / "config.yaml").read_text())
    assert a["train"] == b["train"] and b["train"]["rank"] == 4 and "world_size" in a


def test_resume_takes_the_model_and_tokenizer_the_run_recorded(tmp_path):
    # shards whose manifest names a tokenizer that no longer resolves: the run needs --tokenizer
    shards = write_shards(tmp_path / "shards", seq=96, train_docs=16, val_docs=0)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["tokenizer"]["name_or_path"] = "./moved-away/tokenizer"
    (shards / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "run"
    ok(run(shards, "-o", out, *BASE, "--max-steps", 3, "--stop-after", 1))
    result = ok(run(shards, "-o", out, "--resume", "-q"))  # neither --model nor --tokenizer
    assert result.stderr == ""
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["model"] == str(TINY_MODEL)


def lr_at(step: int, total: int, lr: float) -> float:
    """Cosine without warmup (the rule the README states for an extended run: the new total's)."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / total))


def test_a_finished_run_is_extended_by_resume_with_more_steps(shards, tmp_path):
    constant = [*BASE, "--lr-scheduler", "constant", "--warmup-ratio", 0, "--lr", "1e-3"]
    straight = tmp_path / "straight"
    ok(run(shards, "-o", straight, *constant, "--max-steps", 4))
    extended = tmp_path / "extended"
    ok(run(shards, "-o", extended, *constant, "--max-steps", 2))
    assert (extended / "adapter").is_dir()  # finished
    ok(run(shards, "-o", extended, *constant, "--resume", "--max-steps", 4))  # restating flags is fine
    # continued from the finished run's adapter, optimizer state and data order: with a schedule
    # that does not depend on the total, 2 + 2 steps are bit for bit the 4 straight ones
    assert [r["loss"] for r in metrics(extended)] == [r["loss"] for r in metrics(straight)]
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(extended / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a cosine schedule is recomputed for the new total from the resume point on
    cosine = tmp_path / "cosine"
    cosine_args = [*BASE, "--warmup-ratio", 0, "--lr", "1e-3"]
    ok(run(shards, "-o", cosine, *cosine_args, "--max-steps", 2))
    ok(run(shards, "-o", cosine, *cosine_args, "--resume", "--max-steps", 4))
    lrs = [r["lr"] for r in metrics(cosine)]
    assert lrs[:2] == pytest.approx([lr_at(0, 2, 1e-3), lr_at(1, 2, 1e-3)])  # as they were
    assert lrs[2:] == pytest.approx([lr_at(2, 4, 1e-3), lr_at(3, 4, 1e-3)])  # the new total's
    # shortening is refused in one line
    one_line_error(run(shards, "-o", cosine, "--resume", "--max-steps", 3, "-q"), "already took 4 steps")


# ---- damaged checkpoints, changed base weights --------------------------------------------------


def test_resume_from_a_truncated_checkpoint_is_a_one_line_error(shards, tmp_path):
    out = tmp_path / "run"
    ok(run(shards, "-o", out, *BASE, "--max-steps", 3, "--stop-after", 1))
    damaged = out / "checkpoints" / "step-00000001" / "trainable.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-200])
    one_line_error(
        run(shards, "-o", out, *BASE, "--max-steps", 3, "--resume"), str(damaged), "delete its directory"
    )
    # a checkpoint written before sizes were recorded: the file itself cannot be read
    state_file = damaged.parent / "state.json"
    state = json.loads(state_file.read_text())
    del state["sizes"]
    state_file.write_text(json.dumps(state))
    one_line_error(
        run(shards, "-o", out, *BASE, "--max-steps", 3, "--resume"), str(damaged), "cannot be read"
    )


def test_resume_refuses_base_weights_changed_at_the_same_path(shards, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY_MODEL, model)
    out = tmp_path / "run"
    ok(
        run(
            shards,
            "-o",
            out,
            "--model",
            model,
            "--tokenizer",
            TOKENIZER,
            *SMALL,
            "--max-steps",
            3,
            "--stop-after",
            1,
        )
    )
    weights = load_file(model / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = weights[name] * 1.01  # same names, shapes and file size; other values
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    resume = ["--model", model, "--tokenizer", TOKENIZER, *SMALL, "--max-steps", 3, "--resume"]
    one_line_error(run(shards, "-o", out, *resume), "base model's weights changed", "step-00000001")
    assert not (out / "adapter").exists()
    recorded = yaml.safe_load((out / "config.yaml").read_text())["base_model"]
    assert re.fullmatch(r"[0-9a-f]{64}", recorded["sha256"]) and recorded["path"] == str(model.resolve())


# ---- offline hub ids ------------------------------------------------------------------------------


def hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("offline_env", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_a_hub_id_that_is_not_local_fails_fast_offline(shards, tmp_path, monkeypatch, offline_env):
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif hub_reachable():
        pytest.skip("the hub is reachable from here")
    line = one_line_error(
        run(shards, "-o", tmp_path / "a", *BASE, "--model", "nobody-here/absent-model"),
        "nobody-here/absent-model",
        "hub cannot be reached",
        "hf download nobody-here/absent-model",
    )
    assert "model" in line
    one_line_error(
        run(shards, "-o", tmp_path / "b", *BASE, "--tokenizer", "nobody-here/absent-tokenizer"),
        "nobody-here/absent-tokenizer",
        "cannot load tokenizer",
        "hub cannot be reached",
    )


# ---- the training docs' adapter-loading snippet ---------------------------------------------------


def readme_block(containing: str) -> str:
    """The ```python block of docs/training.md (of the hive under test) holding `containing`."""
    import hive_train

    readme = Path(hive_train.__file__).resolve().parent.parent / "docs" / "training.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"expected one README block with {containing!r}"
    return found[0]


def test_readme_peft_snippet_reproduces_the_trainers_logits(shards, tmp_path):
    from hive_train.config import TrainConfig
    from hive_train.loop import train

    cfg = TrainConfig(
        model=str(TINY_MODEL), tokenizer=str(TOKENIZER), rank=4, alpha=8, batch_size=2, grad_accum=1,
        lr=5e-3, max_steps=3, eval_every=0, save_every=0,
    )  # fmt: skip
    result = train(cfg, shards, tmp_path / "run", progress=False)
    ids = torch.randint(10, 4000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids).logits

    code = readme_block("PeftModel.from_pretrained")
    assert '"Qwen/Qwen3-0.6B"' in code and '"runs/sql/adapter"' in code
    code = code.replace('"Qwen/Qwen3-0.6B"', repr(str(TINY_MODEL)))
    code = code.replace('"runs/sql/adapter"', repr(str(tmp_path / "run" / "adapter")))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"].eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        with model.disable_adapter():
            assert (model(input_ids=ids).logits - expected).abs().max() > 1e-3  # the adapter matters
