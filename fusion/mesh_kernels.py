"""Marching cubes over voxel blocks: the case table (generated here) and the numba kernels.

Cube and table. A cube has its 8 corners on voxel centres; corner ``c`` sits at offset
``(c & 1, (c >> 1) & 1, (c >> 2) & 1)`` from the cube's lowest corner. Edge ``e = 4 * axis + k`` joins
the k-th corner with a 0 bit on ``axis`` (in increasing corner order) to its neighbour along ``axis``.
A corner is *inside* when its TSDF is < 0; the case index has bit ``c`` set for inside corners.

The triangle table is not copied from anywhere: :func:`build_case_table` derives it from the face rule
below, so it is consistent by construction. On each of the six cube faces the iso-contour is a set of
segments between sign-changing edges; on a face with alternating corner signs the segments cut off the
two inside corners (a rule that depends only on the face's own corners, so two cubes sharing a face
always agree and the mesh has no cracks). Every sign-changing edge lies on exactly two faces, so the
segments chain into closed loops; each segment is oriented so that the surface normal (right-hand rule)
points from inside (negative) to outside (positive), and each loop is triangulated as a fan.

Blocks. Cube ``(i, j, k)`` of block ``b`` has its lowest corner on voxel ``(i, j, k)`` of ``b``
(``0 <= i, j, k < B``); its other corners may lie in the blocks ``b + (0|1, 0|1, 0|1)``, so a block's
mesh reads its 7 upper neighbours and seams close. A cube is meshed only when all 8 corners have weight
>= ``min_weight``. Vertices are shared inside a block (one per sign-changing edge); the same edge meshed
from two blocks gives bit-identical positions (same two voxels, same formula).

Block lookups go through :func:`fusion.hash_kernels.lookup` (see there about numba's cache).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from fusion.hash_kernels import FASTMATH, lookup, pack_key, unpack_key

CORNER_OFFSETS = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)
"""(8, 3) offset of each cube corner from the cube's lowest corner."""


def _edges() -> np.ndarray:
    """(12, 3) rows ``(corner0, corner1, axis)`` with corner0 the lower end."""
    rows = []
    for axis in range(3):
        for c in range(8):
            if not (c >> axis) & 1:
                rows.append((c, c | (1 << axis), axis))
    return np.array(rows, dtype=np.int64)


EDGES = _edges()


def _faces() -> list[tuple[list[int], np.ndarray]]:
    """The six faces: (corners in cyclic order, outward normal)."""
    faces = []
    for axis in range(3):
        a1, a2 = [a for a in range(3) if a != axis]
        for side in (0, 1):
            cyc = []
            for o1, o2 in ((0, 0), (1, 0), (1, 1), (0, 1)):
                c = (side << axis) | (o1 << a1) | (o2 << a2)
                cyc.append(c)
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            faces.append((cyc, normal))
    return faces


def _edge_of(c0: int, c1: int) -> int:
    lo, hi = min(c0, c1), max(c0, c1)
    for e in range(12):
        if EDGES[e, 0] == lo and EDGES[e, 1] == hi:
            return e
    raise AssertionError(f"corners {c0}, {c1} share no edge")


def _loops_for_case(case: int) -> list[list[int]]:
    inside = [bool((case >> c) & 1) for c in range(8)]
    midpoint = {e: (CORNER_OFFSETS[EDGES[e, 0]] + CORNER_OFFSETS[EDGES[e, 1]]) / 2.0 for e in range(12)}
    nxt: dict[int, int] = {}
    for cyc, normal in _faces():
        face_edges = [_edge_of(cyc[k], cyc[(k + 1) % 4]) for k in range(4)]
        crossing = [face_edges[k] for k in range(4) if inside[cyc[k]] != inside[cyc[(k + 1) % 4]]]
        if not crossing:
            continue
        if len(crossing) == 2:
            segments = [(crossing[0], crossing[1])]
        else:  # alternating signs: cut off each inside corner
            segments = [(face_edges[(k - 1) % 4], face_edges[k]) for k in range(4) if inside[cyc[k]]]
        outside = [CORNER_OFFSETS[c] for c in cyc if not inside[c]]
        centroid_out = np.mean(outside, axis=0)
        for ea, eb in segments:
            s = midpoint[eb] - midpoint[ea]
            w = centroid_out - (midpoint[ea] + midpoint[eb]) / 2.0
            if np.dot(np.cross(w, s), normal) > 0:
                ea, eb = eb, ea
            if ea in nxt:
                raise AssertionError(f"case {case}: edge {ea} starts two segments")
            nxt[ea] = eb
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        e = nxt.pop(start)
        while e != start:
            loop.append(e)
            e = nxt.pop(e)
        loops.append(loop)
    return loops


