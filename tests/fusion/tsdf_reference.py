"""Plain numpy reference implementations of the fusion kernels (slow, obvious, float64).

They read the volume's arrays but share no code with the numba kernels beyond the documented data layout:
voxel (ix, iy, iz) of block key k sits at world ``(k * B + (ix, iy, iz)) * voxel_size`` and is stored at
index ``ix + B * (iy + B * iz)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.messages import Intrinsics


def block_dict(keys: np.ndarray) -> dict[tuple[int, int, int], int]:
    return {(int(k[0]), int(k[1]), int(k[2])): i for i, k in enumerate(keys)}


def voxel_offsets(b: int) -> np.ndarray:
    """(B^3, 3) local voxel coordinates in storage order."""
    lin = np.arange(b**3)
    return np.stack([lin % b, (lin // b) % b, lin // (b * b)], axis=1)


def band_keys(
    depth: np.ndarray, K: Intrinsics, T_W_C: np.ndarray, trunc_m: float, n_half: int, min_depth: float,
    max_depth: float, block_m: float, stride: int,
) -> np.ndarray:
    """Unique (M, 3) block keys containing the band samples ``d + k * trunc / n_half``, k = -n_half..n_half."""
    v, u = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
    d = depth[v, u].astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = (d >= min_depth) & (d <= max_depth)
    u, v, d = u[ok], v[ok], d[ok]
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(d)], axis=1) @ T_W_C[:3, :3].T
    keys = []
    for k in range(-n_half, n_half + 1):
        z = d + k * trunc_m / n_half
        pos = z > 0
        p = T_W_C[:3, 3] + rays[pos] * z[pos, None]
        keys.append(np.floor(p / block_m).astype(np.int64))
    return np.unique(np.concatenate(keys), axis=0)


@dataclass
class IntegrateRef:
    tsdf: np.ndarray
    weight: np.ndarray
    color: np.ndarray
    tie: np.ndarray
    """(M, B^3) bool: voxels whose outcome sits on a rounding/threshold boundary (within 1e-3 px / 1e-5 m),
    where float32 and float64 arithmetic may legitimately disagree."""


def integrate(
    keys: np.ndarray, tsdf: np.ndarray, weight: np.ndarray, color: np.ndarray, depth: np.ndarray,
    rgb: np.ndarray | None, K: Intrinsics, T_W_C: np.ndarray, voxel_m: float, b: int, trunc_m: float,
    min_depth: float, max_depth: float, max_weight: float,
) -> IntegrateRef:
    """Projective TSDF update of blocks ``keys`` (M, 3); tsdf/weight (M, B^3), color (M, B^3, 3) are the old values."""
    tsdf = tsdf.astype(np.float64).copy()
    weight = weight.astype(np.float64).copy()
    color = color.astype(np.float64).copy()
    g = (keys[:, None, :].astype(np.float64) * b + voxel_offsets(b)[None]) * voxel_m  # (M, V, 3)
    R_CW = T_W_C[:3, :3].T
    pc = (g - T_W_C[:3, 3]) @ R_CW.T
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K.fx * pc[..., 0] / z + K.cx + 0.5
        v = K.fy * pc[..., 1] / z + K.cy + 0.5
    h, w = depth.shape
    inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    ui = np.where(inside, np.floor(np.where(inside, u, 0)), 0).astype(np.int64)
    vi = np.where(inside, np.floor(np.where(inside, v, 0)), 0).astype(np.int64)
    d = depth[vi, ui].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = inside & (d >= min_depth) & (d <= max_depth)
    sdf = d - z
    update = valid & (sdf >= -trunc_m)
    near = sdf < trunc_m
    obs = np.minimum(sdf, trunc_m)
    w_new = weight + 1.0
    tsdf = np.where(update, (tsdf * weight + obs) / w_new, tsdf)
    if rgb is not None:
        c_obs = rgb[vi, ui].astype(np.float64)
        mix = np.floor((color * weight[..., None] + c_obs) / w_new[..., None] + 0.5)
        color = np.where((update & near)[..., None], mix, color)
    weight = np.where(update, np.minimum(w_new, max_weight), weight)

    def near_int(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.abs(x - np.round(x)) < 1e-3

    tie = (inside & (near_int(u) | near_int(v))) | (np.abs(np.abs(sdf) - trunc_m) < 1e-5)
    return IntegrateRef(tsdf.astype(np.float32), weight.astype(np.float32), color.astype(np.uint8), tie)


def gather(
    blocks: dict[tuple[int, int, int], int], tsdf: np.ndarray, weight: np.ndarray, b: int, voxels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tsdf, weight, found) of integer voxel coordinates (N, 3) (weight 0 / found False if unallocated)."""
    bk = np.floor_divide(voxels, b)
    loc = voxels - bk * b
    lin = loc[:, 0] + b * (loc[:, 1] + b * loc[:, 2])
    ids = np.array([blocks.get((int(k[0]), int(k[1]), int(k[2])), -1) for k in bk], dtype=np.int64)
    found = ids >= 0
    t = np.zeros(len(voxels))
    wt = np.zeros(len(voxels))
    t[found] = tsdf[ids[found], lin[found]]
    wt[found] = weight[ids[found], lin[found]]
    return t, wt, found


