"""Numba kernels of TSDF raycasting: per-tile depth ranges from block projection, then ray marching.

1. :func:`block_range_map` projects the bounding box of every allocated block (clipped to the space in
   front of the camera) into the image and keeps, per ``tile x tile`` pixel tile, the nearest and
   farthest camera depth of any block covering it. Rays start at their tile's near depth, so empty space
   in front of the map costs nothing.
2. :func:`march` walks each pixel's ray (parameter ``t`` = camera depth ``z``) with nearest-voxel reads:
   unallocated blocks are skipped to their exit, unobserved voxels are stepped over one voxel at a time,
   observed voxels advance by their TSDF value (at least one voxel; an overshoot of up to a voxel lands
   in the negative band behind the surface, which is several voxels thick, so it is still detected). At
   the first change from + to - (a front face), the bracket is narrowed to half a voxel with
   nearest-voxel reads, the crossing interpolated linearly and refined by Newton steps on the
   trilinear TSDF (each at most one voxel; the TSDF is re-sampled after a step longer than
   ``newton_tol`` voxels, up to 3 times, and regula falsi takes over where Newton fails); the normal
   is the gradient of the trilinear cell at the final depth, the colour that of the cell corner nearest
   to it (where a cell corner is unobserved: no Newton step, no normal, nearest colour). Trilinear
   samples go through a one-cell cache (:func:`_sample`): re-samples inside the same cell read no voxels.
   Rays that reach their range or depth limit without a front face give depth 0.

Block coordinates use arithmetic shifts, so the block size must be a power of two (see VolumeConfig).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from fusion.hash_kernels import FASTMATH, lookup, pack_key, unpack_key


@nb.njit(cache=True, fastmath=FASTMATH)
def block_range_map(
    packed_keys: np.ndarray,
    block_count: int,
    R_CW: np.ndarray,
    t_CW: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    tile: int,
    block_size_vox: int,
    voxel_size_m: float,
    min_depth_m: float,
    max_depth_m: float,
    tsdf: np.ndarray,
    weight: np.ndarray,
    min_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile (near, far) ray range in camera depth (metres), (TH, TW) float32 each.

    far: the farthest depth of any block whose projection covers the tile (0 when none does).
    near: the nearest depth of any *surface voxel* (observed, |tsdf| < 2 voxels) whose projected footprint
    (1.5 voxel radius, +1 px) touches the tile, minus 3 voxels; tiles with no surface voxel but some
    block use the nearest block depth; +inf when no block covers the tile.
    """
    n_ty = (height + tile - 1) // tile
    n_tx = (width + tile - 1) // tile
    near = np.full((n_ty, n_tx), np.inf, np.float32)
    far = np.zeros((n_ty, n_tx), np.float32)
    bm = block_size_vox * voxel_size_m
    lo = -0.5 * voxel_size_m  # nearest-voxel reads of a block cover [origin - s/2, origin + (B - 1/2) s];
    hi = bm  # trilinear cells owned by it reach origin + B s
    z_clip = 0.5 * min_depth_m
    cam = np.empty((8, 3))
    near_surf = np.full((n_ty, n_tx), np.inf, np.float32)
    bs = block_size_vox
    nv = bs * bs * bs
    surf_band = 2.0 * voxel_size_m
    # camera-frame step of one voxel along each world axis
    sx0, sx1, sx2 = R_CW[0, 0] * voxel_size_m, R_CW[1, 0] * voxel_size_m, R_CW[2, 0] * voxel_size_m
    sy0, sy1, sy2 = R_CW[0, 1] * voxel_size_m, R_CW[1, 1] * voxel_size_m, R_CW[2, 1] * voxel_size_m
    sz0, sz1, sz2 = R_CW[0, 2] * voxel_size_m, R_CW[1, 2] * voxel_size_m, R_CW[2, 2] * voxel_size_m
    foot = 1.5 * voxel_size_m * max(fx, fy)
    surface_at_camera = False
    for b in range(block_count):
        bx, by, bz = unpack_key(packed_keys[b])
        ox = bx * bm
        oy = by * bm
        oz = bz * bm
        zmin = np.inf
        zmax = -np.inf
        for c in range(8):
            wx = ox + (hi if c & 1 else lo)
            wy = oy + (hi if (c >> 1) & 1 else lo)
            wz = oz + (hi if (c >> 2) & 1 else lo)
            for k in range(3):
                cam[c, k] = R_CW[k, 0] * wx + R_CW[k, 1] * wy + R_CW[k, 2] * wz + t_CW[k]
            zmin = min(zmin, cam[c, 2])
            zmax = max(zmax, cam[c, 2])
        if zmax < min_depth_m or zmin > max_depth_m:
            continue
        # image bounding box of the box clipped to z >= z_clip: corners in front of the clipping plane
        # plus the points where box edges cross it
        umin = np.inf
        umax = -np.inf
        vmin = np.inf
        vmax = -np.inf
        for c in range(8):
            if cam[c, 2] >= z_clip:
                u = fx * cam[c, 0] / cam[c, 2] + cx
                v = fy * cam[c, 1] / cam[c, 2] + cy
                umin = min(umin, u)
                umax = max(umax, u)
                vmin = min(vmin, v)
                vmax = max(vmax, v)
        if zmin < z_clip:
            for c0 in range(8):
                for axis in range(3):
                    c1 = c0 | (1 << axis)
                    if c1 == c0 or (cam[c0, 2] < z_clip) == (cam[c1, 2] < z_clip):
                        continue
                    a = (z_clip - cam[c0, 2]) / (cam[c1, 2] - cam[c0, 2])
                    u = fx * (cam[c0, 0] + a * (cam[c1, 0] - cam[c0, 0])) / z_clip + cx
                    v = fy * (cam[c0, 1] + a * (cam[c1, 1] - cam[c0, 1])) / z_clip + cy
                    umin = min(umin, u)
                    umax = max(umax, u)
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
            zmin = z_clip
        if umax < -0.5 or vmax < -0.5 or umin > width - 0.5 or vmin > height - 0.5:
            continue
        tx0 = max(0, math.floor((umin + 0.5) / tile))
        tx1 = min(n_tx - 1, math.floor((umax + 0.5) / tile))
        ty0 = max(0, math.floor((vmin + 0.5) / tile))
        ty1 = min(n_ty - 1, math.floor((vmax + 0.5) / tile))
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                if zmin < near[ty, tx]:
                    near[ty, tx] = zmin
                if zmax > far[ty, tx]:
                    far[ty, tx] = zmax
        # splat the block's surface voxels
        c0x = R_CW[0, 0] * ox + R_CW[0, 1] * oy + R_CW[0, 2] * oz + t_CW[0]
        c0y = R_CW[1, 0] * ox + R_CW[1, 1] * oy + R_CW[1, 2] * oz + t_CW[1]
        c0z = R_CW[2, 0] * ox + R_CW[2, 1] * oy + R_CW[2, 2] * oz + t_CW[2]
        for lin in range(nv):
            if weight[b, lin] < min_weight or abs(tsdf[b, lin]) >= surf_band:
                continue
            ix = lin % bs
            iy = (lin // bs) % bs
            iz = lin // (bs * bs)
            x = c0x + ix * sx0 + iy * sy0 + iz * sz0
            y = c0y + ix * sx1 + iy * sy1 + iz * sz1
            z = c0z + ix * sx2 + iy * sy2 + iz * sz2
            if z < z_clip:
                surface_at_camera = True
                continue
            u = fx * x / z + cx
            v = fy * y / z + cy
            r = foot / z + 1.0
            if u + r < -0.5 or v + r < -0.5 or u - r > width - 0.5 or v - r > height - 0.5:
                continue
            sx_0 = max(0, math.floor((u - r + 0.5) / tile))
            sx_1 = min(n_tx - 1, math.floor((u + r + 0.5) / tile))
            sy_0 = max(0, math.floor((v - r + 0.5) / tile))
            sy_1 = min(n_ty - 1, math.floor((v + r + 0.5) / tile))
            for ty in range(sy_0, sy_1 + 1):
                for tx in range(sx_0, sx_1 + 1):
                    if z < near_surf[ty, tx]:
                        near_surf[ty, tx] = z
    margin = 3.0 * voxel_size_m
    if surface_at_camera:  # a surface voxel touches the camera: no tile can skip its near range
        return near, far
    for ty in range(n_ty):
        for tx in range(n_tx):
            if near_surf[ty, tx] < np.inf:
                near[ty, tx] = max(near[ty, tx], near_surf[ty, tx] - margin)
    return near, far


@nb.njit(cache=True, fastmath=FASTMATH, inline="always")
def _sample(
    gx: float, gy: float, gz: float,
    tsdf: np.ndarray, weight: np.ndarray, hash_keys: np.ndarray, hash_ids: np.ndarray, shift: int,
    min_weight: float, cell: np.ndarray, vals: np.ndarray, corner_id: np.ndarray, corner_lin: np.ndarray,
    out: np.ndarray, hint_key: np.int64, hint_id: np.int32,
) -> bool:
    """Trilinear TSDF at voxel coordinates (gx, gy, gz), through a one-cell cache.

    The cache is ``cell`` (7,) int64: lower corner (x0, y0, z0) of the last cell loaded with all 8
    corners observed, a flag (1 = valid), and the lower corner of the last cell found to have an
    unobserved or unallocated corner; ``vals`` (8,) float64 its corner TSDF values, ``corner_id`` (16,)
    int32 and ``corner_lin`` (16,) int64 where each corner lives (block id, voxel index; the second
    halves are scratch). A cell that
    fails to load leaves the cache of the last good cell untouched. ``hint_key``/``hint_id`` is a block
    the caller already looked up (saves a hash lookup when the cell lies in it).

    Writes (f, df/dgx, df/dgy, df/dgz) to ``out[0:4]`` and returns True, or returns False (``out``
    untouched) when any of the 8 cell corners is unallocated or has weight < ``min_weight``.
    """
    x0 = math.floor(gx)
    y0 = math.floor(gy)
    z0 = math.floor(gz)
    if not (cell[3] == 1 and x0 == cell[0] and y0 == cell[1] and z0 == cell[2]):
        if x0 == cell[4] and y0 == cell[5] and z0 == cell[6]:
            return False
        bs = 1 << shift
        m = bs - 1
        # the cell lies in one block unless its lower corner is on the block's last voxel along some axis
        single = (x0 & m) < m and (y0 & m) < m and (z0 & m) < m
        b0 = np.int32(-1)
        if single:
            key0 = pack_key(x0 >> shift, y0 >> shift, z0 >> shift)
            b0 = hint_id if key0 == hint_key else lookup(hash_keys, hash_ids, key0)
            if b0 < 0:
                cell[4] = x0
                cell[5] = y0
                cell[6] = z0
                return False
            base = (x0 & m) + bs * ((y0 & m) + bs * (z0 & m))
            for c in range(8):
                lin = base + (c & 1) + bs * (((c >> 1) & 1) + bs * ((c >> 2) & 1))
                if weight[b0, lin] < min_weight:
                    cell[4] = x0
                    cell[5] = y0
                    cell[6] = z0
                    return False
            cell[3] = 1
            for c in range(8):
                lin = base + (c & 1) + bs * (((c >> 1) & 1) + bs * ((c >> 2) & 1))
                vals[c] = tsdf[b0, lin]
                corner_id[c] = b0
                corner_lin[c] = lin
        else:
            last_key = np.int64(-1)
            last_id = np.int32(-1)
            for c in range(8):
                vx = x0 + (c & 1)
                vy = y0 + ((c >> 1) & 1)
                vz = z0 + ((c >> 2) & 1)
                key = pack_key(vx >> shift, vy >> shift, vz >> shift)
                if key != last_key:
                    last_key = key
                    last_id = hint_id if key == hint_key else lookup(hash_keys, hash_ids, key)
                lin = (vx & m) + bs * ((vy & m) + bs * (vz & m))
                if last_id < 0 or weight[last_id, lin] < min_weight:
                    cell[4] = x0
                    cell[5] = y0
                    cell[6] = z0
                    return False
                corner_id[8 + c] = last_id  # scratch half: the cached cell survives a failed load
                corner_lin[8 + c] = lin
            cell[3] = 1
            for c in range(8):
                corner_id[c] = corner_id[8 + c]
                corner_lin[c] = corner_lin[8 + c]
                vals[c] = tsdf[corner_id[c], corner_lin[c]]
        cell[0] = x0
        cell[1] = y0
        cell[2] = z0
    _eval_cell(gx - x0, gy - y0, gz - z0, vals, out)
    return True


@nb.njit(cache=True, fastmath=FASTMATH, inline="always")
def _eval_cell(ax: float, ay: float, az: float, vals: np.ndarray, out: np.ndarray) -> None:
    """Trilinear value and gradient at cell fractions (ax, ay, az) of corner values ``vals`` (8,) (corner c
    at offset (c & 1, c >> 1 & 1, c >> 2 & 1)) -> ``out[0:4]``."""
    v0, v1, v2, v3, v4, v5, v6, v7 = vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7]
    bx_ = 1.0 - ax
    by_ = 1.0 - ay
    bz_ = 1.0 - az
    out[0] = ((v0 * bx_ + v1 * ax) * by_ + (v2 * bx_ + v3 * ax) * ay) * bz_ + (
        (v4 * bx_ + v5 * ax) * by_ + (v6 * bx_ + v7 * ax) * ay
    ) * az
    out[1] = ((v1 - v0) * by_ + (v3 - v2) * ay) * bz_ + ((v5 - v4) * by_ + (v7 - v6) * ay) * az
    out[2] = ((v2 - v0) * bx_ + (v3 - v1) * ax) * bz_ + ((v6 - v4) * bx_ + (v7 - v5) * ax) * az
    out[3] = ((v4 - v0) * bx_ + (v5 - v1) * ax) * by_ + ((v6 - v2) * bx_ + (v7 - v3) * ax) * ay


