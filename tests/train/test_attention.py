"""Which FlashAttention hive-train runs (`hive_train.attention.newer_flash_attention`)."""

from __future__ import annotations

import torch


def test_flash_attention_switches_only_to_one_that_loads():
    """FlashAttention 3 on Hopper when torch has it registered and its package loads; FlashAttention 2
    stays for another GPU generation, an implementation not registered, or one that fails to load
    (the device machine's torch 2.11 registers FA3 and FA4 without their packages)."""
    from hive_train.attention import newer_flash_attention, pick_flash_impl

    switched = []

    def activate(name):
        if name == "FA4":
            raise ModuleNotFoundError("No module named 'flash_attn'")
        switched.append(name)

    assert pick_flash_impl(9, ["FA3", "FA4"], activate) == "FA3" and switched == ["FA3"]
    assert pick_flash_impl(10, ["FA3", "FA4"], activate) is None  # FA4 does not load
    assert pick_flash_impl(9, ["FA4"], activate) is None
    assert pick_flash_impl(8, ["FA3", "FA4"], activate) is None and switched == ["FA3"]
    if not torch.cuda.is_available():
        assert newer_flash_attention() is None
