"""Meshing the TSDF volume: incremental per-block marching cubes and full-mesh extraction.

Incremental use, after each integrated frame::

    keys = blocks_affected_by(volume, result.touched_keys)   # touched blocks + their lower neighbours
    meshes = mesh_blocks(volume, keys)                       # BlockMeshes, one mesh per key
    update = MapUpdate(..., blocks=meshes.to_messages())     # stream.messages.MeshBlock per key

A block's mesh is made of the cubes whose lowest corner is one of its voxels, so it also depends on the
7 blocks above it (``+x``, ``+y``, ``+z`` and diagonals): when block ``k`` changes, the blocks
``k - (0|1, 0|1, 0|1)`` must be re-meshed, which is what :func:`blocks_affected_by` adds. Table and
kernel details: :mod:`fusion.mesh_kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion import mesh_kernels as mk
from fusion.validation import check_positive
from fusion.volume import TsdfVolume, pack_keys, unpack_keys
from stream.messages import MeshBlock


@dataclass(frozen=True)
class MeshingConfig:
    """Parameters of marching cubes."""

    min_weight: float = 1.0
    """A cube is meshed only when all 8 corner voxels have at least this weight (> 0)."""

    def __post_init__(self) -> None:
        check_positive(self.min_weight, "MeshingConfig.min_weight")


@dataclass(frozen=True)
class BlockMeshes:
    """Meshes of several blocks, packed into flat arrays (block i owns rows ``offsets[i]:offsets[i+1]``)."""

    keys: np.ndarray
    """(N, 3) int32 block keys."""
    vertex_offsets: np.ndarray
    """(N + 1,) int64 start of each block's vertices."""
    face_offsets: np.ndarray
    """(N + 1,) int64 start of each block's faces."""
    vertices: np.ndarray
    """(V, 3) float32 world positions in metres."""
    colors: np.ndarray
    """(V, 3) uint8 RGB."""
    faces: np.ndarray
    """(F, 3) int32 vertex indices *local to the block* (add ``vertex_offsets[i]`` for global indices);
    counter-clockwise seen from outside (the normal points into free space)."""
    edge_ids: np.ndarray
    """(V,) int64 id of the voxel edge each vertex lies on; equal ids = the same vertex (seams)."""

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def vertex_count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def face_count(self) -> int:
        return int(self.faces.shape[0])

    def block(self, i: int) -> MeshBlock:
        """The mesh of block ``i`` as a :class:`stream.messages.MeshBlock` (empty when it holds no surface)."""
        v0, v1 = int(self.vertex_offsets[i]), int(self.vertex_offsets[i + 1])
        f0, f1 = int(self.face_offsets[i]), int(self.face_offsets[i + 1])
        key = self.keys[i]
        return MeshBlock(
            key=(int(key[0]), int(key[1]), int(key[2])),
            vertices=self.vertices[v0:v1],
            faces=self.faces[f0:f1],
            colors=self.colors[v0:v1],
        )

    def to_messages(self, *, skip_empty: bool = False) -> tuple[MeshBlock, ...]:
        """One :class:`MeshBlock` per block (``skip_empty`` drops blocks without triangles)."""
        return tuple(
            self.block(i) for i in range(len(self))
            if not skip_empty or self.face_offsets[i + 1] > self.face_offsets[i]
        )


@dataclass(frozen=True)
class TriangleMesh:
    """A whole mesh with shared vertices."""

    vertices: np.ndarray
    """(V, 3) float32 world positions in metres."""
    faces: np.ndarray
    """(F, 3) int32 vertex indices, counter-clockwise seen from outside."""
    colors: np.ndarray
    """(V, 3) uint8 RGB."""

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) float32 unit area-weighted vertex normals (zero for isolated vertices)."""
        v = self.vertices.astype(np.float64)
        f = self.faces
        face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        normals = np.zeros_like(v)
        for corner in range(3):
            np.add.at(normals, f[:, corner], face_n)
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def _check_volume(volume: object) -> TsdfVolume:
    if not isinstance(volume, TsdfVolume):
        raise TypeError(f"volume must be a TsdfVolume, got {type(volume).__name__}")
    return volume


def blocks_affected_by(volume: TsdfVolume, touched_keys: np.ndarray) -> np.ndarray:
    """(M, 3) int32 keys of the allocated blocks whose mesh depends on any of ``touched_keys`` (N, 3)."""
    _check_volume(volume)
    packed = pack_keys(touched_keys)
    ids = mk.affected_block_ids(packed, volume.hash_keys, volume.hash_ids, volume.block_count)
    return unpack_keys(volume.packed_keys[ids])


def mesh_blocks(volume: TsdfVolume, keys: np.ndarray, config: MeshingConfig | None = None) -> BlockMeshes:
    """Marching cubes on the blocks ``keys`` (N, 3) int; a key with no allocated block gets an empty mesh."""
    _check_volume(volume)
    keys = np.asarray(keys)
    ids = volume.lookup(keys)
    return _mesh_ids(volume, ids, config, keys.astype(np.int32))


def _mesh_ids(
    volume: TsdfVolume, ids: np.ndarray, config: MeshingConfig | None, keys: np.ndarray | None = None
) -> BlockMeshes:
    cfg = config if config is not None else MeshingConfig()
    v_off, f_off, vertices, colors, faces, edge_ids = mk.mesh_blocks_kernel(
        np.ascontiguousarray(ids, dtype=np.int32), volume.packed_keys, volume.tsdf, volume.weight, volume.color,
        volume.hash_keys, volume.hash_ids, volume.block_size_vox, volume.voxel_size_m, float(cfg.min_weight),
        mk.TRI_EDGES, mk.TRI_COUNT, mk.EDGE_MASK, mk.EDGES, mk.CORNER_OFFSETS,
    )
    if keys is None:
        keys = unpack_keys(volume.packed_keys[ids])
    return BlockMeshes(keys, v_off, f_off, vertices, colors, faces, edge_ids)


def mesh_blocks_by_id(volume: TsdfVolume, ids: np.ndarray, config: MeshingConfig | None = None) -> BlockMeshes:
    """Like :func:`mesh_blocks` for block ids (N,) int (e.g. ``IntegrationResult.touched_ids``)."""
    _check_volume(volume)
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"block ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= volume.block_count):
        raise ValueError(f"block ids must lie in 0..{volume.block_count - 1}")
    return _mesh_ids(volume, ids, config)


def merge_block_meshes(meshes: BlockMeshes) -> TriangleMesh:
    """One mesh from per-block meshes: vertices on the same voxel edge are merged, seams become shared."""
    n_vert = meshes.vertex_count
    if n_vert == 0:
        return TriangleMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))
    unique_ids, first, inverse = np.unique(meshes.edge_ids, return_index=True, return_inverse=True)
    del unique_ids
    counts = np.diff(meshes.face_offsets)
    face_base = np.repeat(meshes.vertex_offsets[:-1], counts)
    global_faces = meshes.faces.astype(np.int64) + face_base[:, None]
    faces = inverse.reshape(-1)[global_faces].astype(np.int32)
    return TriangleMesh(meshes.vertices[first], faces, meshes.colors[first])


def extract_mesh(volume: TsdfVolume, config: MeshingConfig | None = None) -> TriangleMesh:
    """The whole map as one mesh with shared vertices (for export)."""
    _check_volume(volume)
    ids = np.arange(volume.block_count, dtype=np.int32)
    return merge_block_meshes(_mesh_ids(volume, ids, config))
