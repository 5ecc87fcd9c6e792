"""Fill a `TrainConfig` from a recipe's `train` section or a hivellm expert manifest, then flags.

Precedence, lowest first: `TrainConfig` defaults, the configuration a resumed run recorded, the
`--config` file, explicit CLI flags. Every value remembers where it came from (the flag, or
file:line:col of the recipe), and range errors name it. A YAML recipe's unknown key is an error
naming file, line and column; a hivellm `manifest.json` (schema 2.0) is someone else's format, so
its keys outside `training.config`'s known list only warn, once each.

The `--vram` memory plan comes later, once the shards' `seq` and the model's shapes are known
(`hive_train.setup`); `Resolved.explicit` names the fields it must leave alone: those given by
flags and, on a resume, every field (the run continues as it was recorded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hive_core import settings
from hive_core.errors import ConfigError
from hive_core.recipe import check_keys, load_recipe
from hive_train.config import TrainConfig

FIELDS = settings.specs(TrainConfig)  # field name -> its Spec (kind, default, flag, range)

# hivellm manifest `training.config` key -> TrainConfig field
MANIFEST_KEYS = {
    "adapter_type": "adapter",
    "rank": "rank",
    "alpha": "alpha",
    "dropout": "dropout",
    "target_modules": "target_modules",
    "epochs": "epochs",
    "learning_rate": "lr",
    "warmup_ratio": "warmup_ratio",
    "lr_scheduler": "lr_scheduler",
    "max_seq_length": "seq",
    "batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
}
DECODING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


def coerce(name: str, value, where: dict | None = None):
    """Check and convert one value for TrainConfig field `name`; ConfigError (located) if it cannot be."""
    return settings.coerce(FIELDS[name], value, where)


def load_yaml_train(path: str | os.PathLike) -> dict:
    """The `train` section of a recipe as TrainConfig values (unknown keys are located errors)."""
    return _load_yaml_train(path)[0]


def _load_yaml_train(path: str | os.PathLike) -> tuple[dict, dict]:
    """(values, sources): sources map each field (and `decoding.KEY`) to its file, line and column."""
    recipe = load_recipe(path)
    check_keys(recipe, "train", FIELDS)
    values, sources = {}, {}
    for key, value in recipe.section("train").items():
        sources[key] = recipe.where("train", key)
        values[key] = coerce(key, value, sources[key])
        if key == "decoding":
            for sub in values[key]:
                where = recipe.where("train", f"decoding.{sub}")
                sources[f"decoding.{sub}"] = where if where["line"] is not None else sources[key]
    return values, sources


def load_hivellm_manifest(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """TrainConfig values from a hivellm expert manifest (schema 2.0) and one warning per ignored key."""
    values, warnings, _ = _load_hivellm_manifest(path)
    return values, warnings


def _load_hivellm_manifest(path: str | os.PathLike) -> tuple[dict, list[str], dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"invalid JSON ({err.msg})", file=str(path), line=err.lineno, col=err.colno
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("training"), dict):
        raise ConfigError("not a hivellm expert manifest (no 'training' object)", file=str(path))
    schema = str(data.get("schema_version", ""))
    if not schema.startswith("2."):
        raise ConfigError(
            f"hivellm manifest schema {schema or '?'} is not supported (need 2.x)", file=str(path)
        )
    training = data["training"]
    config = training.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError("training.config must be an object", file=str(path))
    values: dict = {}
    sources: dict = {}
    warnings: list[str] = []
    for key, value in config.items():
        if key.startswith("_"):  # their convention for comments
            continue
        if key in MANIFEST_KEYS:
            field_name = MANIFEST_KEYS[key]
            if field_name == "adapter" and isinstance(value, str):
                value = value.lower()
            sources[field_name] = {"file": f"{path}: training.config.{key}"}
            values[field_name] = coerce(field_name, value, sources[field_name])
        else:
            warnings.append(f"{path}: training.config.{key} is ignored by hive-train")
    decoding = training.get("decoding")
    if isinstance(decoding, dict):
        kept = {k: v for k, v in decoding.items() if k in DECODING_KEYS}
        if kept:
            values["decoding"] = kept
            sources["decoding"] = {"file": f"{path}: training.decoding"}
            for key in kept:
                sources[f"decoding.{key}"] = {"file": f"{path}: training.decoding.{key}"}
        for key in decoding:
            if not key.startswith("_") and key not in DECODING_KEYS:
                warnings.append(f"{path}: training.decoding.{key} is ignored by hive-train")
    return values, warnings, sources


def load_config_file(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """Values and warnings from `--config`: a YAML recipe, or a hivellm `manifest.json`."""
    values, warnings, _ = _load_config_file(path)
    return values, warnings


def _load_config_file(path: str | os.PathLike) -> tuple[dict, list[str], dict]:
    if str(path).endswith(".json"):
        return _load_hivellm_manifest(path)
    values, sources = _load_yaml_train(path)
    return values, [], sources


@dataclass
class Resolved:
    """A resolved configuration, the notes on how it was read, and the fields set explicitly."""

    cfg: TrainConfig
    notes: list[str]
    # fields given by flags, or recorded by the run being resumed: the --vram plan leaves them alone
    explicit: frozenset[str]


def resolve_config(
    config_path: str | os.PathLike | None,
    flags: dict,
    *,
    recorded: dict | None = None,
    recorded_source: str | None = None,
) -> tuple[TrainConfig, list[str]]:
    """`resolve`'s config and notes."""
    resolved = resolve(config_path, flags, recorded=recorded, recorded_source=recorded_source)
    return resolved.cfg, resolved.notes


def resolve(
    config_path: str | os.PathLike | None,
    flags: dict,
    *,
    recorded: dict | None = None,
    recorded_source: str | None = None,
) -> Resolved:
    """Defaults <- `recorded` <- config file <- explicit flags; validated.

    `flags` holds only options the user actually gave (name -> value, TrainConfig field names).
    `recorded` is the resolved configuration of the run being resumed (read from
    `recorded_source`): it stands in for the defaults, so a resume without `--model` uses the
    model the run was trained with. Range errors name the flag or the file (and line) the value
    came from.
    """
    values: dict = {}
    sources: dict = {}
    notes: list[str] = []
    if recorded:
        where = {"file": recorded_source} if recorded_source else {}
        for key, value in recorded.items():
            if key in FIELDS:
                sources[key] = where
                values[key] = coerce(key, value, where)
    if config_path is not None:
        file_values, notes, file_sources = _load_config_file(config_path)
        if file_values.get("trust_remote_code"):  # a permission only the person at the command line gives
            raise ConfigError(
                "trust_remote_code cannot be set by a config file; pass --trust-remote-code",
                **file_sources.get("trust_remote_code", {"file": str(config_path)}),
            )
        file_values.pop("trust_remote_code", None)  # a recorded `false` reads back as the default
        values.update(file_values)
        sources.update(file_sources)
    for key, value in flags.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown option {key!r}")
        sources[key] = {"file": FIELDS[key].option}
        values[key] = coerce(key, value, sources[key])
        if key == "decoding":
            sources.update({f"decoding.{sub}": sources[key] for sub in values[key]})
    if "trust_remote_code" not in flags:
        values.pop("trust_remote_code", None)  # never carried over from a recorded run either
    cfg = TrainConfig(**values)
    cfg.check(sources)
    # a resumed run's values already are its plan's result, and fields it predates keep their
    # defaults (as `resume.check_resume` reads them): the plan changes nothing on a resume
    explicit = frozenset(FIELDS) if recorded else frozenset(flags)
    return Resolved(cfg, notes, explicit)
