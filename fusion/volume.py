"""The sparse TSDF volume: voxel blocks allocated on demand through a hash map kept in numpy arrays.

Data only: the volume stores blocks and finds them; algorithms (integration, meshing, raycasting) live
in :mod:`fusion.integrator`, :mod:`fusion.meshing` and :mod:`fusion.raycast` and take the volume as an
argument (the nvblox split).

Geometry. Voxel ``(gx, gy, gz)`` (integer grid coordinates) is the point ``(gx, gy, gz) * voxel_size_m``
in the world frame; block ``(bx, by, bz)`` holds voxels ``gx = bx * B + ix`` for ``ix in 0..B-1``
(``B = block_size_vox``, likewise y and z). Inside a block, voxel ``(ix, iy, iz)`` is stored at
``ix + B * (iy + B * iz)``.

Per voxel: ``tsdf`` (float32, metres, clamped to the integrator's truncation distance), ``weight``
(float32, 0 = never observed) and ``color`` (uint8 RGB, weighted running average). Two invariants hold for
every allocated voxel: a voxel is unobserved (weight 0) exactly when its ``tsdf`` is :data:`UNOBSERVED_TSDF`,
and a positive weight is at least 1 (weights count observations). So with a minimum weight of at most 1, the
TSDF alone tells whether a voxel was observed: the ray march reads one array instead of two (at 1 cm on
7-Scenes, 2-4 % of raycasting time). An integration update ``(tsdf * w + sdf) / (w + 1)`` needs no
special case: ``UNOBSERVED_TSDF * 0 = 0``.

Memory budget. At most ``max_blocks`` blocks are ever allocated. When an allocation request would go
beyond it, the blocks that still fit are allocated in request order and the rest are *refused*: they get
no storage, :meth:`TsdfVolume.allocate` reports how many distinct blocks were refused, and every
existing block (and all of its data) stays exactly as it was. Nothing is ever evicted. Storage arrays
grow geometrically (x2, capped at the budget), so memory follows the number of allocated blocks, i.e.
the observed surface, not the bounding box of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion import hash_kernels as hk

MIN_HASH_CAPACITY = 1024
UNOBSERVED_TSDF = np.float32(1e30)
"""``tsdf`` of every voxel with weight 0 (far outside any truncation band, finite so that ``* 0`` gives 0)."""


@dataclass(frozen=True)
class VolumeConfig:
    """Geometry and memory budget of a :class:`TsdfVolume`."""

    voxel_size_m: float = 0.02
    """Edge length of one voxel in metres (> 0)."""
    block_size_vox: int = 8
    """Voxels per block edge, a power of two in 2..32; a block holds ``block_size_vox ** 3`` voxels."""
    max_blocks: int = 250_000
    """Memory budget in blocks (>= 1). See the module docstring for what happens when it is reached."""
    initial_capacity_blocks: int = 1024
    """Blocks of storage allocated up front (>= 1; storage grows x2 on demand up to ``max_blocks``)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.voxel_size_m, (int, float)) and np.isfinite(self.voxel_size_m)
                and self.voxel_size_m > 0):
            raise ValueError(f"VolumeConfig.voxel_size_m must be a positive finite number, got {self.voxel_size_m!r}")
        if not isinstance(self.block_size_vox, int) or self.block_size_vox not in (2, 4, 8, 16, 32):
            raise ValueError(f"VolumeConfig.block_size_vox must be one of 2, 4, 8, 16, 32, got {self.block_size_vox!r}")
        if not isinstance(self.max_blocks, int) or not 1 <= self.max_blocks < 2**31 - 1:
            raise ValueError(f"VolumeConfig.max_blocks must be an int in 1..2**31-2, got {self.max_blocks!r}")
        if not isinstance(self.initial_capacity_blocks, int) or self.initial_capacity_blocks < 1:
            raise ValueError(
                f"VolumeConfig.initial_capacity_blocks must be a positive int, got {self.initial_capacity_blocks!r}"
            )

    @property
    def block_size_m(self) -> float:
        """Edge length of one block in metres."""
        return self.voxel_size_m * self.block_size_vox

    @property
    def block_shift(self) -> int:
        """log2(block_size_vox): voxel coordinate >> block_shift = block coordinate."""
        return self.block_size_vox.bit_length() - 1

    @property
    def voxels_per_block(self) -> int:
        return self.block_size_vox**3

    @property
    def max_abs_coordinate_m(self) -> float:
        """Largest |world coordinate| a block key can represent (about 2**20 blocks from the origin)."""
        return (hk.KEY_OFFSET - 2) * self.block_size_m


