"""Marching cubes: the generated case table, closed and consistently oriented meshes across block seams,
per-block messages, incremental re-meshing neighbourhoods, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import tsdf_reference as ref

from fusion import mesh_kernels as mk
from fusion.meshing import (
    BlockMeshes,
    MeshingConfig,
    blocks_affected_by,
    extract_mesh,
    mesh_blocks,
    mesh_blocks_by_id,
)
from fusion.volume import TsdfVolume, VolumeConfig
from stream.messages import MapUpdate, MeshBlock

VOXEL = 0.02
CENTRE = np.array([0.131, -0.067, 0.213])
RADIUS = 0.5


def _sphere_volume(weight_fn=None) -> TsdfVolume:
    """A volume holding the exact (clamped) SDF of a sphere spanning many blocks."""
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    r = range(-5, 5)
    vol.allocate(np.array([(x, y, z) for x in r for y in r for z in r]))
    keys = vol.block_keys()
    pts = (keys[:, None, :] * 8 + ref.voxel_offsets(8)[None]) * VOXEL
    d = np.linalg.norm(pts - CENTRE, axis=2) - RADIUS
    n = vol.block_count
    vol.tsdf[:n] = np.clip(d, -0.08, 0.08)
    vol.weight[:n] = 1.0 if weight_fn is None else weight_fn(pts)
    vol.color[:n] = np.clip((pts - pts.min()) * 100, 0, 255).astype(np.uint8)
    return vol


def _edges(faces: np.ndarray) -> np.ndarray:
    f = faces.astype(np.int64)
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


def test_case_table_is_complementary_and_bounded() -> None:
    assert mk.TRI_COUNT[0] == 0 and mk.TRI_COUNT[255] == 0
    assert mk.TRI_COUNT.max() <= 5
    for case in range(256):
        # a vertex on every sign-changing edge, on no other
        inside = [(case >> c) & 1 for c in range(8)]
        changing = {e for e in range(12) if inside[mk.EDGES[e, 0]] != inside[mk.EDGES[e, 1]]}
        used = {e for e in range(12) if (mk.EDGE_MASK[case] >> e) & 1}
        assert used == changing
        tris = mk.TRI_EDGES[case, : mk.TRI_COUNT[case]]
        assert set(tris.ravel().tolist()) == changing
        assert np.all(mk.TRI_EDGES[case, mk.TRI_COUNT[case] :] == -1)
        # inside and outside swapped: the same surface with the opposite orientation, except where a face
        # has alternating corner signs (its segments then cut off the other diagonal's corners)
        if _has_ambiguous_face(inside):
            continue
        other = mk.TRI_EDGES[255 - case, : mk.TRI_COUNT[255 - case]]
        flipped = {tuple(np.roll(t[::-1], -int(np.argmin(t[::-1])))) for t in tris.tolist()}
        assert flipped == {tuple(np.roll(t, -int(np.argmin(t)))) for t in other.tolist()}


def _has_ambiguous_face(inside: list[int]) -> bool:
    for axis in range(3):
        a1, a2 = [a for a in range(3) if a != axis]
        for side in (0, 1):
            c = [(side << axis) | (o1 << a1) | (o2 << a2) for o1, o2 in ((0, 0), (1, 0), (1, 1), (0, 1))]
            s = [inside[x] for x in c]
            if s[0] == s[2] and s[1] == s[3] and s[0] != s[1]:
                return True
    return False


def test_sphere_mesh_is_closed_oriented_and_accurate() -> None:
    vol = _sphere_volume()
    mesh = extract_mesh(vol)
    v = mesh.vertices.astype(np.float64)
    # every directed edge appears once and its reverse once: closed, manifold, consistently oriented
    e = _edges(mesh.faces)
    key = e[:, 0] * len(v) + e[:, 1]
    rev = e[:, 1] * len(v) + e[:, 0]
    assert len(np.unique(key)) == len(key)
    assert np.all(np.isin(key, rev))
    n_edges = len(key) // 2
    assert len(v) - n_edges + len(mesh.faces) == 2  # Euler characteristic of a sphere
    # outward normals (the TSDF is positive outside)
    f = mesh.faces
    normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert np.all(np.einsum("ij,ij->i", normal, v[f].mean(axis=1) - CENTRE) > 0)
    # exact SDF in: vertices on the sphere to well under a voxel (linear interpolation of a curved SDF)
    assert np.abs(np.linalg.norm(v - CENTRE, axis=1) - RADIUS).max() < 0.02 * VOXEL
    normals = mesh.vertex_normals()
    radial = (v - CENTRE) / np.linalg.norm(v - CENTRE, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals, radial).min() > 0.99
    # no duplicated positions after merging seams
    assert len(np.unique(mesh.vertices, axis=0)) == len(v)


def test_unobserved_voxels_are_not_meshed() -> None:
    vol = _sphere_volume(lambda p: (p[..., 0] < CENTRE[0]).astype(np.float32))  # observed half
    mesh = extract_mesh(vol)
    assert mesh.vertices[:, 0].max() <= CENTRE[0]
    assert len(mesh.faces) > 1000
    # a stricter weight threshold removes everything (weights are 1)
    assert len(extract_mesh(vol, MeshingConfig(min_weight=2.0)).faces) == 0


def test_block_meshes_are_valid_messages_and_cover_the_whole_mesh() -> None:
    vol = _sphere_volume()
    meshes = mesh_blocks(vol, vol.block_keys())
    assert isinstance(meshes, BlockMeshes) and len(meshes) == vol.block_count
    msgs = meshes.to_messages(skip_empty=True)
    assert all(isinstance(m, MeshBlock) for m in msgs)
    assert 0 < len(msgs) < vol.block_count
    assert sum(len(m.faces) for m in msgs) == len(extract_mesh(vol).faces)
    # vertices of a block's mesh lie in the block's cubes (block box + one voxel on the upper sides)
    for m in msgs[:50]:
        lo = np.array(m.key) * 8 * VOXEL
        assert np.all(m.vertices >= lo - 1e-6) and np.all(m.vertices <= lo + 8 * VOXEL + 1e-6)
    # round trip through the map topic wire format
    update = MapUpdate(map_seq=1, stamp_ns=0, frame_id=0, blocks=msgs[:20], voxel_size_m=VOXEL)
    back = MapUpdate.decode(update.encode())
    assert all(a.same_as(b) for a, b in zip(back.blocks, msgs[:20], strict=True))


def test_unallocated_keys_give_empty_meshes() -> None:
    vol = _sphere_volume()
    meshes = mesh_blocks(vol, np.array([[100, 100, 100], [0, 0, 0]]))
    assert meshes.block(0).vertices.shape == (0, 3) and meshes.block(0).faces.shape == (0, 3)
    assert meshes.block(0).key == (100, 100, 100)
    assert meshes.block(1).key == (0, 0, 0)


def test_blocks_affected_by_adds_the_lower_neighbours() -> None:
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    r = range(-1, 2)
    vol.allocate(np.array([(x, y, z) for x in r for y in r for z in r]))
    got = {tuple(k) for k in blocks_affected_by(vol, np.array([[0, 0, 0]])).tolist()}
    assert got == {(-dx, -dy, -dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)}
    got = {tuple(k) for k in blocks_affected_by(vol, np.array([[-1, -1, -1]])).tolist()}
    assert got == {(-1, -1, -1)}  # its lower neighbours are not allocated


def test_mesh_input_checks() -> None:
    vol = _sphere_volume()
    with pytest.raises(ValueError, match="block ids must lie"):
        mesh_blocks_by_id(vol, np.array([vol.block_count]))
    with pytest.raises(ValueError, match="1-D integer"):
        mesh_blocks_by_id(vol, np.array([0.5]))
    with pytest.raises(ValueError, match=r"\(N, 3\) integer"):
        mesh_blocks(vol, np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="TsdfVolume"):
        extract_mesh(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_weight"):
        MeshingConfig(min_weight=0.0)
