"""Numba kernels of TSDF raycasting: per-tile depth ranges from block projection, then ray marching.

1. :func:`block_range_map` projects the bounding box of every allocated block (clipped to the space in
   front of the camera) into the image and keeps, per ``tile x tile`` pixel tile, the farthest camera
   depth of any block covering it and, as the tile's near depth, the nearest *surface voxel* whose
   footprint touches it, less a margin. Rays start at their tile's near depth, so empty space in front of
   the surfaces costs nothing. It also fills a dense table of the block ids in a box around the blocks in
   view, which the march reads instead of probing the hash map.
2. :func:`march` walks each pixel's ray (parameter ``t`` = camera depth ``z``) with nearest-voxel reads,
   :data:`RAYS_PER_STEP` neighbouring rays at a time with their steps interleaved: unallocated blocks are
   skipped to their exit, unobserved voxels are stepped over one voxel at a time (a ray whose first
   observed voxel is negative starts again 2 voxels earlier, once), observed voxels advance
   by their TSDF value plus one voxel (an overshoot of up to about a voxel lands in the negative band
   behind the surface, which is several voxels thick, so it is still detected). At the first change from
   + to - (a front face), the crossing is refined by Newton steps on the trilinear TSDF (each at most one
   voxel; the TSDF is re-sampled after a step longer than ``newton_tol`` voxels, up to 3 times, and regula
   falsi takes over where Newton fails). Newton starts where the ray meets the tangent plane of the row's
   previous hit when that lies near the first negative read (neighbouring pixels see the same smooth
   surface: no reads, and usually one Newton step); otherwise the bracket is narrowed to half a voxel with
   nearest-voxel reads and the crossing interpolated linearly. The normal is the TSDF gradient
   of the last trilinear sample, the colour that of the cell corner nearest to the hit (where a cell corner
   is unobserved: no Newton step, no normal, nearest colour). Trilinear samples go through a one-cell
   cache: re-samples inside the same cell read no voxels. Rays that reach their range or depth limit
   without a front face give depth 0.

The kernels index the map's arrays themselves and never pass them to helpers called per voxel read: once
numba inlines a helper that takes arrays, every call costs an atomic reference-count increment and
decrement per array (17 % of the samples of a single-thread profile; two threads doing it on the same
arrays also contend for the counts). Block lookups, once per change of block, go through a helper.

Block coordinates use arithmetic shifts, so the block size must be a power of two (see VolumeConfig).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from fusion.hash_kernels import FASTMATH, lookup, pack_key, unpack_key
from fusion.volume import UNOBSERVED_TSDF


def _run_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of consecutive set bits of every 8-bit mask m: count (256,), first bit start[m, :count[m]]
    and end (one past the last bit) end[m, :count[m]], int64, in increasing order (at most 4 runs)."""
    count = np.zeros(256, np.int64)
    start = np.zeros((256, 4), np.int64)
    end = np.zeros((256, 4), np.int64)
    for m in range(256):
        k = 0
        while k < 8:
            if (m >> k) & 1:
                k0 = k
                while k < 8 and (m >> k) & 1:
                    k += 1
                start[m, count[m]] = k0
                end[m, count[m]] = k
                count[m] += 1
            else:
                k += 1
    return count, start, end


_RUN_COUNT, _RUN_START, _RUN_END = _run_tables()

MAX_TABLE_BLOCKS = 1 << 22
"""Largest dense block table (entries, 4 bytes each) that :func:`block_range_map` builds; beyond it (a view
box of more than ~160^3 blocks, e.g. voxels of a few millimetres and a far depth limit) the march looks
every block up in the hash map."""