@nb.njit(cache=True, fastmath=FASTMATH, inline="always")
def _nearest(
    gx: float, gy: float, gz: float, tsdf: np.ndarray, weight: np.ndarray, hash_keys: np.ndarray,
    hash_ids: np.ndarray, shift: int, min_weight: float,
) -> tuple[bool, float, int, int]:
    """(observed, tsdf, block id, voxel index) of the voxel nearest to voxel coordinates (gx, gy, gz)."""
    bs = 1 << shift
    m = bs - 1
    ix = math.floor(gx + 0.5)
    iy = math.floor(gy + 0.5)
    iz = math.floor(gz + 0.5)
    b = lookup(hash_keys, hash_ids, pack_key(ix >> shift, iy >> shift, iz >> shift))
    lin = (ix & m) + bs * ((iy & m) + bs * (iz & m))
    if b < 0 or weight[b, lin] < min_weight:
        return False, 0.0, b, lin
    return True, tsdf[b, lin], b, lin


@nb.njit(cache=True, fastmath=FASTMATH)
def _regula_falsi(
    t_a: float, t_b: float, t_guess: float, ox: float, oy: float, oz: float, dx: float, dy: float, dz: float,
    tsdf: np.ndarray, weight: np.ndarray, hash_keys: np.ndarray, hash_ids: np.ndarray, shift: int,
    min_weight: float, cell: np.ndarray, vals: np.ndarray, corner_id: np.ndarray, corner_lin: np.ndarray,
    out: np.ndarray, hint_key: np.int64, hint_id: np.int32,
) -> float:
    """Zero of the trilinear TSDF from the bracket [t_a, t_b] (extended forward up to 4 times its width while
    the far end is still positive) by regula falsi (3 iterations); ``out`` and the cell cache (see
    :func:`_sample`) are left holding the last successful trilinear sample. Returns ``t_guess`` when the
    bracket ends are unobserved or do not change sign."""
    ok_a = _sample(ox + dx * t_a, oy + dy * t_a, oz + dz * t_a, tsdf, weight, hash_keys, hash_ids, shift,
                   min_weight, cell, vals, corner_id, corner_lin, out, hint_key, hint_id)
    f_a = out[0]
    # the nearest-voxel bracket may end where the trilinear TSDF is still positive: extend it
    step = t_b - t_a
    ok_b = False
    f_b = 0.0
    for _ in range(4):
        ok_b = _sample(ox + dx * t_b, oy + dy * t_b, oz + dz * t_b, tsdf, weight, hash_keys, hash_ids, shift,
                       min_weight, cell, vals, corner_id, corner_lin, out, hint_key, hint_id)
        f_b = out[0]
        if not ok_b or f_b < 0.0:
            break
        t_a = t_b
        f_a = f_b
        t_b += step
    t = t_guess
    if ok_a and ok_b and f_a >= 0.0 > f_b:
        for _ in range(3):
            t = t_a + (t_b - t_a) * f_a / (f_a - f_b)
            if not _sample(ox + dx * t, oy + dy * t, oz + dz * t, tsdf, weight, hash_keys, hash_ids, shift,
                           min_weight, cell, vals, corner_id, corner_lin, out, hint_key, hint_id):
                break
            if out[0] >= 0.0:
                t_a = t
                f_a = out[0]
            else:
                t_b = t
                f_b = out[0]
        return t
    _sample(ox + dx * t, oy + dy * t, oz + dz * t, tsdf, weight, hash_keys, hash_ids, shift, min_weight, cell,
            vals, corner_id, corner_lin, out, hint_key, hint_id)
    return t


