"""Analytic test scenes for the TSDF tests: a box room (planes) with solid spheres and boxes, ray-cast exactly.

Independent of the product code (only numpy and the Intrinsics message). Conventions as in the house
rules: ``T_W_C`` camera-to-world, camera x right, y down, z forward; pixel (u, v) looks along
``((u - cx) / fx, (v - cy) / fy, 1)``; depth is z-depth along the optical axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.messages import Intrinsics


@dataclass(frozen=True)
class Render:
    """depth_m (H, W) float32 z-depth; normals_W (H, W, 3) unit normals facing the camera; color (H, W, 3) uint8."""

    depth_m: np.ndarray
    normals_W: np.ndarray  # noqa: N815
    color: np.ndarray


@dataclass(frozen=True)
class Scene:
    """Free space = inside the room box and outside every sphere and solid box."""

    room_lo: tuple[float, float, float] = (-2.0, -2.0, 0.0)
    room_hi: tuple[float, float, float] = (2.0, 2.0, 2.5)
    spheres: tuple[tuple[tuple[float, float, float], float], ...] = (((0.3, 0.2, 0.8), 0.4),)
    boxes: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
        ((-1.2, -1.5, -0.1), (-0.6, -0.9, 0.7)),
    )
    walls: tuple[bool, ...] = field(default=(True,) * 6)
    """Which room faces exist, order -x, +x, -y, +y, -z, +z (a missing face is open space)."""

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Exact signed distance (N,) in metres: + in free space, - inside matter (near surfaces)."""
        return self.surface_distances(points).min(axis=1)

    def surface_distances(self, points: np.ndarray) -> np.ndarray:
        """(N, S) signed distance to each surface separately (room faces as half-spaces, spheres, boxes)."""
        p = np.asarray(points, dtype=np.float64)
        cols = []
        lo, hi = np.asarray(self.room_lo), np.asarray(self.room_hi)
        for axis in range(3):
            if self.walls[2 * axis]:
                cols.append(p[:, axis] - lo[axis])
            if self.walls[2 * axis + 1]:
                cols.append(hi[axis] - p[:, axis])
        for c, r in self.spheres:
            cols.append(np.linalg.norm(p - np.asarray(c), axis=1) - r)
        for blo, bhi in self.boxes:
            q = np.maximum(np.asarray(blo) - p, p - np.asarray(bhi))
            outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
            inside = np.minimum(q.max(axis=1), 0.0)
            cols.append(outside + inside)
        return np.stack(cols, axis=1)

    def render(self, T_W_C: np.ndarray, K: Intrinsics) -> Render:
        """Exact first-hit depth, normal and colour of every pixel (depth 0 where a ray escapes)."""
        h, w = K.height_px, K.width_px
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        rays_c = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
        dirs = rays_c @ T_W_C[:3, :3].T  # world direction per unit z-depth
        o = T_W_C[:3, 3]
        n = dirs.shape[0]
        best_t = np.full(n, np.inf)
        normal = np.zeros((n, 3))
        lo, hi = np.asarray(self.room_lo), np.asarray(self.room_hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                for side, plane, nsign in ((0, lo[axis], 1.0), (1, hi[axis], -1.0)):
                    if not self.walls[2 * axis + side]:
                        continue
                    t = (plane - o[axis]) / dirs[:, axis]
                    ok = (t > 1e-9) & (t < best_t)
                    best_t[ok] = t[ok]
                    normal[ok] = 0.0
                    normal[ok, axis] = nsign
            for c, r in self.spheres:
                oc = o - np.asarray(c)
                a = np.einsum("ij,ij->i", dirs, dirs)
                b = 2.0 * dirs @ oc
                cc = oc @ oc - r * r
                disc = b * b - 4 * a * cc
                t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
                ok = (disc >= 0) & (t > 1e-9) & (t < best_t)
                best_t[ok] = t[ok]
                normal[ok] = (o + dirs[ok] * t[ok, None] - np.asarray(c)) / r
            for blo, bhi in self.boxes:
                t1 = (np.asarray(blo) - o) / dirs
                t2 = (np.asarray(bhi) - o) / dirs
                tmin = np.minimum(t1, t2)
                tmax = np.maximum(t1, t2)
                t_near = np.nanmax(tmin, axis=1)
                t_far = np.nanmin(tmax, axis=1)
                ok = (t_near <= t_far) & (t_near > 1e-9) & (t_near < best_t)
                axis_hit = np.nanargmax(tmin, axis=1)
                best_t[ok] = t_near[ok]
                normal[ok] = 0.0
                idx = np.nonzero(ok)[0]
                normal[idx, axis_hit[ok]] = -np.sign(dirs[idx, axis_hit[ok]])
        hit = np.isfinite(best_t)
        depth = np.where(hit, best_t, 0.0)  # t is z-depth because dirs has unit z in the camera frame
        points = o + dirs * np.where(hit, best_t, 0.0)[:, None]
        color = np.zeros((n, 3), np.uint8)
        color[hit] = surface_color(points[hit])
        return Render(depth.reshape(h, w).astype(np.float32), normal.reshape(h, w, 3), color.reshape(h, w, 3))


def surface_color(points: np.ndarray) -> np.ndarray:
    """A smooth colour field (N, 3) uint8 over world points (the same point has the same colour in every view)."""
    p = np.asarray(points, dtype=np.float64)
    return np.clip(
        np.stack([128 + 90 * np.sin(1.3 * p[:, 0] + 0.4), 128 + 90 * np.sin(1.1 * p[:, 1] + 1.7),
                  128 + 90 * np.sin(0.9 * p[:, 2] + 2.9)], axis=1), 0, 255,
    ).round().astype(np.uint8)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_W_C of a camera at ``eye`` looking at ``target`` (camera y points down, towards world -z)."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def orbit_poses(n: int, radius: float = 1.3, height: float = 1.5, target=(0.0, 0.0, 0.7)) -> list[np.ndarray]:
    """``n`` cameras on a horizontal circle around the room centre, looking at ``target``."""
    poses = []
    for i in range(n):
        a = 2.0 * np.pi * i / n
        eye = np.array([radius * np.cos(a), radius * np.sin(a), height + 0.1 * np.sin(3 * a)])
        poses.append(look_at(eye, np.asarray(target, float)))
    return poses


def intrinsics(width: int = 320, height: int = 240, hfov_deg: float = 70.0) -> Intrinsics:
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    return Intrinsics(width, height, float(f), float(f), (width - 1) / 2, (height - 1) / 2)