@nb.njit(parallel=True, cache=True, fastmath=FASTMATH)
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
    block_shift: int,
    voxel_size_m: float,
    min_depth_m: float,
    max_depth_m: float,
    tsdf: np.ndarray,
    weight: np.ndarray,
    min_weight: float,
    n_chunks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile ray ranges and a dense block table of the view.

    Returns:
        near, far: (TH, TW) float32 camera depths (metres). far: the farthest depth of any block whose
            projection covers the tile (0 when none does). near: the nearest depth of any *surface voxel*
            (observed, |tsdf| < 2 voxels) whose projected footprint touches the tile, minus 2 voxels, but
            not nearer than the nearest block; +inf (no ray) when no surface voxel touches the tile (a
            front face has voxels of small |tsdf| around it) -- unless a surface voxel lies right at the
            camera, when every tile covered by a block uses the nearest block depth. The footprint is a
            disc of 1 voxel (a nearest-voxel read of a ray reads a voxel within sqrt(3)/2 voxel of it)
            plus 1 pixel.
        table: (NX, NY, NZ) int32 block ids (-1: not allocated) of the block coordinates in the box
            ``table_origin + [0, N)``, which holds every block in view with one block to spare on each side;
            empty (0, 0, 0) when it would exceed :data:`MAX_TABLE_BLOCKS`.
        table_origin: (3,) int64 block coordinates of ``table[0, 0, 0]``.

    Surface voxels are splatted by columns: along the world axis most aligned with the camera's z, a run
    of consecutive surface voxels projects onto a segment (projection keeps segments), so one tile
    rectangle covering the footprints at both ends, at the run's nearest depth, covers every voxel of the
    run (a run of a surface seen head-on is the 4-voxel band and lands on the same tiles).

    Blocks are dealt out round robin to ``n_chunks`` (>= 1) chunks processed in parallel, each into its own
    tile maps, merged at the end.
    """
    n_ty = (height + tile - 1) // tile
    n_tx = (width + tile - 1) // tile
    inv_tile = 1.0 / tile
    bs = 1 << block_shift
    bmask = bs - 1
    bm = bs * voxel_size_m
    lo = -0.5 * voxel_size_m  # nearest-voxel reads of a block cover [origin - s/2, origin + (B - 1/2) s];
    hi = bm  # trilinear cells owned by it reach origin + B s
    z_clip = 0.5 * min_depth_m
    nv = bs * bs * bs
    surf_band = 2.0 * voxel_size_m
    # camera-frame step of one voxel along each world axis
    sx0, sx1, sx2 = R_CW[0, 0] * voxel_size_m, R_CW[1, 0] * voxel_size_m, R_CW[2, 0] * voxel_size_m
    sy0, sy1, sy2 = R_CW[0, 1] * voxel_size_m, R_CW[1, 1] * voxel_size_m, R_CW[2, 1] * voxel_size_m
    sz0, sz1, sz2 = R_CW[0, 2] * voxel_size_m, R_CW[1, 2] * voxel_size_m, R_CW[2, 2] * voxel_size_m
    foot = voxel_size_m * max(fx, fy)
    # columns run along world axis a_ax (the one most aligned with the camera's z): linear voxel index
    # p * st_p + q * st_q + k * st_a for column (p, q), position k; (cs0, cs1, cs2) = camera step per voxel
    a_ax = 0
    for ax in range(1, 3):
        if abs(R_CW[2, ax]) > abs(R_CW[2, a_ax]):
            a_ax = ax
    st_a = 1 if a_ax == 0 else (bs if a_ax == 1 else bs * bs)
    st_p = bs if a_ax == 0 else 1
    st_q = bs if a_ax == 2 else bs * bs
    cs0 = R_CW[0, a_ax] * voxel_size_m
    cs1 = R_CW[1, a_ax] * voxel_size_m
    cs2 = R_CW[2, a_ax] * voxel_size_m
    near_c = np.full((n_chunks, n_ty, n_tx), np.inf, np.float32)
    far_c = np.zeros((n_chunks, n_ty, n_tx), np.float32)
    # padded by 3 rows and columns: the 3 x 3 splat window sends its out-of-rectangle tiles there (below)
    near_surf_c = np.full((n_chunks, n_ty + 3, n_tx + 3), np.inf, np.float32)
    at_camera = np.zeros(n_chunks, np.bool_)
    box_lo = np.full((n_chunks, 3), 1 << 40, np.int64)
    box_hi = np.full((n_chunks, 3), -(1 << 40), np.int64)
    for ch in nb.prange(n_chunks):
        cam = np.empty((8, 3))
        surf = np.empty(nv, np.uint8)
        cmask = np.empty(64, np.uint8)
        run_lin = np.empty(nv, np.int64)
        run_len = np.empty(nv, np.int64)
        ns = near_surf_c[ch]
        # blocks dealt out round robin: the blocks in view were mostly allocated at about the same time
        # (contiguous ids), so contiguous chunks left one thread most of the work
        for b in range(ch, block_count, n_chunks):
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
            box_lo[ch, 0] = min(box_lo[ch, 0], bx)
            box_lo[ch, 1] = min(box_lo[ch, 1], by)
            box_lo[ch, 2] = min(box_lo[ch, 2], bz)
            box_hi[ch, 0] = max(box_hi[ch, 0], bx)
            box_hi[ch, 1] = max(box_hi[ch, 1], by)
            box_hi[ch, 2] = max(box_hi[ch, 2], bz)
            tx0 = max(0, math.floor((umin + 0.5) * inv_tile))
            tx1 = min(n_tx - 1, math.floor((umax + 0.5) * inv_tile))
            ty0 = max(0, math.floor((vmin + 0.5) * inv_tile))
            ty1 = min(n_ty - 1, math.floor((vmax + 0.5) * inv_tile))
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    near_c[ch, ty, tx] = min(near_c[ch, ty, tx], zmin)
                    far_c[ch, ty, tx] = max(far_c[ch, ty, tx], zmax)
            # splat the block's surface voxels, a run of a column at a time
            c0x = R_CW[0, 0] * ox + R_CW[0, 1] * oy + R_CW[0, 2] * oz + t_CW[0]
            c0y = R_CW[1, 0] * ox + R_CW[1, 1] * oy + R_CW[1, 2] * oz + t_CW[1]
            c0z = R_CW[2, 0] * ox + R_CW[2, 1] * oy + R_CW[2, 2] * oz + t_CW[2]
            n_surf = 0
            for lin in range(nv):
                s_ = (weight[b, lin] >= min_weight) & (abs(tsdf[b, lin]) < surf_band)
                surf[lin] = s_
                n_surf += s_
            if n_surf == 0:
                continue
            # the block's runs (first voxel, length - 1) into run_lin / run_len
            n_runs = 0
            if bs == 8:
                # bit k of cmask[c] = voxel k of column c is a surface voxel (branch-free loops, the inner one
                # over contiguous voxels where the axis allows); the runs of each 8-bit mask come from a
                # table: walking the voxels instead took a data-dependent branch per voxel (-20 % of the
                # range map with the table)
                for c in range(64):
                    cmask[c] = 0
                if a_ax == 2:
                    for k in range(8):
                        for c in range(64):
                            cmask[c] |= surf[64 * k + c] << k
                elif a_ax == 1:
                    for hi_ in range(8):
                        for k in range(8):
                            for lo_ in range(8):
                                cmask[8 * hi_ + lo_] |= surf[64 * hi_ + 8 * k + lo_] << k
                else:
                    for c in range(64):
                        for k in range(8):
                            cmask[c] |= surf[8 * c + k] << k
                for c in range(64):
                    mk = cmask[c]
                    if mk == 0:
                        continue
                    # column c's first voxel: c spans the two axes other than a_ax
                    col = c if a_ax == 2 else ((c >> 3) * 64 + (c & 7) if a_ax == 1 else 8 * c)
                    for j in range(_RUN_COUNT[mk]):
                        run_lin[n_runs] = col + _RUN_START[mk, j] * st_a
                        run_len[n_runs] = _RUN_END[mk, j] - 1 - _RUN_START[mk, j]
                        n_runs += 1
            else:
                for p in range(bs):
                    for q in range(bs):
                        col = p * st_p + q * st_q
                        k = 0
                        while k < bs:
                            if not surf[col + k * st_a]:
                                k += 1
                                continue
                            k0 = k
                            k += 1
                            while k < bs and surf[col + k * st_a]:
                                k += 1
                            run_lin[n_runs] = col + k0 * st_a  # the run is k0 .. k - 1
                            run_len[n_runs] = k - 1 - k0
                            n_runs += 1
            for ri in range(n_runs):
                lin = run_lin[ri]
                ix = lin & bmask
                iy = (lin >> block_shift) & bmask
                iz = lin >> (2 * block_shift)
                x0 = c0x + ix * sx0 + iy * sy0 + iz * sz0
                y0 = c0y + ix * sx1 + iy * sy1 + iz * sz1
                z0 = c0z + ix * sx2 + iy * sy2 + iz * sz2
                n_run = run_len[ri]
                x1 = x0 + n_run * cs0
                y1 = y0 + n_run * cs1
                z1 = z0 + n_run * cs2
                z = min(z0, z1)
                if z < z_clip:
                    at_camera[ch] = True
                    continue
                iz0 = 1.0 / z0
                iz1 = 1.0 / z1
                u0 = fx * x0 * iz0 + cx
                v0 = fy * y0 * iz0 + cy
                u1 = fx * x1 * iz1 + cx
                v1 = fy * y1 * iz1 + cy
                r = foot * max(iz0, iz1) + 1.0
                ua = min(u0, u1) - r
                ub = max(u0, u1) + r
                va = min(v0, v1) - r
                vb = max(v0, v1) + r
                if ub < -0.5 or vb < -0.5 or ua > width - 0.5 or va > height - 0.5:
                    continue
                sx_0 = max(0, math.floor((ua + 0.5) * inv_tile))
                sx_1 = min(n_tx - 1, math.floor((ub + 0.5) * inv_tile))
                sy_0 = max(0, math.floor((va + 0.5) * inv_tile))
                sy_1 = min(n_ty - 1, math.floor((vb + 0.5) * inv_tile))
                if sy_1 - sy_0 < 3 and sx_1 - sx_0 < 3:
                    # the common case without data-dependent loop exits (mispredicted branches
                    # were a third of the splat): a 3 x 3 window of tiles; the window's tiles
                    # outside the rectangle go to the padding, each to its own (clamping them
                    # onto the rectangle chained up to 9 read-modify-writes on one tile)
                    for i in range(3):
                        ty = sy_0 + i if sy_0 + i <= sy_1 else n_ty + i
                        for j in range(3):
                            tx = sx_0 + j if sx_0 + j <= sx_1 else n_tx + j
                            ns[ty, tx] = min(ns[ty, tx], z)
                else:
                    for ty in range(sy_0, sy_1 + 1):
                        for tx in range(sx_0, sx_1 + 1):
                            ns[ty, tx] = min(ns[ty, tx], z)
    near = near_c[0].copy()
    far = far_c[0].copy()
    near_surf = near_surf_c[0, :n_ty, :n_tx].copy()
    for ch in range(1, n_chunks):
        for ty in range(n_ty):
            for tx in range(n_tx):
                near[ty, tx] = min(near[ty, tx], near_c[ch, ty, tx])
                far[ty, tx] = max(far[ty, tx], far_c[ch, ty, tx])
                near_surf[ty, tx] = min(near_surf[ty, tx], near_surf_c[ch, ty, tx])
    # dense block table of the view box, one block to spare on each side (trilinear corners)
    origin = np.empty(3, np.int64)
    shape = np.zeros(3, np.int64)
    for a in range(3):
        origin[a] = box_lo[:, a].min() - 1
        shape[a] = max(box_hi[:, a].max() + 2 - origin[a], 0)
    if shape[0] * shape[1] * shape[2] > MAX_TABLE_BLOCKS:
        shape[:] = 0
    table = np.full((shape[0], shape[1], shape[2]), -1, np.int32)
    if table.size > 0:
        for b in range(block_count):
            bx, by, bz = unpack_key(packed_keys[b])
            gx = bx - origin[0]
            gy = by - origin[1]
            gz = bz - origin[2]
            if 0 <= gx < shape[0] and 0 <= gy < shape[1] and 0 <= gz < shape[2]:
                table[gx, gy, gz] = b
    margin = 2.0 * voxel_size_m
    if at_camera.any():  # a surface voxel touches the camera: no tile can skip its near range
        return near, far, table, origin
    for ty in range(n_ty):
        for tx in range(n_tx):
            if near_surf[ty, tx] < np.inf:
                near[ty, tx] = max(near[ty, tx], near_surf[ty, tx] - margin)
            else:
                near[ty, tx] = np.inf
    return near, far, table, origin


@nb.njit(cache=True, fastmath=FASTMATH, inline="always")
def _eval_cell(
    ax: float, ay: float, az: float,
    v0: float, v1: float, v2: float, v3: float, v4: float, v5: float, v6: float, v7: float,
) -> tuple[float, float, float, float]:
    """Trilinear value and gradient (f, df/dax, df/day, df/daz) at cell fractions (ax, ay, az) of the corner
    values v0..v7 (corner c at offset (c & 1, c >> 1 & 1, c >> 2 & 1)). Scalars only: helpers that take
    arrays would cost two atomic reference-count updates per array per call once inlined."""
    bx_ = 1.0 - ax
    by_ = 1.0 - ay
    bz_ = 1.0 - az
    f = ((v0 * bx_ + v1 * ax) * by_ + (v2 * bx_ + v3 * ax) * ay) * bz_ + (
        (v4 * bx_ + v5 * ax) * by_ + (v6 * bx_ + v7 * ax) * ay
    ) * az
    gx = ((v1 - v0) * by_ + (v3 - v2) * ay) * bz_ + ((v5 - v4) * by_ + (v7 - v6) * ay) * az
    gy = ((v2 - v0) * bx_ + (v3 - v1) * ax) * bz_ + ((v6 - v4) * bx_ + (v7 - v5) * ax) * az
    gz = ((v4 - v0) * bx_ + (v5 - v1) * ax) * by_ + ((v6 - v2) * bx_ + (v7 - v3) * ax) * ay
    return f, gx, gy, gz


@nb.njit(cache=True, fastmath=FASTMATH, inline="always")
def _secant(t_a: float, f_a: float, t_b: float, f_b: float) -> float:
    """Zero of the line through (t_a, f_a) and (t_b, f_b), f_a >= 0 > f_b."""
    return t_a + (t_b - t_a) * f_a / (f_a - f_b)


@nb.njit(cache=True, inline="always")
def _flat(i: int, j: int, n_j: int) -> np.uint64:
    """Unsigned flat offset ``i * n_j + j`` of element (i, j) of a C-contiguous array with rows of ``n_j``
    (nest for more axes). Indexing with unsigned integers lets numba skip its negative-index wraparound,
    which the kernels never need (about 4 % of raycasting time)."""
    return np.uint64(i * n_j + j)


@nb.njit(cache=True, inline="always")
def _flat3(i: int, j: int, n_j: int, k: int) -> np.uint64:
    """:func:`_flat` of element (i, j, k) of a C-contiguous (.., n_j, 3) array."""
    return np.uint64(3 * (i * n_j + j) + k)


@nb.njit(cache=True, inline="always")
def _block_id(
    table_f: np.ndarray, tox: int, toy: int, toz: int, tnx: np.uint64, tny: np.uint64, tnz: np.uint64,
    hash_keys: np.ndarray, hash_ids: np.ndarray, bx: int, by: int, bz: int, key: np.int64,
) -> np.int32:
    """Id of block (bx, by, bz) (packed ``key``): from the flat dense table of :func:`block_range_map` (block
    ``q = b - origin`` at ``(qx * tny + qy) * tnz + qz``) when it lies in the table's box (unsigned compare:
    negative differences wrap to huge values), else from the hash map; -1 when not allocated. It takes
    arrays (see the module docstring), so it serves the lookups that run only when a sample moves to another
    block; the march's step, which reads the table at every step, spells the same out."""
    qx = np.uint64(bx - tox)
    qy = np.uint64(by - toy)
    qz = np.uint64(bz - toz)
    if qx < tnx and qy < tny and qz < tnz:
        return table_f[(qx * tny + qy) * tnz + qz]
    return lookup(hash_keys, hash_ids, key)


