"""Raycast of an exact planar TSDF: trilinear interpolation of a linear field is exact, so depth, normal and
colour have closed-form truth (tests the hit refinement, including cells that straddle block boundaries).

Scene: camera at the origin looking along +z (T_W_C = identity), plane m . p = d with unit m tilted off
the optical axis, TSDF f(p) = d - m . p (metres, positive towards the camera) written into every voxel
within 4 voxels of the plane (weight 1), other voxels of the allocated blocks unobserved (weight 0).
Voxel colours are a distinct pattern of the voxel index.

Tolerances: depth 0.1 mm (float32 arithmetic only), normal components 1e-3, colour of the voxel nearest to
the true hit point in >= 99 % of pixels (the rest: hit points within rounding of a voxel boundary).
"""

from __future__ import annotations

import numpy as np

from fusion.raycast import RaycastConfig, raycast
from fusion.volume import TsdfVolume, VolumeConfig
from stream.messages import Intrinsics

VOXEL_M = 0.02
PLANE_M = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
PLANE_D = 1.0
K = Intrinsics(160, 120, 150.0, 150.0, 79.5, 59.5)


def _voxel_color(idx: np.ndarray) -> np.ndarray:
    """(N, 3) int voxel indices -> (N, 3) uint8 pattern colour."""
    return np.stack([(idx[:, 0] * 37) % 256, (idx[:, 1] * 53) % 256, (idx[:, 2] * 71) % 256], axis=1).astype(np.uint8)


def _plane_volume() -> TsdfVolume:
    cfg = VolumeConfig(voxel_size_m=VOXEL_M)
    bs = cfg.block_size_vox
    rng = np.arange(-6, 6)
    keys = np.stack(np.meshgrid(rng, rng, np.arange(4, 11), indexing="ij"), axis=-1).reshape(-1, 3)
    lin = np.arange(bs**3)
    local = np.stack([lin % bs, (lin // bs) % bs, lin // (bs * bs)], axis=1)  # voxel index = x + B (y + B z)
    idx = (keys[:, None, :] * bs + local[None, :, :]).reshape(-1, 3)
    f = PLANE_D - (idx * VOXEL_M) @ PLANE_M
    n = keys.shape[0]
    tsdf = np.clip(f, -4 * VOXEL_M, 4 * VOXEL_M).astype(np.float32).reshape(n, -1)
    weight = (np.abs(f) < 4 * VOXEL_M).astype(np.float32).reshape(n, -1)
    color = _voxel_color(idx).reshape(n, -1, 3)
    return TsdfVolume.from_blocks(cfg, keys, tsdf, weight, color)


def test_raycast_of_plane_is_exact() -> None:
    vol = _plane_volume()
    res = raycast(vol, np.eye(4), K, RaycastConfig(max_depth_m=3.0))
    v, u = np.mgrid[0 : K.height_px, 0 : K.width_px]
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(u.shape)], axis=-1)  # (H, W, 3), z = 1
    depth_true = PLANE_D / (rays @ PLANE_M)
    valid = res.valid
    assert valid.mean() > 0.99
    assert np.abs(res.depth_m[valid] - depth_true[valid]).max() < 1e-4
    assert np.abs(res.normals_C[valid] + PLANE_M[None, :]).max() < 1e-3  # towards free space: -m
    hit = rays[valid] * depth_true[valid][:, None]
    expected = _voxel_color(np.floor(hit / VOXEL_M + 0.5).astype(int))
    assert np.all(res.color[valid] == expected, axis=1).mean() >= 0.99
