"""Tokenizers, one place for both sides: loading one, and naming it for a manifest.

`hive-data pack` records `tokenizer_info(tokenizer)` in the shards' manifest; `hive-train` loads a
tokenizer the same way and compares its `tokenizer_info(...)["sha256"]` with that record, so the two
must agree on what a tokenizer's identity is: this module is it.

- `load_tokenizer(name_or_path, trust_remote_code=False, **kwargs)`: a Hugging Face fast tokenizer
  (hub id or local directory); `TokenizerLoadError` when it cannot be loaded, saying whether it was
  refused for needing its own Python code. Each command words that error for its users.
- `TOKENIZER_FILES`: the files that define a tokenizer directory, hashed for the manifest (model
  weights are not); `LOADABLE_FILES` (a subset): a directory holds a tokenizer only with one of them.
- `tokenizer_info(tokenizer)`: name, content hash, vocabulary size, pad/eos ids and tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hive_core.errors import HiveError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
LOADABLE_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class TokenizerLoadError(HiveError):
    """A tokenizer that could not be loaded. `remote_code` is True when it was refused because it
    needs to run its own Python code; `cause` is the exception transformers raised."""

    def __init__(self, reason: str, *, cause: BaseException, remote_code: bool, **where):
        super().__init__(reason, **where)
        self.cause = cause
        self.remote_code = remote_code


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, **kwargs):
    """A Hugging Face fast tokenizer by hub id or local directory (`kwargs` go to
    `AutoTokenizer.from_pretrained`, e.g. `local_files_only=True`).

    A tokenizer that needs its own Python code is refused unless `trust_remote_code` (passing False
    explicitly also keeps transformers from asking on stdin whether to run it). Raises
    `TokenizerLoadError` for anything transformers raises (OSError, ValueError, hub errors, the
    tokenizers library's bare Exception for a damaged tokenizer.json)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as err:  # noqa: BLE001 - see the docstring: transformers raises many kinds
        message = " ".join(str(err).split())  # one line, whatever transformers wrote
        raise TokenizerLoadError(
            f"cannot load tokenizer {name_or_path!r}: {type(err).__name__}: {message}",
            cause=err,
            remote_code="trust_remote_code" in message,
            file=str(name_or_path),
        ) from None


def has_tokenizer_files(path: str | os.PathLike) -> bool:
    """A directory holding at least one of `LOADABLE_FILES`."""
    root = Path(path)
    return root.is_dir() and any((root / name).is_file() for name in LOADABLE_FILES)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_info(tokenizer) -> dict:
    """Identity of a tokenizer for the manifest: name, content hash, vocab size, pad/eos ids, and the
    sha256 of its files (`TOKENIZER_FILES`) when it was loaded from a local directory."""
    root = Path(str(tokenizer.name_or_path))
    files = (
        {n: _sha256_file(root / n) for n in TOKENIZER_FILES if (root / n).is_file()} if root.is_dir() else {}
    )
    content = hashlib.sha256()
    if "tokenizer.json" in files:  # that file is the serialized tokenizer: hashing it is cheaper
        content.update(json.dumps(files, sort_keys=True).encode("utf-8"))
    else:
        content.update(tokenizer.backend_tokenizer.to_str().encode("utf-8"))
    specials = {
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "all": list(tokenizer.all_special_tokens),
    }
    content.update(json.dumps(specials, sort_keys=True).encode("utf-8"))
    info = {
        "name_or_path": str(tokenizer.name_or_path),
        "sha256": content.hexdigest(),
        "vocab_size": len(tokenizer),
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
    }
    if files:
        info["files"] = files
    return info
