"""hive_eval: score text-to-SQL (and other expert) predictions against gold answers.

`hive-eval` reads a normalized dataset and a file of predictions, executes gold and predicted SQL on
small synthesized databases in a sandboxed PostgreSQL, and writes per-row verdicts and a summary.
Nothing here imports torch or transformers.
"""
