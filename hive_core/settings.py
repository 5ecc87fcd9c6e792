"""Settings dataclasses whose fields describe themselves: one place for a default, its help text,
its choices or range, and its CLI flag.

A config is a plain dataclass. Each field made with `setting(...)` carries its description in the
field's metadata; from it this module generates the click options (`click_options`), converts
values read from YAML or flags to the field's kind (`coerce`) and checks them (`check_value`). The
kind (bool, int, float, str, list, dict) comes from the resolved type annotation, `X | None`
meaning None is a valid value. Nothing is written twice: the help shows the dataclass default.

Usage (`hive_train/config.py` and `hive_train/cli.py` are the full example)::

    @dataclass
    class PackConfig:
        seq: int = setting(2048, help="Tokens per packed row.", low=1, high=1 << 20)
        loss: str = setting("assistant", help="Tokens with loss.", choices=("assistant", "all"))
        tokenizer: str | None = setting(None, help="Tokenizer.", default_text="the model's")

    @click.command()
    @click_options(PackConfig)  # --seq INTEGER  Tokens per packed row. [default: 2048], ...
    def pack(**flags):  # a flag left out arrives as None
        table = specs(PackConfig)  # name -> Spec (kind, default, option, bounds)
        given = {k: coerce(table[k], v, {"file": table[k].option}) for k, v in flags.items() if v is not None}
        check_all(cfg := PackConfig(**given), {k: {"file": table[k].option} for k in given})

`coerce` also takes YAML values (`"a,b"` for a list, `16` for an `int_as_str` setting) and
`check_all` raises `hive_core.errors.ConfigError("seq must be an integer in [1, 1048576] (got 0)")`
located at `sources[name]` (HiveError location keywords: the flag, or a recipe's file, line and
column). A config with checks of its own calls `check_value` per field instead, as
`TrainConfig.validate` does; `Spec.option` is a field's flag, for naming where a value came from.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hive_core.errors import ConfigError

KINDS = (bool, int, float, str, list, dict)
_KEY = "hive_setting"


@dataclass(frozen=True)
class Spec:
    """What one field says about itself (made by `setting`, completed by `specs`)."""

    help: str = ""
    flag: str | None = None  # the CLI flag, "--name-with-dashes" when None; "" = no CLI option
    off_flag: str | None = None  # a bool's negative flag ("--no-name" when None)
    flag_only: bool = False  # a bool given only as an on-switch (`is_flag`), never by a recipe's default
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the interval excludes `low`
    high_open: bool = False
    note: str = ""  # appended to a range error, e.g. " (0 = no clipping)"
    default_text: str | None = None  # the help's "[default: ...]" when the default needs words
    int_as_str: bool = False  # a str setting that YAML may give as a number (`vram: 16`)
    nullable: bool = False  # YAML's null is a value too, though the default is not None (`vram: null`)
    # filled by `specs`
    name: str = ""
    kind: str = "str"  # bool | int | float | str | list | dict
    optional: bool = False  # the annotation admits None
    default: object = None  # the default value (a fresh one for factories)

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}" if self.flag is None else self.flag


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **spec) -> dataclasses.Field:
    """A dataclass field with its `Spec` (the keywords of `Spec`: help, flag, choices, low, ...)."""
    if "choices" in spec and spec["choices"] is not None:
        spec["choices"] = tuple(spec["choices"])
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: Spec(**spec)})


@functools.cache
def specs(cls: type) -> dict[str, Spec]:
    """Every field of dataclass `cls` (in order) with its completed `Spec`; plain fields get an
    empty one (no help, no bounds)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Spec] = {}
    for f in dataclasses.fields(cls):
        kind, optional = _kind(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        spec = f.metadata.get(_KEY, Spec())
        out[f.name] = dataclasses.replace(spec, name=f.name, kind=kind, optional=optional, default=default)
    return out


def _kind(annotation) -> tuple[str, bool]:
    """(kind, None allowed) of a resolved annotation: `int`, `int | None`, `list[str]`, ..."""
    args = typing.get_args(annotation)
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"setting annotation {annotation} must be one kind, optionally | None")
        annotation = rest[0]
    base = typing.get_origin(annotation) or annotation
    for kind in KINDS:
        if base is kind:
            return kind.__name__, optional
    raise TypeError(f"setting annotation {annotation} is not one of {', '.join(k.__name__ for k in KINDS)}")


