"""`python -m hive_train` = `hive-train`."""

from hive_train.cli import run

run()
