"""Recipes: one YAML file per expert kind with `normalize`, `pack`, `train` and `eval` sections.

Each command reads its own section (`--config`); CLI flags override what the recipe says. The
file is parsed with PyYAML's safe loader only (no Python objects), and every key remembers its
line and column, so an unknown key is reported as `file:line:col: unknown key 'x' in section 'y'`.
YAML aliases are limited (`MAX_ALIASES` in all, and never to a mapping or list), so a few hundred
bytes of nested aliases (a "billion laughs") cannot expand into gigabytes later on.

    recipe = load_recipe("pipelines/sql-postgres.yaml")
    section = recipe.section("pack")                      # dict (empty when the section is absent)
    check_keys(recipe, "pack", {"seq", "loss", "think"})  # ConfigError at the first unknown key
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hive_core.errors import ConfigError

SECTIONS = ("normalize", "pack", "train", "eval")
# Top-level keys read by no command: a description, and what hive-train records in a run's config.yaml.
METADATA = ("description", "shards", "versions", "world_size", "base_model")
# Aliases a recipe may use; an alias to a mapping or list is refused outright.
MAX_ALIASES = 64


class _AliasRefused(yaml.MarkedYAMLError):
    """An alias the recipe loader does not expand."""


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with aliases limited: scalars only, at most `MAX_ALIASES` of them."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_count = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            self.alias_count += 1
            if isinstance(target, yaml.CollectionNode):
                kind = "mapping" if isinstance(target, yaml.MappingNode) else "list"
                raise _AliasRefused(
                    problem=f"alias *{event.anchor} refers to a {kind}; aliases to mappings or lists "
                    "are refused (they can expand without bound): write the values out",
                    problem_mark=event.start_mark,
                )
            if self.alias_count > MAX_ALIASES:
                raise _AliasRefused(
                    problem=f"more than {MAX_ALIASES} YAML aliases; write the values out",
                    problem_mark=event.start_mark,
                )
        return super().compose_node(parent, index)


@dataclass
class Recipe:
    path: Path
    sections: dict[str, dict] = field(default_factory=dict)
    # (section, key) -> (line, col), 1-based, for error messages
    marks: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    description: str | None = None

    def section(self, name: str) -> dict:
        """The named section as a plain dict (a copy; empty when the recipe has none)."""
        if name not in SECTIONS:
            raise ValueError(f"unknown recipe section {name!r}")
        return dict(self.sections.get(name) or {})

    def where(self, section: str, key: str | None = None) -> dict:
        """Location keywords (`file`, `line`, `col`) for a key, for `HiveError` constructors."""
        line, col = self.marks.get((section, key or ""), (None, None))
        return {"file": str(self.path), "line": line, "col": col}


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Parse a recipe file. Raises `ConfigError` (with file, line, column) for bad YAML, a
    top-level value that is not a mapping, an unknown section, or a section that is not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("recipe file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read recipe ({err})", file=str(path)) from None
    loader = _RecipeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        reason = problem if isinstance(err, _AliasRefused) else f"invalid YAML: {problem}"
        raise ConfigError(reason, file=str(path), line=line, col=col) from None
    finally:
        loader.dispose()
    recipe = Recipe(path=path)
    if root is None:
        return recipe
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        line, col = _mark(root)
        raise ConfigError("a recipe must be a mapping of sections", file=str(path), line=line, col=col)
    for key_node, value_node in root.value:
        name = key_node.value
        line, col = _mark(key_node)
        if name in METADATA:
            if name == "description":
                recipe.description = data.get(name)
            continue
        if name not in SECTIONS:
            raise ConfigError(
                f"unknown section {name!r} (expected one of: {', '.join(SECTIONS)})",
                file=str(path),
                line=line,
                col=col,
            )
        recipe.marks[(name, "")] = (line, col)
        value = data.get(name)
        if value is None:
            recipe.sections[name] = {}
            continue
        if not isinstance(value_node, yaml.MappingNode) or not isinstance(value, dict):
            vl, vc = _mark(value_node)
            raise ConfigError(f"section {name!r} must be a mapping", file=str(path), line=vl, col=vc)
        _record_marks(recipe.marks, name, "", value_node)
        recipe.sections[name] = {str(k): v for k, v in value.items()}
    return recipe


def _record_marks(marks: dict, section: str, prefix: str, node: yaml.MappingNode) -> None:
    """Locations of a section's keys, nested ones as dotted paths (`decoding.top_p`)."""
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        marks[(section, key)] = _mark(key_node)
        if isinstance(value_node, yaml.MappingNode):
            _record_marks(marks, section, f"{key}.", value_node)


def check_keys(recipe: Recipe, section: str, allowed: Iterable[str]) -> None:
    """Raise `ConfigError` at the first key of `section` that is not in `allowed`."""
    allowed = set(allowed)
    for key in recipe.sections.get(section) or {}:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in section {section!r} (known: {', '.join(sorted(allowed))})",
                **recipe.where(section, key),
            )