@dataclass(frozen=True)
class AllocationResult:
    """What :meth:`TsdfVolume.allocate` did."""

    ids: np.ndarray
    """(M,) int32 distinct block ids of the requested keys that exist now, in first-request order."""
    new_block_count: int
    """Blocks created by this request."""
    refused_block_count: int
    """Distinct requested blocks that were not created because the memory budget is full."""


def pack_keys(keys: np.ndarray) -> np.ndarray:
    """Pack (N, 3) integer block keys into (N,) int64 (see :func:`fusion.hash_kernels.pack_key`)."""
    keys = np.asarray(keys)
    if keys.ndim != 2 or keys.shape[1] != 3 or keys.dtype.kind not in "iu":
        raise ValueError(f"block keys must be an (N, 3) integer array, got shape {keys.shape} dtype {keys.dtype}")
    k = keys.astype(np.int64)
    if k.size and (k.min() < -hk.KEY_OFFSET or k.max() >= hk.KEY_OFFSET):
        raise ValueError(f"block key coordinates must lie in [{-hk.KEY_OFFSET}, {hk.KEY_OFFSET})")
    off = hk.KEY_OFFSET
    return ((k[:, 0] + off) << (2 * hk.KEY_BITS)) | ((k[:, 1] + off) << hk.KEY_BITS) | (k[:, 2] + off)


