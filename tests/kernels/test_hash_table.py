"""The shared GPU hash table (`kernels/hash_table.py`) on its own: insert then look up integer
keys against a dict, with duplicates, negative and 64-bit keys, and a table at its fullest
(half its slots), where probe runs are longest and wrap around the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.hash_table import EMPTY, KEY_INT, launch_block, new_table, triton

BLOCK = 128

if triton is not None:
    import triton.language as tl

    from kernels.hash_table import insert, load_key, lookup

    _RULE = tl.constexpr(KEY_INT)  # keys as stored

    @triton.jit
    def _build(keys, table, slot_mask, slot_of, N, BLOCK: tl.constexpr):
        """keys [N, 3] int -> table, slot_of [N] int32."""
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = index < N
        k0, k1, k2 = load_key(keys, index, live, _RULE, 0.0)
        slot = insert(table, slot_mask, keys, index, k0, k1, k2, live, _RULE, 0.0)
        tl.store(slot_of + index, slot, mask=live)

    @triton.jit
    def _find(keys, table, slot_mask, queries, found, Q, BLOCK: tl.constexpr):
        """queries [Q, 3] int -> found [Q] int32: the lowest index holding each, or EMPTY."""
        q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = q < Q
        k0, k1, k2 = load_key(queries, q, live, _RULE, 0.0)
        tl.store(found + q, lookup(table, slot_mask, keys, k0, k1, k2, live, _RULE, 0.0), mask=live)


def build_and_find(keys: np.ndarray, queries: np.ndarray, device: str) -> tuple[np.ndarray, ...]:
    """-> (table [S], slot of each key [N], lowest index found for each query [Q])."""
    block = launch_block(BLOCK, device)
    k, q = torch.from_numpy(keys).to(device), torch.from_numpy(queries).to(device)
    table = new_table(len(keys), 2, device)
    slot_of = torch.full((len(keys),), -7, dtype=torch.int32, device=device)
    found = torch.full((len(queries),), -7, dtype=torch.int32, device=device)
    if len(keys):
        _build[(triton.cdiv(len(keys), block),)](
            k, table, table.numel() - 1, slot_of, len(k), BLOCK=block
        )
    if len(queries):
        grid = (triton.cdiv(len(queries), block),)
        _find[grid](k, table, table.numel() - 1, q, found, len(q), BLOCK=block)
    return table.cpu().numpy(), slot_of.cpu().numpy(), found.cpu().numpy()


def lowest_index(keys: np.ndarray) -> dict[tuple[int, ...], int]:
    first: dict[tuple[int, ...], int] = {}
    for i, key in enumerate(keys.tolist()):
        first.setdefault(tuple(key), i)
    return first


@pytest.mark.parametrize(
    ("count", "low", "high", "dtype"),
    [
        (1, 0, 4, np.int32),
        (300, -3, 3, np.int32),  # 343 possible keys: nearly all duplicates, k and ~k both
        (2048, -(2**40), 2**40, np.int64),  # 64-bit keys, all distinct: the table half full
        (3000, 0, 12, np.int64),
    ],
)
def test_insert_and_lookup_match_a_dict(
    triton_device: str, count: int, low: int, high: int, dtype: type
) -> None:
    rng = np.random.default_rng(count)
    keys = rng.integers(low, high, (count, 3)).astype(dtype)
    absent = rng.integers(high, high + 50, (200, 3)).astype(dtype)  # never inserted
    queries = np.concatenate([keys[rng.permutation(count)], absent])
    table, slot_of, found = build_and_find(keys, queries, triton_device)
    first = lowest_index(keys)
    expected = [first.get(tuple(q), EMPTY) for q in queries.tolist()]
    assert found.tolist() == expected
    # Every group owns one slot, holding its lowest index; every other slot is empty.
    assert sorted(table[table != EMPTY].tolist()) == sorted(first.values())
    assert [table[s] for s in slot_of.tolist()] == [first[tuple(k)] for k in keys.tolist()]


def test_table_sizes() -> None:
    assert len(new_table(0, 2, "cpu")) == 2
    assert len(new_table(3, 2, "cpu")) == 8
    assert len(new_table(4, 2, "cpu")) == 8
    assert len(new_table(1_000_000, 4, "cpu")) == 2**22
    with pytest.raises(ValueError, match="empty slots"):
        new_table(8, 1, "cpu")