# refinement phases (see march)
_NEWTON = 0
_RF_START = 1
_RF_EXTEND = 2
_RF_ITERATE = 3
_RF_GIVE_UP = 4

RAYS_PER_STEP = 4
"""Rays marched together: neighbouring pixels of a row whose steps are interleaved, so that the memory reads
of one overlap the others' (7-Scenes, 2 cm, 2 threads: 1 ray 38 ms, 2 rays 35 ms, 4 rays 33 ms)."""


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
    n_threads: int,
    table: np.ndarray,
    table_origin: np.ndarray,
    tsdf_marks: bool,
) -> None:
    """Raycast every pixel: depth_out (H, W) float32 (0 = no surface), normal_out (H, W, 3) float32 (unit,
    camera frame, towards free space; 0 where no surface), color_out (H, W, 3) uint8.

    Block ids come from ``table`` (see :func:`block_range_map`) where the block lies in its box, else
    from the hash map (:func:`_block_id`). A voxel is observed when its weight is at least ``min_weight``;
    with ``tsdf_marks`` (allowed when ``min_weight <= 1``: see :mod:`fusion.volume`'s invariants) the march
    takes that from the TSDF alone (``< UNOBSERVED_TSDF``) and never reads the weights. The map's arrays are
    otherwise only indexed here, never handed to helpers (see the module docstring).
    """
    h, w = depth_out.shape
    shift = block_shift
    bs = 1 << shift
    m = bs - 1
    s = voxel_size_m
    inv_s = 1.0 / s
    ox = t_WC[0] * inv_s
    oy = t_WC[1] * inv_s
    oz = t_WC[2] * inv_s
    nr = RAYS_PER_STEP
    # flat views of the map and the images, indexed with unsigned offsets (see _flat)
    nv = tsdf.shape[1]
    tsdf_f = tsdf.reshape(tsdf.size)
    weight_f = weight.reshape(weight.size)
    color_f = color.reshape(color.size)
    depth_f = depth_out.reshape(depth_out.size)
    normal_f = normal_out.reshape(normal_out.size)
    color_of = color_out.reshape(color_out.size)
    per = (h + n_threads - 1) // n_threads
    # dense block table, flat (see _block_id)
    table_f = table.reshape(table.size)
    tox = table_origin[0]
    toy = table_origin[1]
    toz = table_origin[2]
    tnx = np.uint64(table.shape[0])
    tny = np.uint64(table.shape[1])
    tnz = np.uint64(table.shape[2])
    for i in nb.prange(per * n_threads):
        # rows interleaved over the threads' contiguous chunks of i, so that each thread gets rows from the
        # whole image (surfaces within range are often in one half of it)
        v = (i % per) * n_threads + i // per
        if v >= h:
            continue
        # per-ray march state of the rays in flight
        r_status = np.zeros(nr, np.int64)  # 0 marching, 1 front face between r_prev_t and r_t, 2 none
        r_t = np.zeros(nr, np.float64)
        r_t1 = np.zeros(nr, np.float64)
        r_d = np.zeros((nr, 4), np.float64)  # ray direction (voxels per unit of t) and t per voxel
        r_prev = np.zeros((nr, 3), np.float64)  # (prev_t, prev_f, f at r_t)
        r_have_prev = np.zeros(nr, np.bool_)
        r_long = np.zeros(nr, np.bool_)
        r_first = np.zeros(nr, np.bool_)
        r_key = np.zeros(nr, np.int64)
        r_id = np.zeros(nr, np.int32)
        vals = np.zeros(8, np.float64)  # corner values of the cached cell (see have_cell below)
        new_vals = np.zeros(8, np.float64)
        ty = v // tile
        yr = (v - cy) / fy
        # one-cell cache of trilinear samples, shared by the row's rays (neighbouring pixels often hit the
        # same cell): (cx0, cy0, cz0) + vals of the last cell whose 8 corners were observed (have_cell),
        # (nx0, ny0, nz0) the last cell that failed to load
        have_cell = False
        # tangent plane of the row's previous hit (point in voxel units, TSDF gradient), valid while pl_ok
        pl_ok = False
        pl_px = 0.0
        pl_py = 0.0
        pl_pz = 0.0
        pl_gx = 0.0
        pl_gy = 0.0
        pl_gz = 0.0
        cx0 = 0
        cy0 = 0
        cz0 = 0
        nx0 = -(1 << 40)
        ny0 = 0
        nz0 = 0
        for u0 in range(0, w, nr):
            active = 0
            for r in range(nr):
                u = u0 + r
                r_status[r] = 2
                if u >= w:
                    continue
                t0 = max(near[ty, u // tile], min_depth_m)
                t1 = min(far[ty, u // tile], max_depth_m)
                if not t0 < t1:
                    continue
                xr = (u - cx) / fx
                dx = (R_WC[0, 0] * xr + R_WC[0, 1] * yr + R_WC[0, 2]) * inv_s
                dy = (R_WC[1, 0] * xr + R_WC[1, 1] * yr + R_WC[1, 2]) * inv_s
                dz = (R_WC[2, 0] * xr + R_WC[2, 1] * yr + R_WC[2, 2]) * inv_s
                r_d[r, 0] = dx
                r_d[r, 1] = dy
                r_d[r, 2] = dz
                r_d[r, 3] = 1.0 / math.sqrt(dx * dx + dy * dy + dz * dz)  # t advance of one voxel
                r_status[r] = 0
                r_t[r] = t0
                r_t1[r] = t1
                r_have_prev[r] = False
                r_long[r] = False
                r_first[r] = True
                r_key[r] = -1
                r_id[r] = -1
                active += 1
            # ---- march: one step of every ray in flight per pass ----
            while active > 0:
                for r in range(nr):
                    if r_status[r] != 0:
                        continue
                    t = r_t[r]
                    if t > r_t1[r]:
                        r_status[r] = 2
                        active -= 1
                        continue
                    dx = r_d[r, 0]
                    dy = r_d[r, 1]
                    dz = r_d[r, 2]
                    dt_voxel = r_d[r, 3]
                    ix = math.floor(ox + dx * t + 0.5)
                    iy = math.floor(oy + dy * t + 0.5)
                    iz = math.floor(oz + dz * t + 0.5)
                    bx = ix >> shift
                    by = iy >> shift
                    bz = iz >> shift
                    key = pack_key(bx, by, bz)
                    # the block: read from the table at every step (spelled out here, see _block_id), which
                    # beat skipping the read while the ray stays in its block by 4-5 % at 1 cm (that branch
                    # was mispredicted); outside the table's box the hash map, once per change of block
                    qx = np.uint64(bx - tox)
                    qy = np.uint64(by - toy)
                    qz = np.uint64(bz - toz)
                    if (qx < tnx) & (qy < tny) & (qz < tnz):
                        b = table_f[(qx * tny + qy) * tnz + qz]
                        r_id[r] = b
                    else:
                        if key != r_key[r]:
                            r_id[r] = lookup(hash_keys, hash_ids, key)
                        b = r_id[r]
                    r_key[r] = key
                    lin = (ix & m) + bs * ((iy & m) + bs * (iz & m))
                    fv_raw = tsdf_f[_flat(b, lin, nv)] if b >= 0 else UNOBSERVED_TSDF
                    observed = fv_raw < UNOBSERVED_TSDF and (tsdf_marks or weight_f[_flat(b, lin, nv)] >= min_weight)
                    if not observed:  # one branch on the path of observed voxels, the common case
                        if r_long[r]:
                            # a long step left the observed band: go back and walk it voxel by voxel
                            r_t[r] = r_prev[r, 0] + dt_voxel
                            r_long[r] = False
                        elif b < 0:
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
                            r_t[r] = max(t_exit, t) + 1e-3 * dt_voxel
                            r_have_prev[r] = False
                        else:
                            # unobserved: a gap of up to two voxels between + and - still counts as a crossing
                            if t - r_prev[r, 0] > 2.5 * dt_voxel:
                                r_have_prev[r] = False
                            r_t[r] = t + dt_voxel
                        continue
                    r_long[r] = False
                    f = fv_raw * inv_s  # voxels
                    if r_first[r]:
                        # the first observed read is negative: the tile's near depth may have put the start
                        # just behind a front face seen at a grazing angle; start 2 voxels earlier, once
                        r_first[r] = False
                        if f < 0.0 and t - 2.0 * dt_voxel >= min_depth_m:
                            r_t[r] = t - 2.0 * dt_voxel
                            r_have_prev[r] = False
                            continue
                    if r_have_prev[r] and r_prev[r, 1] >= 0.0 and f < 0.0:
                        r_prev[r, 2] = f
                        r_status[r] = 1
                        active -= 1
                        continue
                    r_have_prev[r] = True
                    r_prev[r, 0] = t
                    r_prev[r, 1] = f
                    r_long[r] = f > 1.5
                    r_t[r] = t + max(f + 1.0, 1.0) * dt_voxel
            # ---- refine each front face and write its pixel ----
            for r in range(nr):
                u = u0 + r
                if u >= w:
                    continue
                if r_status[r] != 1:
                    pl_ok = False
                    depth_f[_flat(v, u, w)] = 0.0
                    for k in range(3):
                        normal_f[_flat3(v, u, w, k)] = 0.0
                        color_of[_flat3(v, u, w, k)] = 0
                    continue
                dx = r_d[r, 0]
                dy = r_d[r, 1]
                dz = r_d[r, 2]
                dt_voxel = r_d[r, 3]
                cached_key = r_key[r]
                cached_id = r_id[r]
                t_a = r_prev[r, 0]
                f_a = r_prev[r, 1]
                t_b = r_t[r]
                f_b = r_prev[r, 2]
                # start of the refinement: where the ray meets the tangent plane of the row's previous hit,
                # if that is within 2 voxels before and 1 voxel after the first negative read (the sphere
                # step puts the first surface about a voxel before it, and nearest-voxel reads are up to
                # ~0.9 voxel off the trilinear zero); else narrow the bracket to half a voxel with
                # nearest-voxel reads and interpolate linearly
                use_plane = False
                t_hit = 0.0
                if pl_ok:
                    gd = pl_gx * dx + pl_gy * dy + pl_gz * dz
                    if gd < 0.0:
                        t_g = (pl_gx * (pl_px - ox) + pl_gy * (pl_py - oy) + pl_gz * (pl_pz - oz)) / gd
                        if t_b - 2.0 * dt_voxel < t_g < t_b + dt_voxel:
                            t_hit = t_g
                            use_plane = True
                            t_a = max(t_a, t_b - 2.0 * dt_voxel)  # a short bracket for regula falsi
                if not use_plane:
                    tt = t_a + 0.5 * dt_voxel if t_b - t_a > 1.01 * dt_voxel else t_b
                    while tt < t_b:
                        ix = math.floor(ox + dx * tt + 0.5)
                        iy = math.floor(oy + dy * tt + 0.5)
                        iz = math.floor(oz + dz * tt + 0.5)
                        key = pack_key(ix >> shift, iy >> shift, iz >> shift)
                        if key != cached_key:
                            cached_key = key
                            cached_id = _block_id(table_f, tox, toy, toz, tnx, tny, tnz, hash_keys, hash_ids,
                                                  ix >> shift, iy >> shift, iz >> shift, key)
                        lin = (ix & m) + bs * ((iy & m) + bs * (iz & m))
                        fvr = tsdf_f[_flat(cached_id, lin, nv)] if cached_id >= 0 else UNOBSERVED_TSDF
                        if fvr < UNOBSERVED_TSDF and (tsdf_marks or weight_f[_flat(cached_id, lin, nv)] >= min_weight):
                            fv = fvr * inv_s
                            if fv < 0.0:
                                t_b = tt
                                f_b = fv
                                break
                            t_a = tt
                            f_a = fv
                        tt += 0.5 * dt_voxel
                    t_hit = _secant(t_a, f_a, t_b, f_b)
                # Newton on the trilinear TSDF from t_hit, re-sampled while steps exceed newton_tol voxels (at
                # most 3 steps); where it fails and the TSDF is far from zero (e.g. near a silhouette),
                # regula falsi on the trilinear values of the bracket, extended forward up to 4 times while
                # its far end is positive. Every trilinear sample goes through the one site below and the
                # row's cell cache; ray_ok: some sample of this ray succeeded, so the cached cell is the one
                # of its last successful sample.
                ray_ok = False
                f_s = 0.0  # trilinear TSDF (metres) and gradient of the last successful sample
                g_x = 0.0
                g_y = 0.0
                g_z = 0.0
                phase = _NEWTON
                n_steps = 0
                t_s = t_hit
                rf_ok_a = False
                rf_step = 0.0
                rf_n = 0
                while True:
                    # -- trilinear sample at t_s: ok, (f_s, g_x, g_y, g_z) --
                    gx = ox + dx * t_s
                    gy = oy + dy * t_s
                    gz = oz + dz * t_s
                    x0 = math.floor(gx)
                    y0 = math.floor(gy)
                    z0 = math.floor(gz)
                    ok = have_cell and x0 == cx0 and y0 == cy0 and z0 == cz0
                    if not ok and not (x0 == nx0 and y0 == ny0 and z0 == nz0) and (
                        (x0 & m) < m and (y0 & m) < m and (z0 & m) < m
                    ):
                        # the cell lies inside one block: one lookup, corners at fixed offsets
                        key = pack_key(x0 >> shift, y0 >> shift, z0 >> shift)
                        bid = cached_id if key == cached_key else _block_id(
                            table_f, tox, toy, toz, tnx, tny, tnz, hash_keys, hash_ids, x0 >> shift, y0 >> shift,
                            z0 >> shift, key)
                        # defined before the branch on purpose: numba 0.68 miscompiles these offsets inside a
                        # prange body when they are only assigned under `if bid >= 0`
                        l0 = (x0 & m) + bs * ((y0 & m) + bs * (z0 & m))
                        o0 = _flat(bid, l0, nv)  # flat offsets of the corners (0, 0, 0), (0, 1, 0), (0, 0, 1),
                        o2 = _flat(bid, l0 + bs, nv)  # (0, 1, 1); corner + x is the next element
                        o4 = _flat(bid, l0 + bs * bs, nv)
                        o6 = _flat(bid, l0 + bs * bs + bs, nv)
                        one = np.uint64(1)
                        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = UNOBSERVED_TSDF
                        if bid >= 0:
                            a0 = tsdf_f[o0]
                            a1 = tsdf_f[o0 + one]
                            a2 = tsdf_f[o2]
                            a3 = tsdf_f[o2 + one]
                            a4 = tsdf_f[o4]
                            a5 = tsdf_f[o4 + one]
                            a6 = tsdf_f[o6]
                            a7 = tsdf_f[o6 + one]
                            ok = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), max(a6, a7))) < UNOBSERVED_TSDF
                            if ok and not tsdf_marks:
                                ok = (weight_f[o0] >= min_weight and weight_f[o0 + one] >= min_weight
                                      and weight_f[o2] >= min_weight and weight_f[o2 + one] >= min_weight
                                      and weight_f[o4] >= min_weight and weight_f[o4 + one] >= min_weight
                                      and weight_f[o6] >= min_weight and weight_f[o6 + one] >= min_weight)
                        if ok:
                            have_cell = True
                            cx0 = x0
                            cy0 = y0
                            cz0 = z0
                            vals[0] = a0
                            vals[1] = a1
                            vals[2] = a2
                            vals[3] = a3
                            vals[4] = a4
                            vals[5] = a5
                            vals[6] = a6
                            vals[7] = a7
                        else:
                            nx0 = x0
                            ny0 = y0
                            nz0 = z0
                    elif not ok and not (x0 == nx0 and y0 == ny0 and z0 == nz0):
                        # the cell straddles blocks: look up each corner's block (consecutive corners share)
                        ok = True
                        last_key = np.int64(-1)
                        last_id = np.int32(-1)
                        for c in range(8):
                            vx = x0 + (c & 1)
                            vy = y0 + ((c >> 1) & 1)
                            vz = z0 + ((c >> 2) & 1)
                            key = pack_key(vx >> shift, vy >> shift, vz >> shift)
                            if key != last_key:
                                last_key = key
                                last_id = cached_id if key == cached_key else _block_id(
                                    table_f, tox, toy, toz, tnx, tny, tnz, hash_keys, hash_ids,
                                    vx >> shift, vy >> shift, vz >> shift, key)
                            lin = (vx & m) + bs * ((vy & m) + bs * (vz & m))
                            if last_id < 0:
                                ok = False
                                break
                            fc = tsdf_f[_flat(last_id, lin, nv)]
                            if not (fc < UNOBSERVED_TSDF
                                    and (tsdf_marks or weight_f[_flat(last_id, lin, nv)] >= min_weight)):
                                ok = False
                                break
                            new_vals[c] = fc
                        if ok:
                            have_cell = True
                            cx0 = x0
                            cy0 = y0
                            cz0 = z0
                            for c in range(8):
                                vals[c] = new_vals[c]
                        else:
                            nx0 = x0
                            ny0 = y0
                            nz0 = z0
                    if ok:
                        ray_ok = True
                        f_s, g_x, g_y, g_z = _eval_cell(gx - x0, gy - y0, gz - z0, vals[0], vals[1], vals[2],
                                                        vals[3], vals[4], vals[5], vals[6], vals[7])
                    # -- what the sample was for --
                    if phase == _NEWTON:
                        if not ok:
                            break  # no cell at the start (unobserved corner), or a re-sample failed
                        if n_steps == 3:
                            break
                        slope = (g_x * dx + g_y * dy + g_z * dz) * inv_s  # dF/dt, F in voxels
                        step = -(f_s * inv_s) / slope if slope < 0.0 else np.inf
                        if abs(step) > dt_voxel:
                            if abs(f_s) > 0.05 * s:
                                phase = _RF_START
                                t_s = t_a
                                continue
                            break
                        t_hit += step
                        n_steps += 1
                        if abs(step) <= newton_tol * dt_voxel:
                            break
                        t_s = t_hit
                    elif phase == _RF_START:
                        rf_ok_a = ok
                        f_a = f_s
                        rf_step = t_b - t_a
                        rf_n = 0
                        phase = _RF_EXTEND
                        t_s = t_b
                    elif phase == _RF_EXTEND:
                        f_b = f_s
                        rf_n += 1
                        if ok and f_b >= 0.0 and rf_n < 4:
                            t_a = t_b
                            f_a = f_b
                            t_b += rf_step
                            t_s = t_b
                        elif rf_ok_a and ok and f_a >= 0.0 > f_b:
                            phase = _RF_ITERATE
                            rf_n = 0
                            t_s = _secant(t_a, f_a, t_b, f_b)
                        else:
                            phase = _RF_GIVE_UP  # keep t_hit; the sample there sets normal and colour
                            t_s = t_hit
                    elif phase == _RF_ITERATE:
                        t_hit = t_s
                        if not ok:
                            break
                        if f_s >= 0.0:
                            t_a = t_s
                            f_a = f_s
                        else:
                            t_b = t_s
                            f_b = f_s
                        rf_n += 1
                        if rf_n == 3:
                            break
                        t_s = _secant(t_a, f_a, t_b, f_b)
                    else:  # _RF_GIVE_UP
                        break
                if t_hit < min_depth_m or t_hit > max_depth_m:
                    pl_ok = False
                    depth_f[_flat(v, u, w)] = 0.0
                    for k in range(3):
                        normal_f[_flat3(v, u, w, k)] = 0.0
                        color_of[_flat3(v, u, w, k)] = 0
                    continue
                gxw = 0.0
                gyw = 0.0
                gzw = 0.0
                if ray_ok:
                    # normal: TSDF gradient of the last successful sample (Newton's last sample lies within
                    # newton_tol voxels of the hit); colour of the cell corner nearest to the hit
                    ax = min(max(ox + dx * t_hit - cx0, 0.0), 1.0)
                    ay = min(max(oy + dy * t_hit - cy0, 0.0), 1.0)
                    az = min(max(oz + dz * t_hit - cz0, 0.0), 1.0)
                    gxw = g_x
                    gyw = g_y
                    gzw = g_z
                    ix = cx0 + (1 if ax >= 0.5 else 0)
                    iy = cy0 + (1 if ay >= 0.5 else 0)
                    iz = cz0 + (1 if az >= 0.5 else 0)
                else:
                    # a cell corner is unobserved: keep the interpolated depth, colour of the nearest voxel,
                    # no normal
                    ix = math.floor(ox + dx * t_hit + 0.5)
                    iy = math.floor(oy + dy * t_hit + 0.5)
                    iz = math.floor(oz + dz * t_hit + 0.5)
                key = pack_key(ix >> shift, iy >> shift, iz >> shift)
                bb = cached_id if key == cached_key else _block_id(
                    table_f, tox, toy, toz, tnx, tny, tnz, hash_keys, hash_ids, ix >> shift, iy >> shift,
                    iz >> shift, key)
                depth_f[_flat(v, u, w)] = t_hit
                norm2 = gxw * gxw + gyw * gyw + gzw * gzw
                pl_ok = norm2 > 0.0  # this hit's tangent plane starts the next pixel's refinement
                pl_px = ox + dx * t_hit
                pl_py = oy + dy * t_hit
                pl_pz = oz + dz * t_hit
                pl_gx = gxw
                pl_gy = gyw
                pl_gz = gzw
                inv_norm = 1.0 / math.sqrt(norm2) if norm2 > 0.0 else 0.0
                for k in range(3):
                    # world gradient -> camera frame (R_CW = R_WC^T); 0 without a normal
                    normal_f[_flat3(v, u, w, k)] = (R_WC[0, k] * gxw + R_WC[1, k] * gyw + R_WC[2, k] * gzw) * inv_norm
                ll = (ix & m) + bs * ((iy & m) + bs * (iz & m))
                for k in range(3):
                    color_of[_flat3(v, u, w, k)] = color_f[_flat3(bb, ll, nv, k)] if bb >= 0 else 0