def build_case_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Derive the marching-cubes table.

    Returns (tri_edges, tri_count, edge_mask): tri_edges (256, T, 3) int8 edge ids of each triangle
    (``-1`` padding), tri_count (256,) int8 triangles per case, edge_mask (256,) int32 bit e set when
    edge e carries a vertex.
    """
    tris: list[list[tuple[int, int, int]]] = []
    masks = np.zeros(256, np.int32)
    for case in range(256):
        case_tris = []
        for loop in _loops_for_case(case):
            for k in range(1, len(loop) - 1):
                case_tris.append((loop[0], loop[k], loop[k + 1]))
            for e in loop:
                masks[case] |= 1 << e
        tris.append(case_tris)
    t_max = max(len(t) for t in tris)
    tri_edges = np.full((256, t_max, 3), -1, np.int8)
    tri_count = np.zeros(256, np.int8)
    for case, case_tris in enumerate(tris):
        tri_count[case] = len(case_tris)
        for k, tri in enumerate(case_tris):
            tri_edges[case, k] = tri
    return tri_edges, tri_count, masks


TRI_EDGES, TRI_COUNT, EDGE_MASK = build_case_table()


@nb.njit(cache=True)
def affected_block_ids(
    packed_touched: np.ndarray, hash_keys: np.ndarray, hash_ids: np.ndarray, block_count: int
) -> np.ndarray:
    """Ids (M,) int32 of allocated blocks whose mesh depends on any of ``packed_touched`` (N,) int64.

    A block's cubes read its 7 upper neighbours, so a change in block k affects blocks k - (0|1, 0|1, 0|1).
    """
    seen = np.zeros(block_count, np.bool_)
    out = np.empty(8 * packed_touched.shape[0], np.int32)
    n = 0
    for t in range(packed_touched.shape[0]):
        bx, by, bz = unpack_key(packed_touched[t])
        for c in range(8):
            b = lookup(hash_keys, hash_ids, pack_key(bx - (c & 1), by - ((c >> 1) & 1), bz - ((c >> 2) & 1)))
            if b >= 0 and not seen[b]:
                seen[b] = True
                out[n] = b
                n += 1
    return out[:n]


@nb.njit(parallel=True, cache=True, fastmath=FASTMATH)
def mesh_blocks_kernel(
    ids: np.ndarray,
    packed_keys: np.ndarray,
    tsdf: np.ndarray,
    weight: np.ndarray,
    color: np.ndarray,
    hash_keys: np.ndarray,
    hash_ids: np.ndarray,
    block_size_vox: int,
    voxel_size_m: float,
    min_weight: float,
    tri_edges: np.ndarray,
    tri_count: np.ndarray,
    edge_mask: np.ndarray,
    edges: np.ndarray,
    corner_offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes on blocks ``ids`` (N,) int32 (``-1`` entries give empty meshes).

    Returns (vertex_offsets (N+1,) int64, face_offsets (N+1,) int64, vertices (V, 3) float32 world metres,
    colors (V, 3) uint8, faces (F, 3) int32 indices local to each block's vertex range,
    edge_ids (V,) int64 global id of the voxel edge each vertex lies on: owner block id * 3 B^3 +
    3 * voxel index + axis, where the owner is the block holding the edge's lower voxel).
    """
    n = ids.shape[0]
    bs = block_size_vox
    g = bs + 1
    g3 = g * g * g
    nv = bs * bs * bs
    loc_t = np.empty((n, g3), np.float32)
    loc_c = np.empty((n, g3, 3), np.uint8)
    loc_owner = np.empty((n, g3), np.int64)  # global voxel id: owner block id * B^3 + voxel index
    cases = np.zeros((n, nv), np.uint8)
    n_vert = np.zeros(n, np.int64)
    n_face = np.zeros(n, np.int64)
    # for a gathered coordinate 0..B: which neighbour along that axis (0/1) and the voxel index in it
    side = np.zeros(g, np.int64)
    side[bs] = 1
    wrap = np.arange(g)
    wrap[bs] = 0
    # pass 1: gather each block with its upper neighbours, classify cubes, count output
    for i in nb.prange(n):
        b = ids[i]
        if b < 0:
            continue
        bx, by, bz = unpack_key(packed_keys[b])
        nbr = np.empty(8, np.int32)
        nbr[0] = b
        for c in range(1, 8):
            nbr[c] = lookup(hash_keys, hash_ids, pack_key(bx + (c & 1), by + ((c >> 1) & 1), bz + ((c >> 2) & 1)))
        ok = np.zeros(g3, np.bool_)
        for k in range(g):
            for j in range(g):
                for ii in range(g):
                    src = nbr[side[ii] + 2 * side[j] + 4 * side[k]]
                    dst = ii + g * (j + g * k)
                    if src < 0:
                        continue
                    lin = wrap[ii] + bs * (wrap[j] + bs * wrap[k])
                    if weight[src, lin] >= min_weight:
                        ok[dst] = True
                        loc_t[i, dst] = tsdf[src, lin]
                        loc_c[i, dst, 0] = color[src, lin, 0]
                        loc_c[i, dst, 1] = color[src, lin, 1]
                        loc_c[i, dst, 2] = color[src, lin, 2]
                        loc_owner[i, dst] = np.int64(src) * nv + lin
        used = np.zeros(g3 * 3, np.bool_)
        nvert = 0
        nface = 0
        for k in range(bs):
            for j in range(bs):
                for ii in range(bs):
                    base = ii + g * (j + g * k)
                    case = 0
                    valid = True
                    for c in range(8):
                        q = base + corner_offsets[c, 0] + g * (corner_offsets[c, 1] + g * corner_offsets[c, 2])
                        if not ok[q]:
                            valid = False
                            break
                        if loc_t[i, q] < 0:
                            case |= 1 << c
                    if not valid or case == 0 or case == 255:
                        continue
                    cases[i, ii + bs * (j + bs * k)] = case
                    nface += tri_count[case]
                    m = edge_mask[case]
                    for e in range(12):
                        if (m >> e) & 1:
                            c0 = edges[e, 0]
                            q = base + corner_offsets[c0, 0] + g * (corner_offsets[c0, 1] + g * corner_offsets[c0, 2])
                            slot = 3 * q + edges[e, 2]
                            if not used[slot]:
                                used[slot] = True
                                nvert += 1
        n_vert[i] = nvert
        n_face[i] = nface
    v_off = np.zeros(n + 1, np.int64)
    f_off = np.zeros(n + 1, np.int64)
    for i in range(n):
        v_off[i + 1] = v_off[i] + n_vert[i]
        f_off[i + 1] = f_off[i] + n_face[i]
    vertices = np.empty((v_off[n], 3), np.float32)
    colors = np.empty((v_off[n], 3), np.uint8)
    edge_ids = np.empty(v_off[n], np.int64)
    faces = np.empty((f_off[n], 3), np.int32)
    # pass 2: emit vertices (one per sign-changing edge of the block) and triangles
    for i in nb.prange(n):
        if n_face[i] == 0:
            continue
        b = ids[i]
        bx, by, bz = unpack_key(packed_keys[b])
        gx0 = bx * bs
        gy0 = by * bs
        gz0 = bz * bs
        vidx = np.full(g3 * 3, -1, np.int32)
        nvert = 0
        vo = v_off[i]
        fo = f_off[i]
        for k in range(bs):
            for j in range(bs):
                for ii in range(bs):
                    case = cases[i, ii + bs * (j + bs * k)]
                    if case == 0:
                        continue
                    base = ii + g * (j + g * k)
                    m = edge_mask[case]
                    for e in range(12):
                        if not (m >> e) & 1:
                            continue
                        c0 = edges[e, 0]
                        ax = edges[e, 2]
                        o0 = corner_offsets[c0]
                        q0 = base + o0[0] + g * (o0[1] + g * o0[2])
                        slot = 3 * q0 + ax
                        if vidx[slot] >= 0:
                            continue
                        step = 1 if ax == 0 else (g if ax == 1 else g * g)
                        q1 = q0 + step
                        f0 = loc_t[i, q0]
                        f1 = loc_t[i, q1]
                        t = f0 / (f0 - f1)
                        px = np.float64(gx0 + ii + o0[0])
                        py = np.float64(gy0 + j + o0[1])
                        pz = np.float64(gz0 + k + o0[2])
                        if ax == 0:
                            px += t
                        elif ax == 1:
                            py += t
                        else:
                            pz += t
                        out = vo + nvert
                        vertices[out, 0] = px * voxel_size_m
                        vertices[out, 1] = py * voxel_size_m
                        vertices[out, 2] = pz * voxel_size_m
                        for ch in range(3):
                            colors[out, ch] = np.uint8(
                                (1.0 - t) * loc_c[i, q0, ch] + t * loc_c[i, q1, ch] + 0.5
                            )
                        edge_ids[out] = loc_owner[i, q0] * 3 + ax
                        vidx[slot] = nvert
                        nvert += 1
                    for tri in range(tri_count[case]):
                        for corner in range(3):
                            e = tri_edges[case, tri, corner]
                            o0 = corner_offsets[edges[e, 0]]
                            slot = 3 * (base + o0[0] + g * (o0[1] + g * o0[2])) + edges[e, 2]
                            faces[fo, corner] = vidx[slot]
                        fo += 1
    return v_off, f_off, vertices, colors, faces, edge_ids