@nb.njit(parallel=True, cache=True, fastmath=FASTMATH)
def march(
    near: np.ndarray,
    far: np.ndarray,
    tile: int,
    tsdf: np.ndarray,
    weight: np.ndarray,
    color: np.ndarray,
    hash_keys: np.ndarray,
    hash_ids: np.ndarray,
    block_shift: int,
    voxel_size_m: float,
    R_WC: np.ndarray,
    t_WC: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    min_depth_m: float,
    max_depth_m: float,
    min_weight: float,
    newton_tol: float,
    depth_out: np.ndarray,
    normal_out: np.ndarray,
    color_out: np.ndarray,
) -> None:
    """Raycast every pixel: depth_out (H, W) float32 (0 = no surface), normal_out (H, W, 3) float32 (unit,
    camera frame, towards free space; 0 where no surface), color_out (H, W, 3) uint8."""
    h, w = depth_out.shape
    shift = block_shift
    bs = 1 << shift
    m = bs - 1
    s = voxel_size_m
    inv_s = 1.0 / s
    ox = t_WC[0] * inv_s
    oy = t_WC[1] * inv_s
    oz = t_WC[2] * inv_s
    for v in nb.prange(h):
        out = np.zeros(4, np.float64)
        vals = np.zeros(8, np.float64)
        cell = np.zeros(7, np.int64)
        corner_id = np.zeros(16, np.int32)
        corner_lin = np.zeros(16, np.int64)
        ty = v // tile
        yr = (v - cy) / fy
        for u in range(w):
            depth_out[v, u] = 0.0
            for k in range(3):
                normal_out[v, u, k] = 0.0
                color_out[v, u, k] = 0
            t0 = max(near[ty, u // tile], min_depth_m)
            t1 = min(far[ty, u // tile], max_depth_m)
            if not t0 < t1:
                continue
            xr = (u - cx) / fx
            # ray direction in voxel units per unit of t (camera depth)
            dx = (R_WC[0, 0] * xr + R_WC[0, 1] * yr + R_WC[0, 2]) * inv_s
            dy = (R_WC[1, 0] * xr + R_WC[1, 1] * yr + R_WC[1, 2]) * inv_s
            dz = (R_WC[2, 0] * xr + R_WC[2, 1] * yr + R_WC[2, 2]) * inv_s
            dt_voxel = 1.0 / math.sqrt(dx * dx + dy * dy + dz * dz)  # t advance of one voxel along the ray
            t = t0
            have_prev = False
            prev_f = 0.0
            prev_t = 0.0
            cached_key = np.int64(-1)
            cached_id = np.int32(-1)
            hit = False
            long_step = False
            while t <= t1:
                ix = math.floor(ox + dx * t + 0.5)
                iy = math.floor(oy + dy * t + 0.5)
                iz = math.floor(oz + dz * t + 0.5)
                bx = ix >> shift
                by = iy >> shift
                bz = iz >> shift
                key = pack_key(bx, by, bz)
                if key != cached_key:
                    cached_key = key
                    cached_id = lookup(hash_keys, hash_ids, key)
                lin = (ix & m) + bs * ((iy & m) + bs * (iz & m))
                left_band = cached_id < 0 or weight[cached_id, lin] < min_weight
                if long_step and left_band:
                    # a long step left the observed band: go back and walk it voxel by voxel
                    t = prev_t + dt_voxel
                    long_step = False
                    continue
                long_step = False
                if cached_id < 0:
                    # jump to where the nearest voxel leaves this block
                    t_exit = np.inf
                    if dx > 0:
                        t_exit = min(t_exit, ((bx + 1) * bs - 0.5 - ox) / dx)
                    elif dx < 0:
                        t_exit = min(t_exit, (bx * bs - 0.5 - ox) / dx)
                    if dy > 0:
                        t_exit = min(t_exit, ((by + 1) * bs - 0.5 - oy) / dy)
                    elif dy < 0:
                        t_exit = min(t_exit, (by * bs - 0.5 - oy) / dy)
                    if dz > 0:
                        t_exit = min(t_exit, ((bz + 1) * bs - 0.5 - oz) / dz)
                    elif dz < 0:
                        t_exit = min(t_exit, (bz * bs - 0.5 - oz) / dz)
                    t = max(t_exit, t) + 1e-3 * dt_voxel
                    have_prev = False
                    continue
                if weight[cached_id, lin] < min_weight:
                    # unobserved: a gap of up to two voxels between + and - still counts as a crossing
                    if t - prev_t > 2.5 * dt_voxel:
                        have_prev = False
                    t += dt_voxel
                    continue
                f = tsdf[cached_id, lin] * inv_s  # voxels
                if have_prev and prev_f >= 0.0 and f < 0.0:
                    hit = True
                    break
                have_prev = True
                prev_f = f
                prev_t = t
                long_step = f > 1.5
                t += max(f, 1.0) * dt_voxel
            if not hit:
                continue
            # narrow the bracket to half a voxel with nearest-voxel reads (the sphere-tracing step may
            # have jumped several voxels), interpolate linearly, then one Newton step on the trilinear TSDF
            f_a = prev_f
            f_b = f
            t_a = prev_t
            t_b = t
            tt = prev_t + 0.5 * dt_voxel if t - prev_t > 1.01 * dt_voxel else t_b
            while tt < t_b:
                ix = math.floor(ox + dx * tt + 0.5)
                iy = math.floor(oy + dy * tt + 0.5)
                iz = math.floor(oz + dz * tt + 0.5)
                key = pack_key(ix >> shift, iy >> shift, iz >> shift)
                if key != cached_key:
                    cached_key = key
                    cached_id = lookup(hash_keys, hash_ids, key)
                lin = (ix & m) + bs * ((iy & m) + bs * (iz & m))
                if cached_id >= 0 and weight[cached_id, lin] >= min_weight:
                    fv = tsdf[cached_id, lin] * inv_s
                    if fv < 0.0:
                        t_b = tt
                        f_b = fv
                        break
                    t_a = tt
                    f_a = fv
                tt += 0.5 * dt_voxel
            t_hit = t_a + (t_b - t_a) * f_a / (f_a - f_b)
            cell[3] = 0
            cell[4] = -(1 << 40)  # no failed cell yet
            c_r = 0.0
            c_g = 0.0
            c_b = 0.0
            gxw = 0.0
            gyw = 0.0
            gzw = 0.0
            if _sample(ox + dx * t_hit, oy + dy * t_hit, oz + dz * t_hit, tsdf, weight, hash_keys, hash_ids, shift,
                       min_weight, cell, vals, corner_id, corner_lin, out, cached_key, cached_id):
                newton_ok = True
                for _ in range(3):  # Newton on the trilinear TSDF, re-sampled while steps exceed newton_tol
                    slope = (out[1] * dx + out[2] * dy + out[3] * dz) * inv_s  # dF/dt, F in voxels
                    step = -(out[0] * inv_s) / slope if slope < 0.0 else np.inf
                    if abs(step) > dt_voxel:
                        newton_ok = False
                        break
                    t_hit += step
                    if abs(step) <= newton_tol * dt_voxel or not _sample(
                        ox + dx * t_hit, oy + dy * t_hit, oz + dz * t_hit, tsdf, weight, hash_keys, hash_ids,
                        shift, min_weight, cell, vals, corner_id, corner_lin, out, cached_key, cached_id,
                    ):
                        break
                if not newton_ok and abs(out[0]) > 0.05 * s:
                    # the TSDF is far from linear here (e.g. near a silhouette): regula falsi on the
                    # trilinear values of the half-voxel bracket
                    t_hit = _regula_falsi(t_a, t_b, t_hit, ox, oy, oz, dx, dy, dz, tsdf, weight, hash_keys,
                                          hash_ids, shift, min_weight, cell, vals, corner_id, corner_lin, out,
                                          cached_key, cached_id)
                # normal and colour from the last observed cell, at the final point clamped into it
                ax = min(max(ox + dx * t_hit - cell[0], 0.0), 1.0)
                ay = min(max(oy + dy * t_hit - cell[1], 0.0), 1.0)
                az = min(max(oz + dz * t_hit - cell[2], 0.0), 1.0)
                _eval_cell(ax, ay, az, vals, out)
                gxw = out[1]
                gyw = out[2]
                gzw = out[3]
                c_near = (1 if ax >= 0.5 else 0) | (2 if ay >= 0.5 else 0) | (4 if az >= 0.5 else 0)
                bb = corner_id[c_near]
                ll = corner_lin[c_near]
                c_r = color[bb, ll, 0]
                c_g = color[bb, ll, 1]
                c_b = color[bb, ll, 2]
            else:
                # a cell corner is unobserved: keep the interpolated depth, colour of the nearest voxel,
                # no normal
                _obs, fv, bb, ll = _nearest(ox + dx * t_hit, oy + dy * t_hit, oz + dz * t_hit, tsdf, weight,
                                           hash_keys, hash_ids, shift, 0.0)
                if bb >= 0:
                    c_r = color[bb, ll, 0]
                    c_g = color[bb, ll, 1]
                    c_b = color[bb, ll, 2]
            if t_hit < min_depth_m or t_hit > max_depth_m:
                continue
            depth_out[v, u] = t_hit
            norm = math.sqrt(gxw * gxw + gyw * gyw + gzw * gzw)
            if norm > 0.0:
                # world gradient -> camera frame (R_CW = R_WC^T)
                for k in range(3):
                    normal_out[v, u, k] = (R_WC[0, k] * gxw + R_WC[1, k] * gyw + R_WC[2, k] * gzw) / norm
            color_out[v, u, 0] = np.uint8(min(255.0, c_r + 0.5))
            color_out[v, u, 1] = np.uint8(min(255.0, c_g + 0.5))
            color_out[v, u, 2] = np.uint8(min(255.0, c_b + 0.5))
