"""hive_core: what hive_data, hive_train and hive_eval share, and nothing else.

- `errors`: exception classes that carry file, row, line and column;
- `atomic`: crash-safe writes and the ownership marker of output directories;
- `cli`: the one place where errors become one-line messages and exit codes;
- `recipe`: reading recipe YAML (safe, located, aliases limited).
"""

__version__ = "0.1.0"  # the one version of hive: every package and every marker reports it