def unpack_keys(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_keys`: (N,) int64 -> (N, 3) int32."""
    p = np.ascontiguousarray(packed, dtype=np.int64)
    if p.ndim != 1:
        raise ValueError(f"packed keys must be 1-D, got shape {p.shape}")
    return hk.unpack_many(p)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class TsdfVolume:
    """Sparse voxel-block TSDF storage.

    Arrays (first ``block_count`` rows are in use; ``V = block_size_vox ** 3``):

    - ``packed_keys``: (capacity,) int64 packed block key per block id;
    - ``tsdf``: (capacity, V) float32 signed distance in metres, :data:`UNOBSERVED_TSDF` where unobserved;
    - ``weight``: (capacity, V) float32 integration weight, 0 = unobserved, else >= 1;
    - ``color``: (capacity, V, 3) uint8 RGB;
    - ``hash_keys`` / ``hash_ids``: the open-addressing table (see :mod:`fusion.hash_kernels`).

    Kernels read and write these arrays directly; only :meth:`allocate` creates blocks.
    """

    def __init__(self, config: VolumeConfig | None = None) -> None:
        self.config = config if config is not None else VolumeConfig()
        self._reset()

    def _reset(self) -> None:
        cap = min(self.config.initial_capacity_blocks, self.config.max_blocks)
        v = self.config.voxels_per_block
        self._count = 0
        self.packed_keys = np.zeros(cap, np.int64)
        self.tsdf = np.zeros((cap, v), np.float32)
        self.weight = np.zeros((cap, v), np.float32)
        self.color = np.zeros((cap, v, 3), np.uint8)
        self.hash_keys = np.zeros(MIN_HASH_CAPACITY, np.int64)
        self.hash_ids = np.full(MIN_HASH_CAPACITY, hk.EMPTY, np.int32)

    # ------------------------------------------------------------------ properties
    @property
    def voxel_size_m(self) -> float:
        return self.config.voxel_size_m

    @property
    def block_size_vox(self) -> int:
        return self.config.block_size_vox

    @property
    def block_count(self) -> int:
        """Number of allocated blocks."""
        return self._count

    @property
    def capacity_blocks(self) -> int:
        """Blocks of voxel storage currently reserved (>= ``block_count``)."""
        return self.tsdf.shape[0]

    @property
    def is_full(self) -> bool:
        """True when the memory budget is reached and no new block can be allocated."""
        return self._count >= self.config.max_blocks

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays of the volume (storage capacity, not just blocks in use)."""
        return sum(a.nbytes for a in (self.packed_keys, self.tsdf, self.weight, self.color,
                                      self.hash_keys, self.hash_ids))

    def block_keys(self) -> np.ndarray:
        """(block_count, 3) int32 block keys, row i = block id i."""
        return unpack_keys(self.packed_keys[: self._count])

    # ------------------------------------------------------------------ lookup / allocation
    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Block ids (N,) int32 of (N, 3) integer block keys; ``-1`` where not allocated."""
        return hk.lookup_many(self.hash_keys, self.hash_ids, pack_keys(keys))

    def lookup_packed(self, packed: np.ndarray) -> np.ndarray:
        """Block ids (N,) int32 of (N,) int64 packed keys; ``-1`` where not allocated."""
        return hk.lookup_many(self.hash_keys, self.hash_ids, np.ascontiguousarray(packed, dtype=np.int64))

    def allocate(self, keys: np.ndarray) -> AllocationResult:
        """Find or create the blocks of (N, 3) integer keys. See :meth:`allocate_packed`."""
        return self.allocate_packed(pack_keys(keys))

    def allocate_packed(self, packed: np.ndarray) -> AllocationResult:
        """Find or create the blocks of (N,) int64 packed keys (duplicates allowed).

        Under the memory budget every block is created; at the budget the remaining requests are
        refused (counted in the result) and the existing map is untouched.
        """
        packed = np.ascontiguousarray(packed, dtype=np.int64)
        if packed.ndim != 1:
            raise ValueError(f"packed keys must be 1-D, got shape {packed.shape}")
        worst = min(self._count + packed.shape[0], self.config.max_blocks)
        self._reserve_keys(worst)
        ids, new_count, refused = hk.insert_or_find(
            self.hash_keys, self.hash_ids, self.packed_keys, self._count, self.config.max_blocks, packed
        )
        created = int(new_count) - self._count
        if created:
            self._reserve_storage(int(new_count))
            self.tsdf[self._count : int(new_count)] = UNOBSERVED_TSDF
        self._count = int(new_count)
        refused_count = int(np.unique(refused).shape[0]) if refused.shape[0] else 0
        return AllocationResult(ids=ids, new_block_count=created, refused_block_count=refused_count)

    def _reserve_keys(self, n_blocks: int) -> None:
        """Make room for ``n_blocks`` keys in ``packed_keys`` and keep the table at most half full."""
        if self.packed_keys.shape[0] < n_blocks:
            grown = np.zeros(max(n_blocks, min(2 * self.packed_keys.shape[0], self.config.max_blocks)), np.int64)
            grown[: self._count] = self.packed_keys[: self._count]
            self.packed_keys = grown
        if self.hash_ids.shape[0] < 2 * n_blocks:
            self.hash_keys, self.hash_ids = hk.rebuild(
                self.packed_keys, self._count, _next_pow2(max(2 * n_blocks, MIN_HASH_CAPACITY))
            )

    def _reserve_storage(self, n_blocks: int) -> None:
        cap = self.tsdf.shape[0]
        if cap >= n_blocks:
            return
        new_cap = max(n_blocks, min(2 * cap, self.config.max_blocks))
        v = self.config.voxels_per_block
        for name, shape in (("tsdf", (new_cap, v)), ("weight", (new_cap, v)), ("color", (new_cap, v, 3))):
            old = getattr(self, name)
            grown = np.zeros(shape, old.dtype)
            grown[: self._count] = old[: self._count]
            setattr(self, name, grown)

    # ------------------------------------------------------------------ whole-map operations
    def clear(self) -> None:
        """Forget every block (storage shrinks back to the initial capacity)."""
        self._reset()

    @classmethod
    def from_blocks(
        cls,
        config: VolumeConfig,
        keys: np.ndarray,
        tsdf: np.ndarray,
        weight: np.ndarray,
        color: np.ndarray,
    ) -> TsdfVolume:
        """A volume holding the given blocks (used by :func:`fusion.mapio.load_map`).

        keys (N, 3) int; tsdf, weight (N, V) float32; color (N, V, 3) uint8; N <= ``config.max_blocks``;
        keys must be distinct; weights finite and either 0 (unobserved: the tsdf given there is replaced by
        :data:`UNOBSERVED_TSDF`) or at least 1; observed tsdf values finite.
        """
        n = keys.shape[0]
        v = config.voxels_per_block
        if n > config.max_blocks:
            raise ValueError(f"{n} blocks exceed the memory budget of {config.max_blocks} blocks")
        for name, arr, shape, dtype in (
            ("tsdf", tsdf, (n, v), np.float32), ("weight", weight, (n, v), np.float32),
            ("color", color, (n, v, 3), np.uint8),
        ):
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(f"{name} must be {shape} {np.dtype(dtype)}, got {arr.shape} {arr.dtype}")
        if not np.all(np.isfinite(weight)) or np.any((weight < 1.0) & (weight != 0.0)):
            bad = weight[~np.isfinite(weight) | ((weight < 1.0) & (weight != 0.0))][0]
            raise ValueError(f"weights must be 0 (unobserved) or >= 1 (observation counts), found {bad}")
        observed = weight > 0
        if not np.all(np.isfinite(tsdf[observed])) or np.any(np.abs(tsdf[observed]) >= UNOBSERVED_TSDF):
            raise ValueError("tsdf of observed voxels (weight > 0) must be finite")
        packed = pack_keys(keys)
        if np.unique(packed).shape[0] != n:
            raise ValueError("block keys are not distinct")
        vol = cls(config)
        result = vol.allocate_packed(packed)
        if result.new_block_count != n:
            raise ValueError(f"only {result.new_block_count} of {n} blocks could be allocated")
        vol.tsdf[:n] = np.where(observed, tsdf, UNOBSERVED_TSDF)
        vol.weight[:n] = weight
        vol.color[:n] = color
        return vol
