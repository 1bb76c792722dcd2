"""Numba kernels of the block hash map: packed block keys, open-addressing lookup and insertion.

A block key ``(bx, by, bz)`` (block coordinates, each in ``[-2**20, 2**20)``) is packed into one int64
(:func:`pack_key`), so keys compare and hash as single integers. The table is two arrays:
``hash_keys`` (capacity,) int64 and ``hash_ids`` (capacity,) int32 (``-1`` = empty slot), with a
power-of-two capacity and linear probing. The caller keeps the load factor at or below 1/2, which is
what guarantees that every probe sequence ends at an empty slot.

No Python objects, no dicts: every function here is ``@njit(cache=True)``.

Numba's on-disk cache stores a caller's machine code with these functions compiled into it and checks only
the caller's own source file, so a change here (e.g. to :func:`_slot`) must come with a change to every
module whose kernels call them (``mesh_kernels``, ``raycast_kernels``), or stale caches keep the old hash.
"""

from __future__ import annotations

import numba as nb
import numpy as np

KEY_BITS = 21
"""Bits per packed block coordinate."""
KEY_OFFSET = 1 << (KEY_BITS - 1)
"""Offset added to each coordinate before packing (coordinates span ``[-KEY_OFFSET, KEY_OFFSET)``)."""
KEY_MASK = (1 << KEY_BITS) - 1
EMPTY = -1
"""Value of ``hash_ids`` in an empty slot."""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""LLVM fast-math flags used by every fusion kernel: deliberately without ``nnan`` and ``ninf``, so that
comparisons such as ``d >= min_depth`` stay false for NaN depth (NaN/inf pixels are rejected by them)."""

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser; unsigned so that overflow wraps by definition
_MIX2 = np.uint64(0x94D049BB133111EB)


@nb.njit(cache=True, inline="always")
def pack_key(bx: int, by: int, bz: int) -> np.int64:
    """Pack block coordinates (each in ``[-2**20, 2**20)``) into one int64."""
    return (
        ((np.int64(bx) + KEY_OFFSET) << (2 * KEY_BITS))
        | ((np.int64(by) + KEY_OFFSET) << KEY_BITS)
        | (np.int64(bz) + KEY_OFFSET)
    )


@nb.njit(cache=True, inline="always")
def point_key(x_blocks: float, y_blocks: float, z_blocks: float) -> np.int64:
    """Packed key of the block holding a point given in block units (world metres / block size), each
    coordinate in ``(-2**20, 2**20)``: the same as ``pack_key(floor(x), floor(y), floor(z))``, with the floor
    done by truncating the offset (positive) coordinate, which is cheaper than a floor per coordinate."""
    return (
        (np.int64(x_blocks + KEY_OFFSET) << (2 * KEY_BITS))
        | (np.int64(y_blocks + KEY_OFFSET) << KEY_BITS)
        | np.int64(z_blocks + KEY_OFFSET)
    )


@nb.njit(cache=True, inline="always")
def unpack_key(key: np.int64) -> tuple[int, int, int]:
    """Inverse of :func:`pack_key`."""
    bx = ((key >> (2 * KEY_BITS)) & KEY_MASK) - KEY_OFFSET
    by = ((key >> KEY_BITS) & KEY_MASK) - KEY_OFFSET
    bz = (key & KEY_MASK) - KEY_OFFSET
    return bx, by, bz


@nb.njit(cache=True, inline="always")
def _slot(key: np.int64, mask: np.int64) -> np.int64:
    """Home slot of ``key``: the splitmix64 finaliser, whose low bits depend on every key bit (neighbouring
    blocks, which differ only in a few low bits of each coordinate, land in unrelated slots)."""
    h = np.uint64(key)
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    h = h ^ (h >> np.uint64(31))
    return np.int64(h & np.uint64(mask))


@nb.njit(cache=True)
def lookup(hash_keys: np.ndarray, hash_ids: np.ndarray, key: np.int64) -> np.int32:
    """Block id of packed ``key``, or ``-1`` when the block is not allocated."""
    mask = np.int64(hash_ids.shape[0] - 1)
    i = _slot(key, mask)
    while True:
        b = hash_ids[i]
        if b == EMPTY:
            return np.int32(-1)
        if hash_keys[i] == key:
            return b
        i = (i + 1) & mask


@nb.njit(cache=True)
def unpack_many(packed: np.ndarray) -> np.ndarray:
    """Block coordinates (N, 3) int32 of packed keys (N,) int64 (see :func:`unpack_key`)."""
    out = np.empty((packed.shape[0], 3), np.int32)
    for i in range(packed.shape[0]):
        bx, by, bz = unpack_key(packed[i])
        out[i, 0] = bx
        out[i, 1] = by
        out[i, 2] = bz
    return out


@nb.njit(cache=True)
def lookup_many(hash_keys: np.ndarray, hash_ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Block ids (N,) int32 of packed ``keys`` (N,) int64; ``-1`` where not allocated."""
    out = np.empty(keys.shape[0], np.int32)
    for i in range(keys.shape[0]):
        out[i] = lookup(hash_keys, hash_ids, keys[i])
    return out