def coerce(spec: Spec, value, where: dict | None = None):
    """`value` (from YAML or a flag) as the field's kind; ConfigError located at `where` when it
    cannot be. None is accepted only where the default is None or the setting is `nullable`. A list
    also reads "a,b,c"."""
    where = where or {}
    name, kind = spec.name, spec.kind

    def bad(expected: str):
        raise ConfigError(f"{name} must be {expected}, got {value!r}", **where)

    if value is None:
        if spec.default is None or spec.nullable:
            return None
        bad(f"a {kind}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        bad("true or false")
    if kind == "int":
        if isinstance(value, bool):
            bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        bad("an integer")
    if kind == "float":
        if isinstance(value, bool):
            bad("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            bad("a number")
    if kind == "list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        bad("a list of names")
    if kind == "dict":
        if isinstance(value, dict):
            return dict(value)
        bad("a mapping")
    if spec.int_as_str and isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    bad("a string")


def check_value(spec: Spec, value) -> str | None:
    """Why `value` is not a valid value of the field ("must be ..."), or None when it is.
    Checks choices, the [low, high] range of ints and floats, and that a bool is a bool."""
    if value is None and spec.optional:
        return None
    if spec.choices is not None:
        if (str(value) if spec.int_as_str else value) not in spec.choices:
            return f"must be one of {', '.join(spec.choices)}"
        return None
    if spec.kind == "bool" and not isinstance(value, bool):
        return "must be true, false or unset" if spec.optional else "must be true or false"
    if spec.low is None and spec.high is None:
        return None
    low = -math.inf if spec.low is None else spec.low
    high = math.inf if spec.high is None else spec.high
    if spec.kind == "int":
        if not _is_int(value) or not low <= value <= high:
            return f"must be an integer in [{_num(low)}, {_num(high)}]"
        return None
    if (
        not _is_number(value)
        or value < low
        or value > high
        or (spec.low_open and value == low)
        or (spec.high_open and value == high)
    ):
        interval = f"{'(' if spec.low_open else '['}{_num(low)}, {_num(high)}{')' if spec.high_open else ']'}"
        return f"must be a number in {interval}{spec.note}"
    return None


def check_all(config, sources: dict[str, dict] | None = None) -> None:
    """`check_value` for every field of dataclass instance `config`, in field order; the first
    bad one raises `ConfigError("NAME must be ... (got VALUE)")` located at `sources[NAME]`."""
    sources = sources or {}
    for name, spec in specs(type(config)).items():
        value = getattr(config, name)
        why = check_value(spec, value)
        if why:
            raise ConfigError(f"{name} {why} (got {value!r})", **sources.get(name, {}))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def default_text(spec: Spec) -> str | None:
    """The default as the help shows it, or None when there is nothing to show."""
    if spec.default_text is not None:
        return spec.default_text
    value = spec.default
    if value is None or spec.flag_only:
        return None
    if spec.kind == "bool":
        return spec.option if value else (spec.off_flag or f"--no-{spec.option[2:]}")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def click_options(cls: type, names: Iterable[str] | None = None) -> Callable:
    """A decorator adding one click option per CLI field of `cls` (those in `names`, in that order;
    default: every field with help, in field order). Each option's parameter is the field's name
    and its default is None, so a command can tell flags given from flags left out; the help
    ends with the dataclass default."""
    import click

    table = specs(cls)
    chosen = [table[n] for n in names] if names is not None else [s for s in table.values() if s.help]

    def decorate(command):
        for spec in reversed(chosen):  # click lists options in decoration order, outermost first
            command = _option(click, spec)(command)
        return command

    return decorate


def _option(click, spec: Spec):
    shown = default_text(spec)
    help_text = f"{spec.help} [default: {shown}]" if shown else spec.help
    if spec.kind == "bool":
        if spec.flag_only:
            return click.option(spec.option, spec.name, is_flag=True, help=help_text)
        off = spec.off_flag or f"--no-{spec.option[2:]}"
        return click.option(f"{spec.option}/{off}", spec.name, default=None, help=help_text)
    if spec.choices is not None:
        kind = click.Choice(spec.choices)
    else:
        kind = {"int": int, "float": float}.get(spec.kind)
    return click.option(spec.option, spec.name, type=kind, default=None, help=help_text)
