"""The CLI edge: turn library exceptions into one-line messages and exit codes."""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback

import click

from hive_core.errors import HiveError

EXIT_ERROR = 1
EXIT_INTERNAL = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def cli_errors(fn):
    """Decorator for click commands: no traceback reaches a user unless HIVE_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HiveError as err:
            if os.environ.get("HIVE_DEBUG"):
                traceback.print_exc()
            fail(str(err))
        except KeyboardInterrupt:
            click.echo("interrupted: stopped cleanly; completed outputs are intact", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except OSError as err:
            if os.environ.get("HIVE_DEBUG"):
                traceback.print_exc()
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
            hint = (
                " (disk full or file size limit; outputs that were complete before are intact)"
                if full
                else ""
            )
            fail(f"{where}{err.strerror or err}{hint}")
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as err:  # the last line of defence: still one line, but marked as a bug
            if os.environ.get("HIVE_DEBUG"):
                traceback.print_exc()
            fail(
                f"internal error ({type(err).__name__}: {err}); rerun with HIVE_DEBUG=1 for a traceback",
                EXIT_INTERNAL,
            )

    return wrapper


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used, so `--help` stays fast
    and a heavy dependency (torch) is loaded only by the command that needs it."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            module = __import__(module_name, fromlist=[attr])
            return getattr(module, attr)
        return super().get_command(ctx, name)


def recipe_option(section: str):
    """A `--config RECIPE` option: the recipe's `section` fills this command's option defaults.

    It is eager, so it is read before the other options, and it only changes defaults: flags given
    on the command line still win. Unknown keys are refused with file, line and column.
    """

    def load(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        from hive_core.recipe import check_keys, load_recipe

        names = {p.name for p in ctx.command.params if isinstance(p, click.Option)} - {"config", "help"}
        try:
            recipe = load_recipe(value)
            check_keys(recipe, section, names)
        except HiveError as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None
        ctx.default_map = {**(ctx.default_map or {}), **recipe.section(section)}
        return value

    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=load,
        help=f"Recipe YAML (pipelines/*.yaml) whose `{section}` section sets this command's defaults; flags override it.",
    )
