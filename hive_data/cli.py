"""`hive-data`: normalize, pack and inspect training data. Each command lives in its own module."""

from __future__ import annotations

import click

from hive_core.cli import LazyGroup
from hive_data import __version__


@click.group(
    cls=LazyGroup,
    lazy={
        "normalize": "hive_data.cli_normalize:normalize",
        "pack": "hive_data.cli_pack:pack",
        "inspect": "hive_data.cli_pack:inspect",
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="hive-data")
def main():
    """Prepare training data for expert models: canonical schemas, verified answers, packed shards."""


if __name__ == "__main__":
    main()
