"""The raycasting kernels against plain numpy: the tile ranges of block_range_map against a per-voxel splat,
its dense block table against the hash map, the march with and without the table, and a view too large for
the table.

Scene: the synthetic room of tests/fusion/tsdf_scene.py fused at 2 cm from 12 poses at 160x120, viewed from
unseen poses at 160x120. The numpy reference splats every surface voxel (observed, |tsdf| < 2 voxels) on
its own, with the footprint the kernel documents (1 voxel + 1 px), over the blocks that the image sees; the
kernel splats runs of them, so its near depths must never be farther (a later ray start could skip a
surface) and only somewhat nearer: on average over the tiles with surface voxels at most 4 voxels nearer
[1.9-3.0 at these poses: at 160x120 with a 70 degree field of view a run spans several tiles].
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from tsdf_scene import Scene, intrinsics, orbit_poses

from fusion import raycast_kernels as rk
from fusion.hash_kernels import lookup, pack_key
from fusion.integrator import Integrator, IntegratorConfig
from fusion.raycast import RaycastConfig, raycast
from fusion.volume import UNOBSERVED_TSDF, TsdfVolume, VolumeConfig

VOXEL = 0.02
K = intrinsics(160, 120)
TILE = 8
MIN_DEPTH = 0.1
MAX_DEPTH = 5.0


@pytest.fixture(scope="module")
def fused() -> TsdfVolume:
    scene = Scene()
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    integ = Integrator(IntegratorConfig(truncation_vox=4.0, max_depth_m=MAX_DEPTH))
    for T in orbit_poses(12):
        r = scene.render(T, K)
        integ.integrate(r.depth_m, r.color, T, K, vol)
    return vol


def _view(T_W_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R_CW = np.ascontiguousarray(T_W_C[:3, :3].T)
    return R_CW, -R_CW @ T_W_C[:3, 3]


def _range_map(vol: TsdfVolume, T_W_C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    R_CW, t_CW = _view(T_W_C)
    return rk.block_range_map(
        vol.packed_keys, vol.block_count, R_CW, t_CW, K.fx, K.fy, K.cx, K.cy, K.width_px, K.height_px, TILE,
        vol.config.block_shift, VOXEL, MIN_DEPTH, MAX_DEPTH, vol.tsdf, vol.weight, 1.0, 4,
    )


def _reference_block_near(vol: TsdfVolume, T_W_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TH, TW) nearest depth of the boxes of the blocks whose projection covers the tile (blocks with a
    corner closer than MIN_DEPTH / 2, which the kernel clips, are left out: the kernel's bound is then
    nearer), and (n,) bool: the blocks that the image does not see (no ray reads their voxels)."""
    R_CW, t_CW = _view(T_W_C)
    bm = vol.config.block_size_m
    offs = np.array([[-0.5 * VOXEL if (c >> a) & 1 == 0 else bm for a in range(3)] for c in range(8)])
    corners = (vol.block_keys()[:, None, :] * bm + offs[None]) @ R_CW.T + t_CW  # (n, 8, 3) camera frame
    z = corners[..., 2]
    n_ty, n_tx = -(-K.height_px // TILE), -(-K.width_px // TILE)
    near = np.full((n_ty, n_tx), np.inf)
    unseen = np.zeros(len(corners), bool)
    for i, (c, zc) in enumerate(zip(corners, z, strict=True)):
        if zc.max() < MIN_DEPTH or zc.min() > MAX_DEPTH:
            unseen[i] = True
            continue
        if zc.min() < MIN_DEPTH / 2:
            continue
        u = K.fx * c[:, 0] / zc + K.cx
        v = K.fy * c[:, 1] / zc + K.cy
        unseen[i] = u.max() < -0.5 or v.max() < -0.5 or u.min() > K.width_px - 0.5 or v.min() > K.height_px - 0.5
        tx0, tx1 = max(0, int(np.floor((u.min() + 0.5) / TILE))), min(n_tx - 1, int(np.floor((u.max() + 0.5) / TILE)))
        ty0, ty1 = max(0, int(np.floor((v.min() + 0.5) / TILE))), min(n_ty - 1, int(np.floor((v.max() + 0.5) / TILE)))
        if tx0 <= tx1 and ty0 <= ty1:
            win = near[ty0 : ty1 + 1, tx0 : tx1 + 1]
            np.minimum(win, zc.min(), out=win)
    return near, unseen


def _reference_surface_near(vol: TsdfVolume, T_W_C: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """(TH, TW) nearest depth of a surface voxel of a block in view whose footprint touches the tile, minus 2
    voxels (inf: none)."""
    n = vol.block_count
    bs = vol.block_size_vox
    lin = np.arange(bs**3)
    local = np.stack([lin % bs, (lin // bs) % bs, lin // (bs * bs)], axis=1)
    idx = vol.block_keys()[:, None, :] * bs + local[None]  # (n, V, 3) voxel indices
    surf = (vol.weight[:n] >= 1.0) & (np.abs(vol.tsdf[:n]) < 2 * VOXEL) & ~unseen[:, None]
    R_CW, t_CW = _view(T_W_C)
    p = idx[surf] * VOXEL @ R_CW.T + t_CW
    p = p[(p[:, 2] > MIN_DEPTH / 2)]
    u = K.fx * p[:, 0] / p[:, 2] + K.cx
    v = K.fy * p[:, 1] / p[:, 2] + K.cy
    r = VOXEL * max(K.fx, K.fy) / p[:, 2] + 1.0
    n_ty, n_tx = -(-K.height_px // TILE), -(-K.width_px // TILE)
    near = np.full((n_ty, n_tx), np.inf)
    tx0 = np.clip(np.floor((u - r + 0.5) / TILE), 0, None).astype(int)
    tx1 = np.clip(np.floor((u + r + 0.5) / TILE), None, n_tx - 1).astype(int)
    ty0 = np.clip(np.floor((v - r + 0.5) / TILE), 0, None).astype(int)
    ty1 = np.clip(np.floor((v + r + 0.5) / TILE), None, n_ty - 1).astype(int)
    for i in range(len(p)):
        if tx0[i] <= tx1[i] and ty0[i] <= ty1[i]:
            win = near[ty0[i] : ty1[i] + 1, tx0[i] : tx1[i] + 1]
            np.minimum(win, p[i, 2], out=win)
    return near - 2 * VOXEL


def test_run_tables_give_the_maximal_runs_of_every_8_bit_mask() -> None:
    for m in range(256):
        runs = [(int(rk._RUN_START[m, j]), int(rk._RUN_END[m, j])) for j in range(rk._RUN_COUNT[m])]
        bits = [(m >> k) & 1 for k in range(8)]
        rebuilt = [0] * 8
        for a, b in runs:
            assert 0 <= a < b <= 8
            assert (a == 0 or not bits[a - 1]) and (b == 8 or not bits[b])  # maximal
            rebuilt[a:b] = [1] * (b - a)
        assert rebuilt == bits
        assert [a for a, _ in runs] == sorted(a for a, _ in runs)


@pytest.fixture(scope="module", params=[4, 16])
def fused_other_blocks(request: pytest.FixtureRequest) -> TsdfVolume:
    """The scene of ``fused`` in blocks of 4 or 16 voxels: the range map walks their columns voxel by voxel
    instead of using the 8-bit run tables."""
    scene = Scene()
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL, block_size_vox=request.param))
    integ = Integrator(IntegratorConfig(truncation_vox=4.0, max_depth_m=MAX_DEPTH))
    for T in orbit_poses(12)[::2]:
        r = scene.render(T, K)
        integ.integrate(r.depth_m, r.color, T, K, vol)
    return vol


def test_near_depths_of_other_block_sizes_are_conservative_and_tight(fused_other_blocks: TsdfVolume) -> None:
    # runs along a column of a 16-voxel block span more depth, so the tiles they cover get nearer bounds
    _check_near_depths(fused_other_blocks, orbit_poses(24)[8],
                       max_mean_gap_vox=4.0 if fused_other_blocks.block_size_vox <= 8 else 6.0)


@pytest.mark.parametrize("pose", [1, 8, 17])
def test_near_depths_are_conservative_and_tight_against_per_voxel_splat(fused: TsdfVolume, pose: int) -> None:
    _check_near_depths(fused, orbit_poses(24)[pose])


def _check_near_depths(fused: TsdfVolume, T: np.ndarray, max_mean_gap_vox: float = 4.0) -> None:
    """The kernel's near depths are never farther than the numpy per-voxel splat's, and on average at most
    ``max_mean_gap_vox`` voxels nearer."""
    near, far, _, _ = _range_map(fused, T)
    block_near, unseen = _reference_block_near(fused, T)
    surf = _reference_surface_near(fused, T, unseen)
    has = np.isfinite(surf)
    assert has.mean() > 0.5
    # near = the larger of the nearest block and the nearest surface voxel less the margin
    ref = np.maximum(block_near, surf)
    assert np.all(near[has] <= ref[has] + 1e-5)
    gap = (ref[has] - near[has]) / VOXEL
    assert np.mean(gap) <= max_mean_gap_vox, np.mean(gap)
    assert np.all(far[has] > 0)


def test_block_table_matches_the_hash_map(fused: TsdfVolume) -> None:
    T = orbit_poses(24)[5]
    _, _, table, origin = _range_map(fused, T)
    assert table.dtype == np.int32 and table.ndim == 3 and table.size > 0
    for g in np.ndindex(*table.shape):
        b = origin + np.asarray(g)
        assert table[g] == lookup(fused.hash_keys, fused.hash_ids, pack_key(int(b[0]), int(b[1]), int(b[2])))
    # every allocated block that the image sees lies inside the table's box
    keys = fused.block_keys()
    R_CW, t_CW = _view(T)
    centre = (keys + 0.5) * fused.config.block_size_m @ R_CW.T + t_CW
    z = centre[:, 2]
    front = z > 0.3
    u = K.fx * centre[front, 0] / z[front] + K.cx
    v = K.fy * centre[front, 1] / z[front] + K.cy
    seen = keys[front][(u > 0) & (u < K.width_px - 1) & (v > 0) & (v < K.height_px - 1) & (z[front] < MAX_DEPTH)]
    assert len(seen) > 50
    assert np.all(seen >= origin) and np.all(seen < origin + np.asarray(table.shape))


def test_march_gives_the_same_images_without_the_table_and_with_the_weights_read(fused: TsdfVolume) -> None:
    """Beyond MAX_TABLE_BLOCKS the table is empty and every block id comes from the hash map; with a minimum
    weight above 1 the march reads the weights instead of taking observedness from the TSDF (at 1 both must
    agree: weights are 0 or >= 1, and the TSDF is UNOBSERVED_TSDF exactly where the weight is 0)."""
    T = orbit_poses(24)[9]
    near, far, table, origin = _range_map(fused, T)
    n = fused.block_count
    assert np.array_equal(fused.weight[:n] == 0, fused.tsdf[:n] == UNOBSERVED_TSDF)
    assert 0.05 < (fused.weight[:n] == 0).mean() < 0.95  # both kinds of voxel are marched through
    images = []
    for tab, tsdf_marks in ((table, True), (np.full((0, 0, 0), -1, np.int32), True), (table, False)):
        depth = np.empty((K.height_px, K.width_px), np.float32)
        normals = np.empty((K.height_px, K.width_px, 3), np.float32)
        color = np.empty((K.height_px, K.width_px, 3), np.uint8)
        rk.march(
            near, far, TILE, fused.tsdf, fused.weight, fused.color, fused.hash_keys, fused.hash_ids,
            fused.config.block_shift, VOXEL, np.ascontiguousarray(T[:3, :3]), np.ascontiguousarray(T[:3, 3]),
            K.fx, K.fy, K.cx, K.cy, MIN_DEPTH, MAX_DEPTH, 1.0, 0.25, depth, normals, color,
            numba.get_num_threads(), tab, origin, tsdf_marks,
        )
        images.append((depth, normals, color))
    assert (images[0][0] > 0).mean() > 0.9
    for other in images[1:]:
        for a, b in zip(images[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_views_too_large_for_the_table_use_the_hash_map() -> None:
    """1 mm voxels, a wall of blocks 0.4 m in front of the camera and one block 4.5 m away at an image
    corner: the view box would hold far more than MAX_TABLE_BLOCKS blocks, so the table is empty and the
    march looks blocks up in the hash map; the wall is still rendered at its depth."""
    voxel = 0.001
    cfg = VolumeConfig(voxel_size_m=voxel)
    bs = cfg.block_size_vox
    lin = np.arange(bs**3)
    local = np.stack([lin % bs, (lin // bs) % bs, lin // (bs * bs)], axis=1)
    wall_z_blocks = 50  # z = 0.4 m
    xy = np.arange(-3, 3)
    wall = np.stack(np.meshgrid(xy, xy, [wall_z_blocks - 1, wall_z_blocks], indexing="ij"), axis=-1).reshape(-1, 3)
    far_block = np.array([[330, 250, 562]])  # ~(2.6, 2.0, 4.5) m: inside the 70 degree view, near its corner
    keys = np.concatenate([wall, far_block])
    idx = keys[:, None, :] * bs + local[None]
    f = wall_z_blocks * bs * voxel - idx[..., 2] * voxel  # plane z = 0.4 m, positive towards the camera
    f[len(wall) :] = 0.004
    tsdf = np.clip(f, -0.004, 0.004).astype(np.float32)
    weight = np.ones(tsdf.shape, np.float32)
    color = np.zeros((*tsdf.shape, 3), np.uint8)
    vol = TsdfVolume.from_blocks(cfg, keys, tsdf, weight, color)
    k = intrinsics(160, 120)
    R_CW, t_CW = np.eye(3), np.zeros(3)
    _, _, table, _ = rk.block_range_map(
        vol.packed_keys, vol.block_count, R_CW, t_CW, k.fx, k.fy, k.cx, k.cy, k.width_px, k.height_px, TILE,
        cfg.block_shift, voxel, MIN_DEPTH, MAX_DEPTH, vol.tsdf, vol.weight, 1.0, 2,
    )
    assert table.size == 0
    res = raycast(vol, np.eye(4), k, RaycastConfig(max_depth_m=MAX_DEPTH))
    v, u = np.mgrid[0 : k.height_px, 0 : k.width_px]
    on_wall = (np.abs((u - k.cx) / k.fx * 0.4) < 0.018) & (np.abs((v - k.cy) / k.fy * 0.4) < 0.018)
    assert on_wall.sum() > 80
    np.testing.assert_allclose(res.depth_m[on_wall], 0.4, atol=1e-4)
