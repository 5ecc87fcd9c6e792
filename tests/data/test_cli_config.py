"""`--config RECIPE` on hive-data commands: the recipe section sets defaults, flags win, bad keys are located."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hive_data.cli import main

TOKENIZER = "fixtures/tokenizer"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_pack_reads_its_recipe_section_and_flags_override(tmp_path):
    recipe = write(tmp_path / "r.yaml", "pack:\n  seq: 128\n  val: 0.0\n  loss: all\n")
    runner = CliRunner()
    out = tmp_path / "a"
    result = runner.invoke(
        main,
        [
            "pack",
            "fixtures/datasets/messages.jsonl",
            "-o",
            str(out),
            "--tokenizer",
            TOKENIZER,
            "--config",
            str(recipe),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seq"] == 128 and manifest["loss"] == "all"
    out = tmp_path / "b"
    result = runner.invoke(
        main,
        ["pack", "fixtures/datasets/messages.jsonl", "-o", str(out), "--tokenizer", TOKENIZER, "--config", str(recipe), "--seq", "256", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["seq"] == 256


def test_normalize_reads_its_recipe_section(tmp_path):
    recipe = write(tmp_path / "r.yaml", "normalize:\n  dialect: sqlite\n")
    result = CliRunner().invoke(main, ["normalize", "fixtures/ddl/users_orders.sql", "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-- Dialect: sqlite")


def test_unknown_recipe_key_is_refused_with_its_location(tmp_path):
    recipe = write(tmp_path / "r.yaml", "pack:\n  seq: 128\n  sequence_length: 5\n")
    result = CliRunner().invoke(main, ["pack", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}:3:3: unknown key 'sequence_length' in section 'pack'" in result.output
    assert "Traceback" not in result.output


def test_shipped_recipes_configure_normalize_and_pack(tmp_path):
    import yaml

    for name in ("sql-postgres", "cypher", "typescript", "json"):
        recipe = f"pipelines/{name}.yaml"
        result = CliRunner().invoke(main, ["normalize", "fixtures/ddl/users_orders.sql", "--config", recipe])
        assert result.exit_code == 0, (name, result.output)
        out = tmp_path / name
        args = ["pack", "fixtures/datasets/messages.jsonl", "-o", str(out), "--config", recipe]
        result = CliRunner().invoke(main, [*args, "--tokenizer", TOKENIZER, "--num-proc", "1"])
        assert result.exit_code == 0, (name, result.output)
        manifest = json.loads((out / "manifest.json").read_text())
        wanted = yaml.safe_load(open(recipe, encoding="utf-8"))["pack"]
        for key in ("seq", "loss", "think"):  # the recipe's pack section reached the shards
            if key in wanted:
                assert manifest[key] == wanted[key], (name, key)


def test_normalize_ddl_is_a_top_level_library_call():
    import hive_data

    result = hive_data.normalize_ddl(
        "CREATE TABLE t (id INT(11) PRIMARY KEY);", read="mysql", dialect="postgres"
    )
    assert result.text.startswith("-- Dialect: postgres") and "id INTEGER PRIMARY KEY" in result.text