@nb.njit(cache=True)
def _insert_new(hash_keys: np.ndarray, hash_ids: np.ndarray, key: np.int64, block_id: np.int32) -> None:
    mask = np.int64(hash_ids.shape[0] - 1)
    i = _slot(key, mask)
    while hash_ids[i] != EMPTY:
        i = (i + 1) & mask
    hash_keys[i] = key
    hash_ids[i] = block_id


@nb.njit(cache=True)
def rebuild(block_keys: np.ndarray, count: int, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh table of ``capacity`` (power of two) slots holding ``block_keys[:count]`` -> ``0..count-1``."""
    hash_keys = np.zeros(capacity, np.int64)
    hash_ids = np.full(capacity, EMPTY, np.int32)
    for b in range(count):
        _insert_new(hash_keys, hash_ids, block_keys[b], np.int32(b))
    return hash_keys, hash_ids


@nb.njit(cache=True)
def insert_or_find(
    hash_keys: np.ndarray,
    hash_ids: np.ndarray,
    block_keys: np.ndarray,
    count: int,
    max_blocks: int,
    candidates: np.ndarray,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Find or allocate the block of every candidate key, in order.

    candidates: (N,) int64 packed keys, duplicates allowed. ``block_keys`` must have room for
    ``min(count + N, max_blocks)`` entries and the table for twice that. New blocks get ids ``count,
    count + 1, ...`` until ``max_blocks`` is reached; keys that would need a block beyond that are refused.

    Returns (ids, new_count, refused): ids (M,) int32 unique block ids of the candidates in first-seen
    order, the new block count, and refused (R,) int64 packed keys (duplicates possible).
    """
    n = candidates.shape[0]
    seen = np.zeros(min(count + n, max_blocks), np.bool_)
    ids = np.empty(n, np.int32)
    refused = np.empty(n, np.int64)
    n_ids = 0
    n_refused = 0
    mask = np.int64(hash_ids.shape[0] - 1)
    for c in range(n):
        key = candidates[c]
        i = _slot(key, mask)
        block_id = np.int32(-1)
        while True:
            b = hash_ids[i]
            if b == EMPTY:
                break
            if hash_keys[i] == key:
                block_id = b
                break
            i = (i + 1) & mask
        if block_id < 0:
            if count >= max_blocks:
                refused[n_refused] = key
                n_refused += 1
                continue
            block_id = np.int32(count)
            hash_keys[i] = key
            hash_ids[i] = block_id
            block_keys[count] = key
            count += 1
        if not seen[block_id]:
            seen[block_id] = True
            ids[n_ids] = block_id
            n_ids += 1
    return ids[:n_ids], count, refused[:n_refused]
