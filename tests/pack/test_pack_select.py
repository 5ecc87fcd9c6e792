"""The pack pipeline's pure parts on small arrays: which rows are packed (`select_rows`) and the
manifest (`build_manifest`)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from hive_data.binpack import pack_documents
from hive_data.pack import PackConfig, PackedSplits, build_manifest, select_rows, val_mask


def hashes(*keys: int) -> np.ndarray:
    """One 16-byte hash per key; equal keys are duplicates. The first 8 bytes (big-endian) decide
    the split: key * 2**56 as a fraction of 2**64 is key / 256."""
    out = np.zeros((len(keys), 16), dtype=np.uint8)
    out[:, 0] = keys
    out[:, 15] = 1
    return out


def test_overlong_rows_are_dropped_whatever_their_hash():
    lengths = np.array([10, 17, 16, 0, 5])
    sel = select_rows(lengths, hashes(200, 201, 202, 203, 204), PackConfig(seq=16, val=0.0))
    assert sel.overlong.tolist() == [1]
    assert sel.train.tolist() == [0, 2, 4]  # row 3 (length 0: not tokenized) is neither kept nor counted
    assert sel.val.size == 0 and sel.duplicates.size == 0


def test_rows_too_long_to_tokenize_count_as_overlong():
    lengths = np.array([10, 0, 12])  # row 1 was measured by its text and never tokenized
    sel = select_rows(lengths, hashes(200, 201, 202), PackConfig(seq=16, val=0.0), too_long=[1])
    assert sel.overlong.tolist() == [1]
    assert sel.train.tolist() == [0, 2]


def test_first_occurrence_of_a_duplicate_stays():
    lengths = np.array([4, 4, 20, 4, 4])
    keys = hashes(200, 201, 200, 200, 201)  # row 2 duplicates row 0 but is overlong: it is not kept
    sel = select_rows(lengths, keys, PackConfig(seq=16, val=0.0))
    assert sel.train.tolist() == [0, 1]
    assert sel.duplicates.tolist() == [3, 4]
    assert sel.overlong.tolist() == [2]


def test_an_overlong_first_occurrence_does_not_make_the_next_one_a_duplicate():
    lengths = np.array([20, 4])
    sel = select_rows(lengths, hashes(200, 200), PackConfig(seq=16, val=0.0))
    assert sel.train.tolist() == [1] and sel.duplicates.size == 0


def test_keep_duplicates_keeps_them():
    lengths = np.array([4, 4, 4])
    sel = select_rows(lengths, hashes(200, 200, 200), PackConfig(seq=16, val=0.0, keep_duplicates=True))
    assert sel.train.tolist() == [0, 1, 2] and sel.duplicates.size == 0


def test_split_follows_the_content_hash():
    lengths = np.full(6, 8)
    keys = hashes(0, 255, 10, 200, 3, 3)  # below 0.1 * 256 = 25.6 goes to val
    sel = select_rows(lengths, keys, PackConfig(seq=16, val=0.1))
    assert sel.val.tolist() == [0, 2, 4]  # row 5 duplicates row 4 wherever it would go
    assert sel.train.tolist() == [1, 3]
    assert sel.duplicates.tolist() == [5]
    assert np.array_equal(val_mask(keys, 0.1), np.array([1, 0, 1, 0, 1, 1], dtype=bool))


def test_every_row_is_accounted_for_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=300)
    keys = hashes(*rng.integers(0, 256, size=300).tolist())
    too_long = [i for i in range(0, 300, 37) if lengths[i] == 0]
    sel = select_rows(lengths, keys, PackConfig(seq=32, val=0.2), too_long=too_long)
    parts = [sel.train, sel.val, sel.overlong, sel.duplicates]
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))  # disjoint
    untokenized = set(np.flatnonzero(lengths == 0).tolist()) - set(too_long)
    assert set(joined.tolist()) | untokenized == set(range(300))
    for part in parts:
        assert np.all(np.diff(part) > 0)  # ascending: rejects and packing follow input order
    assert all(lengths[i] <= 32 for i in np.concatenate([sel.train, sel.val]))


def test_manifest_totals_add_up():
    cfg = PackConfig(seq=16, val=0.0)
    lengths = np.array([10, 6, 9, 7, 16])
    packing = pack_documents(lengths, cfg.seq)
    packed = PackedSplits(
        shards=[],
        splits={
            "train": {
                "rows": 5,
                "sequences": packing.rows,
                "tokens": packing.tokens,
                "loss_tokens": 20,
                "padding_tokens": packing.padding,
                "fill_efficiency": round(packing.fill, 6),
            }
        },
        lengths=[lengths],
    )
    counts = Counter(rows_in=8, unreadable=1, duplicate=2)
    manifest = build_manifest(
        config=cfg,
        fingerprint=None,
        inputs=[],
        tokenizer={"name_or_path": "tok", "sha256": "x", "vocab_size": 64, "pad_id": 0, "eos_id": 1},
        template_sha="y",
        packed=packed,
        counts=counts,
    )
    m = manifest.to_dict()
    t = m["totals"]
    assert t["rows_packed"] == 5 and t["rows_in"] == 8
    assert t["rows_dropped"] == {"unreadable": 1, "duplicate": 2}  # in DROP_REASONS order, zeros left out
    assert t["tokens"] == 48 and t["sequences"] == packing.rows == 3
    assert t["padding_tokens"] == 3 * 16 - 48 == 0 and t["fill_efficiency"] == 1.0
    assert sum(t["length_histogram"]["counts"]) == 5
    assert m["seq"] == 16 and m["shards"] == [] and m["rejects"] == "rejects.jsonl"
    assert m["mapping"] is None and "files" not in m["tokenizer"]  # only the keys pack has always written