def mesh_vertices(
    keys: np.ndarray, all_keys: np.ndarray, tsdf: np.ndarray, weight: np.ndarray, b: int, voxel_m: float,
    min_weight: float,
) -> np.ndarray:
    """Sorted (V, 3) positions of the marching-cubes vertices of blocks ``keys``: one per voxel edge with a
    sign change that belongs to a cube (lowest corner in the block) whose 8 corners are all observed."""
    blocks = block_dict(all_keys)
    out = []
    corners = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
    edges = [(c, c | (1 << a), a) for a in range(3) for c in range(8) if not (c >> a) & 1]
    for key in keys:
        base = key * b + voxel_offsets(b)  # cube lowest corners (B^3, 3)
        vals = np.zeros((len(base), 8))
        obs = np.ones(len(base), bool)
        for c in range(8):
            t, wt, _found = gather(blocks, tsdf, weight, b, base + corners[c])
            vals[:, c] = t
            obs &= wt >= min_weight
        seen: dict[tuple[int, int, int, int], np.ndarray] = {}
        for c0, c1, axis in edges:
            f0, f1 = vals[:, c0], vals[:, c1]
            cross = obs & ((f0 < 0) != (f1 < 0))
            for i in np.nonzero(cross)[0]:
                p0 = base[i] + corners[c0]
                edge_key = (int(p0[0]), int(p0[1]), int(p0[2]), axis)
                if edge_key in seen:
                    continue
                t = f0[i] / (f0[i] - f1[i])
                pos = p0.astype(np.float64)
                pos[axis] += t
                seen[edge_key] = pos * voxel_m
        out.extend(seen.values())
    if not out:
        return np.zeros((0, 3))
    arr = np.array(out)
    return arr[np.lexsort(arr.T[::-1])]


def trilinear(
    all_keys: np.ndarray, tsdf: np.ndarray, weight: np.ndarray, b: int, voxel_m: float, points: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear TSDF (N,) at world points (N, 3) and whether all 8 corners were observed (N,) bool."""
    blocks = block_dict(all_keys)
    g = np.asarray(points, np.float64) / voxel_m
    g0 = np.floor(g).astype(np.int64)
    a = g - g0
    f = np.zeros(len(g))
    ok = np.ones(len(g), bool)
    for c in range(8):
        off = np.array([c & 1, (c >> 1) & 1, (c >> 2) & 1])
        t, wt, _found = gather(blocks, tsdf, weight, b, g0 + off)
        wgt = np.prod(np.where(off, a, 1.0 - a), axis=1)
        f += wgt * t
        ok &= wt > 0
    return f, ok
