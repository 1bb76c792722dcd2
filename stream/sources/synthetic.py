"""The built-in synthetic scene: a textured room with a few objects, ray-cast with vectorised numpy.

It lets ``depthslam run`` / ``capture`` work on a fresh machine with no camera and no downloads, and it is
the ground truth other tests use: every frame carries its exact z-depth and camera pose, and
:meth:`SyntheticScene.signed_distance` gives the exact distance to the surface for TSDF checks.

World frame ``W``: x and y span the floor, z points up; metres. The default room's interior is
``[-3, 3] x [-2.5, 2.5] x [0, 3]`` (6 m x 5 m x 3 m) with three axis-aligned boxes (table, cabinet, bench) and
three spheres. Camera axes follow the house convention (x right, y down, z forward); poses are ``T_W_C``.

Pixel ``(u, v)`` (column, row) is the ray through the pixel centre ``((u - cx) / fx, (v - cy) / fy, 1)``.
The texture lives in world coordinates (it does not swim when the camera moves) and the shading is
Lambertian under a fixed directional light, so a surface point has the same colour in every frame.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import numpy as np

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError

Vec3 = tuple[float, float, float]

# ----------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------


class PathKind(enum.StrEnum):
    """Which camera path the synthetic source follows (both are periodic: the camera revisits places)."""

    LOOP = "loop"
    """A closed loop through the middle of the room, turning once around (default period 20 s)."""
    PAN = "pan"
    """Side-to-side sway in front of the +y wall with a gentle pan, little rotation (default period 8 s)."""


DEFAULT_PERIOD_S: dict[PathKind, float] = {PathKind.LOOP: 20.0, PathKind.PAN: 8.0}
"""Period of each path kind when :attr:`SyntheticConfig.period_s` is ``None``."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the built-in synthetic scene source."""

    width_px: int = 640
    """Image width in pixels (8..8192)."""
    height_px: int = 480
    """Image height in pixels (8..8192)."""
    fps: float = 30.0
    """Nominal frame rate; frame ``i`` is taken at ``t = i / fps`` seconds on the camera path."""
    num_frames: int = 720
    """Frames before the source ends; 0 = endless (the path is periodic, so it loops forever).

    The default (24 s at 30 fps) covers one full loop of the default path plus 4 s of revisiting its start.
    """
    hfov_deg: float = 70.0
    """Horizontal field of view in degrees (20..120); square pixels, centred principal point."""
    seed: int = 0
    """Seed of the procedural texture (0..2**32-1). Geometry and camera path do not depend on it."""
    path: PathKind = PathKind.LOOP
    """Camera path kind (a :class:`PathKind` or its string value)."""
    period_s: float | None = None
    """Duration of one cycle of the path in seconds; ``None`` = the kind's default (LOOP 20 s, PAN 8 s).

    Speeds scale with 1 / period: at the defaults the camera moves at 0.2-0.5 m/s (mean about 0.35 m/s)
    and turns at most about 22 deg/s; shorter periods make it faster.
    """
    texture: bool = True
    """Procedural texture on every surface; False gives flat per-surface colours (texture-poor scene)."""

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px"):
            value = getattr(self, name)
            if not _is_int(value) or not 8 <= value <= 8192:
                raise ValueError(f"SyntheticConfig.{name} must be an int in 8..8192, got {value!r}")
        if not _is_real(self.fps) or not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"SyntheticConfig.fps must be a positive finite number, got {self.fps!r}")
        if not _is_int(self.num_frames) or self.num_frames < 0:
            raise ValueError(f"SyntheticConfig.num_frames must be an int >= 0 (0 = endless), got {self.num_frames!r}")
        if not _is_real(self.hfov_deg) or not 20.0 <= self.hfov_deg <= 120.0:
            raise ValueError(f"SyntheticConfig.hfov_deg must be in [20, 120] degrees, got {self.hfov_deg!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"SyntheticConfig.seed must be an int in 0..2**32-1, got {self.seed!r}")
        try:
            object.__setattr__(self, "path", PathKind(self.path))
        except ValueError:
            kinds = ", ".join(repr(k.value) for k in PathKind)
            raise ValueError(f"SyntheticConfig.path must be one of {kinds}, got {self.path!r}") from None
        if self.period_s is not None and (
            not _is_real(self.period_s) or not math.isfinite(self.period_s) or self.period_s <= 0
        ):
            raise ValueError(
                f"SyntheticConfig.period_s must be a positive finite number or None, got {self.period_s!r}"
            )
        if not isinstance(self.texture, bool):
            raise ValueError(f"SyntheticConfig.texture must be a bool, got {self.texture!r}")

    @property
    def effective_period_s(self) -> float:
        """The path period actually used (``period_s`` or the kind's default)."""
        return DEFAULT_PERIOD_S[self.path] if self.period_s is None else float(self.period_s)

    def intrinsics(self) -> Intrinsics:
        """Pinhole intrinsics of the rendered frames (from ``hfov_deg``, square pixels, no distortion)."""
        return Intrinsics.from_hfov(self.width_px, self.height_px, self.hfov_deg)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------------
# geometry (data) and the exact signed distance
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sphere:
    """A solid sphere."""

    center_W: Vec3  # noqa: N815 - frame suffix convention
    """Centre in world coordinates, metres."""
    radius_m: float
    """Radius in metres (> 0)."""
    color_rgb: Vec3
    """Base colour, each channel in [0, 1]."""


@dataclass(frozen=True)
class AxisBox:
    """A solid axis-aligned box.

    A box resting on the floor is best given a ``min_W`` z below the floor (sunk into it): the solid is
    then the same, and :meth:`SyntheticScene.signed_distance` stays exact inside the box as well.
    """

    min_W: Vec3  # noqa: N815
    """Minimum corner in world coordinates, metres."""
    max_W: Vec3  # noqa: N815
    """Maximum corner in world coordinates, metres (> ``min_W`` on every axis)."""
    color_rgb: Vec3
    """Base colour, each channel in [0, 1]."""


ROOM_FACE_NAMES: tuple[str, ...] = ("wall_x_min", "wall_x_max", "wall_y_min", "wall_y_max", "floor", "ceiling")
"""Surface ids 0..5: the six inward-facing room faces (face ``2k`` is at the room's minimum on axis k)."""

DEFAULT_SPHERES: tuple[Sphere, ...] = (
    Sphere((1.4, 1.3, 0.5), 0.5, (0.85, 0.25, 0.20)),  # big red ball on the floor
    Sphere((-1.7, 1.3, 1.05), 0.3, (0.20, 0.35, 0.85)),  # blue ball on the table
    Sphere((0.2, -1.9, 1.75), 0.25, (0.90, 0.80, 0.20)),  # yellow "lamp" hanging near the -y wall
)
DEFAULT_BOXES: tuple[AxisBox, ...] = (
    AxisBox((-2.3, 0.8, -0.5), (-1.1, 1.8, 0.75), (0.50, 0.34, 0.22)),  # table (sunk into the floor)
    AxisBox((1.9, -2.0, -0.5), (2.6, -1.2, 1.1), (0.35, 0.55, 0.38)),  # cabinet (sunk into the floor)
    AxisBox((-2.6, -2.1, -0.5), (-1.5, -1.5, 0.45), (0.55, 0.30, 0.45)),  # low bench (sunk into the floor)
)
DEFAULT_ROOM_COLORS: tuple[Vec3, ...] = (
    (0.80, 0.72, 0.60), (0.62, 0.74, 0.82), (0.75, 0.80, 0.62),
    (0.85, 0.66, 0.62), (0.58, 0.45, 0.33), (0.88, 0.88, 0.86),
)

_LIGHT_DIR_W = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
"""Unit vector towards the directional light."""
_AMBIENT = 0.5
_DIFFUSE = 0.5
_CODE_NORMALS = np.array(
    [[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], np.float32
)
"""Unit normal per normal code + 1: code 2k + 1 faces +axis k, code 2k faces -axis k; row 0 is unused (curved)."""
_CODE_SHADE = (_AMBIENT + _DIFFUSE * np.maximum(_CODE_NORMALS @ _LIGHT_DIR_W, 0.0)).astype(np.float32)
"""Lambertian shade factor per normal code + 1 (planar faces only)."""
MAX_OBJECTS = 64
"""Most spheres + boxes a scene may hold (each surface gets its own 1 MiB texture)."""


@dataclass(frozen=True)
class RenderResult:
    """One rendered view.

    image: (H, W, 3) uint8 RGB. depth_m: (H, W) float32 z-depth along the optical axis (not ray length),
    every pixel valid (the room is closed). surface_id: (H, W) int16 index into
    :attr:`SyntheticScene.surface_names`. normals_W: (H, W, 3) float32 unit world normals facing the
    camera, when asked for, else None.
    """

    image: np.ndarray
    depth_m: np.ndarray
    surface_id: np.ndarray
    normals_W: np.ndarray | None = None  # noqa: N815


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """A closed box room (inward-facing faces) with spheres and axis-aligned boxes inside. Data + queries.

    Surface ids: 0..5 room faces (:data:`ROOM_FACE_NAMES`), then one per sphere, then one per box.
    """

    room_min_W: Vec3 = (-3.0, -2.5, 0.0)  # noqa: N815
    """Room interior minimum corner, metres (the floor is at ``room_min_W[2]``)."""
    room_max_W: Vec3 = (3.0, 2.5, 3.0)  # noqa: N815
    """Room interior maximum corner, metres (the ceiling is at ``room_max_W[2]``)."""
    spheres: tuple[Sphere, ...] = DEFAULT_SPHERES
    """Solid spheres inside the room."""
    boxes: tuple[AxisBox, ...] = DEFAULT_BOXES
    """Solid axis-aligned boxes; they may reach through the room's faces (e.g. sunk into the floor)."""
    room_colors_rgb: tuple[Vec3, ...] = DEFAULT_ROOM_COLORS
    """Base colour of each room face, in :data:`ROOM_FACE_NAMES` order, channels in [0, 1]."""
    seed: int = 0
    """Seed of the procedural texture (0..2**32-1)."""
    textured: bool = True
    """Procedural texture on (True) or flat colours (False)."""

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.room_min_W, float), np.asarray(self.room_max_W, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo) & np.isfinite(hi)) or np.any(hi <= lo):
            raise ValueError(f"room extent must be finite with max > min, got {self.room_min_W} .. {self.room_max_W}")
        n_objects = len(self.spheres) + len(self.boxes)
        if n_objects > MAX_OBJECTS:
            raise ValueError(f"a scene holds at most {MAX_OBJECTS} spheres + boxes, got {n_objects}")
        if len(self.room_colors_rgb) != 6:
            raise ValueError(f"room_colors_rgb needs 6 colours (one per face), got {len(self.room_colors_rgb)}")
        for i, s in enumerate(self.spheres):
            c = np.asarray(s.center_W, float)
            if c.shape != (3,) or not np.all(np.isfinite(c)) or not (math.isfinite(s.radius_m) and s.radius_m > 0):
                raise ValueError(f"sphere {i}: needs a finite 3-D centre and a positive radius, got {s}")
            if np.any(c - s.radius_m < lo - 1e-9) or np.any(c + s.radius_m > hi + 1e-9):
                raise ValueError(f"sphere {i} ({s.center_W}, r={s.radius_m}) reaches outside the room")
        for i, b in enumerate(self.boxes):
            bmin, bmax = np.asarray(b.min_W, float), np.asarray(b.max_W, float)
            if bmin.shape != (3,) or bmax.shape != (3,) or not np.all(np.isfinite(bmin) & np.isfinite(bmax)):
                raise ValueError(f"box {i}: needs finite 3-D corners, got {b}")
            if np.any(bmax <= bmin):
                raise ValueError(f"box {i}: max_W must exceed min_W on every axis, got {b.min_W} .. {b.max_W}")
            if np.any(bmax <= lo) or np.any(bmin >= hi):
                raise ValueError(f"box {i} ({b.min_W} .. {b.max_W}) lies outside the room")
        colors = [*self.room_colors_rgb, *(s.color_rgb for s in self.spheres), *(b.color_rgb for b in self.boxes)]
        table = np.asarray(colors, dtype=np.float64)
        if table.shape != (len(colors), 3) or not np.all((table >= 0) & (table <= 1)):
            raise ValueError("every colour must be three numbers in [0, 1]")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int in 0..2**32-1, got {self.seed!r}")
        if not isinstance(self.textured, bool):
            raise ValueError(f"textured must be a bool, got {self.textured!r}")

    # -- queries ---------------------------------------------------------------------------------

    @property
    def surface_names(self) -> tuple[str, ...]:
        """Name of each surface id: room faces, ``sphere<i>``, ``box<i>``."""
        return (
            *ROOM_FACE_NAMES, *(f"sphere{i}" for i in range(len(self.spheres))),
            *(f"box{i}" for i in range(len(self.boxes))),
        )

    def signed_distance(self, points_W: np.ndarray) -> np.ndarray:
        """Signed distance from each point to the scene surface, metres.

        points_W: (N, 3) world points (float64, or anything convertible to it). Returns (N,) float64:
        positive in free space (inside the room, outside every object), negative inside solid matter.
        Exact in free space and on the surface; inside solid matter where two solids overlap it is a
        bound (|value| <= true distance), which never matters near visible surfaces.
        """
        p = np.asarray(points_W, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points_W must have shape (N, 3), got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("points_W contains non-finite values")
        sd = -_box_sdf(p, self.room_min_W, self.room_max_W)
        for s in self.spheres:
            sd = np.minimum(sd, np.linalg.norm(p - np.asarray(s.center_W), axis=1) - s.radius_m)
        for b in self.boxes:
            sd = np.minimum(sd, _box_sdf(p, b.min_W, b.max_W))
        return sd

    # -- rendering -------------------------------------------------------------------------------

    def render(self, T_W_C: np.ndarray, intrinsics: Intrinsics, *, with_normals: bool = False) -> RenderResult:
        """Ray-cast the scene from camera pose ``T_W_C`` ((4, 4) float64 camera-to-world).

        ``intrinsics`` must be distortion-free (pinhole). Raises ValueError for a malformed pose or a
        camera centre that is not in free space. See :class:`RenderResult` for the outputs.
        """
        T = _check_pose(T_W_C)
        if any(d != 0.0 for d in intrinsics.distortion):
            raise ValueError(f"the synthetic renderer is pinhole only; got distortion {intrinsics.distortion}")
        o = T[:3, 3]
        if self.signed_distance(o[None, :])[0] <= 0.0:
            raise ValueError(f"camera centre {o.tolist()} is not in the scene's free space")
        H, W = intrinsics.height_px, intrinsics.width_px
        image = np.empty((H, W, 3), np.uint8)
        depth_m = np.empty((H, W), np.float32)
        surface_id = np.empty((H, W), np.int16)
        normals = np.empty((H, W, 3), np.float32) if with_normals else None
        # Render in bands of rows: every pixel is independent, and small temporaries stay in the cache and
        # in the allocator's heap (whole-image temporaries are mmapped afresh and page-faulted every frame).
        rows = max(1, _BAND_PIXELS // W)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            band = Intrinsics(W, r1 - r0, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy - r0)
            hit = self._cast(T, band)
            depth_m[r0:r1] = hit.t
            band_image, band_normals = self._shade(hit, depth_m[r0:r1], o, with_normals)
            image[r0:r1] = band_image
            surface_id[r0:r1] = hit.sid
            if normals is not None and band_normals is not None:
                normals[r0:r1] = band_normals
        return RenderResult(image, depth_m, surface_id, normals)

    def _cast(self, T: np.ndarray, K: Intrinsics) -> _Hits:
        """Closest hit along every pixel ray. Rays have z = 1 in the camera, so ray parameter = z-depth."""
        H, W = K.height_px, K.width_px
        R, o = T[:3, :3], T[:3, 3]
        xs = (np.arange(W, dtype=np.float64) - K.cx) / K.fx
        ys = (np.arange(H, dtype=np.float64) - K.cy) / K.fy
        d = [float(R[k, 0]) * xs[None, :] + (float(R[k, 1]) * ys + float(R[k, 2]))[:, None] for k in range(3)]
        with np.errstate(divide="ignore"):
            inv = [1.0 / dk for dk in d]  # +-inf where a ray is parallel to an axis plane

        # room: the exit distance of the (convex) interior; ray from inside always exits
        t = np.empty((H, W))
        sid = np.empty((H, W), np.int16)
        lo, hi = self.room_min_W, self.room_max_W
        for k in range(3):
            exit_k = np.maximum((lo[k] - o[k]) * inv[k], (hi[k] - o[k]) * inv[k])
            face_k = (d[k] > 0).view(np.int8) + np.int8(2 * k)  # the max face when the ray goes towards +k
            if k == 0:
                t[:], sid[:] = exit_k, face_k
            else:
                closer = exit_k < t
                np.copyto(t, exit_k, where=closer)
                np.copyto(sid, face_k, where=closer)

        n_room = len(ROOM_FACE_NAMES)
        for i, s in enumerate(self.spheres):
            c = np.asarray(s.center_W)
            r = s.radius_m
            win = _screen_window(T, K, c - r, c + r)
            if win is None:
                continue
            dw = [dk[win] for dk in d]
            oc = o - c
            cc = float(oc @ oc - r * r)  # > 0: the camera is outside the sphere
            b = dw[0] * float(oc[0]) + dw[1] * float(oc[1]) + dw[2] * float(oc[2])
            a = dw[0] * dw[0] + dw[1] * dw[1] + dw[2] * dw[2]
            disc = b * b - a * cc
            root = np.sqrt(np.maximum(disc, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                t_hit = cc / (root - b)  # = (-b - sqrt(disc)) / a, without cancellation
            tw = t[win]
            closer = (disc >= 0) & (b < 0) & (t_hit < tw)
            np.copyto(tw, t_hit, where=closer)
            np.copyto(sid[win], np.int16(n_room + i), where=closer)

        for i, bx in enumerate(self.boxes):
            win = _screen_window(T, K, np.asarray(bx.min_W), np.asarray(bx.max_W))
            if win is None:
                continue
            t_near: np.ndarray | None = None
            t_far: np.ndarray | None = None
            with np.errstate(invalid="ignore"):  # 0 * inf = nan -> no hit (ray inside a face's plane)
                for k in range(3):
                    t1 = (bx.min_W[k] - o[k]) * inv[k][win]
                    t2 = (bx.max_W[k] - o[k]) * inv[k][win]
                    near_k, far_k = np.minimum(t1, t2), np.maximum(t1, t2)
                    t_near = near_k if t_near is None else np.maximum(t_near, near_k)
                    t_far = far_k if t_far is None else np.minimum(t_far, far_k)
                assert t_near is not None and t_far is not None
                tw = t[win]
                closer = (t_near <= t_far) & (t_near > 0) & (t_near < tw)
            np.copyto(tw, t_near, where=closer)
            np.copyto(sid[win], np.int16(n_room + len(self.spheres) + i), where=closer)
        return _Hits(t=t, sid=sid, d=d)

    def _shade(
        self, hit: _Hits, depth_m: np.ndarray, o: np.ndarray, with_normals: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Texture + Lambertian shading of every hit; returns the (H, W, 3) uint8 image and optional normals.

        depth_m: (H, W) float32 hit depths; texture and shading run in float32 (1e-7 relative is plenty).
        """
        sid, d = hit.sid, hit.d
        H, W = sid.shape
        p = []
        for k in range(3):
            pk = d[k].astype(np.float32)
            pk *= depth_m
            pk += np.float32(o[k])
            p.append(pk)
        n_room, n_sph = len(ROOM_FACE_NAMES), len(self.spheres)

        # normal code of plane hits: 2k + (normal points to +axis k); room face 2k (min) faces +k.
        code = sid ^ np.int16(1)  # room faces; other surfaces fixed below
        is_object = sid >= n_room
        if np.any(is_object):
            code[is_object] = -1
            self._box_face_codes(p, sid, code)
        idx = code + np.int16(1)  # row of the per-code tables (0 = curved surface, filled per pixel below)
        shade = _CODE_SHADE[idx]
        axis = np.right_shift(np.maximum(code, 0), 1)

        # texture coordinates (metres along the surface): the two world axes in the face's plane
        u = np.where(axis == 0, p[1], p[0])
        v = np.where(axis == 2, p[1], p[2])
        normals = _CODE_NORMALS[idx] if with_normals else None

        sphere_mask = is_object & (sid < n_room + n_sph)
        if np.any(sphere_mask):
            rows, cols = np.nonzero(sphere_mask)
            s_ids = sid[rows, cols] - n_room
            centers = np.asarray([s.center_W for s in self.spheres], np.float32)[s_ids]
            radii = np.asarray([s.radius_m for s in self.spheres], np.float32)[s_ids]
            n = np.stack([p[k][rows, cols] for k in range(3)], axis=1) - centers
            n /= np.linalg.norm(n, axis=1, keepdims=True)
            shade[rows, cols] = _AMBIENT + _DIFFUSE * np.maximum(n @ _LIGHT_DIR_W.astype(np.float32), 0.0)
            # longitude / latitude mapped to arc length, so tiles keep about the same size as on planes
            u[rows, cols] = radii * np.arctan2(n[:, 1], n[:, 0])
            v[rows, cols] = radii * np.arcsin(np.clip(n[:, 2], -1.0, 1.0))
            if normals is not None:
                normals[rows, cols] = n

        # texture lookup: nearest texel of the surface's own texture, then Lambertian shading
        atlas, shifts = self._atlas()
        key = sid * np.int16(_N_CODES) + idx  # (surface, face) pair: opposite box faces look different
        shift = shifts[key]
        iu = np.floor((u + np.float32(_TEX_ORIGIN_M)) * np.float32(1.0 / _TEXEL_M)).astype(np.int32)
        iu += shift[:, :, 0]
        iu &= _TEX_SIZE - 1
        iv = np.floor((v + np.float32(_TEX_ORIGIN_M)) * np.float32(1.0 / _TEXEL_M)).astype(np.int32)
        iv += shift[:, :, 1]
        iv &= _TEX_SIZE - 1
        iv <<= _TEX_BITS
        iv += iu
        iv += sid.astype(np.int32) << (2 * _TEX_BITS)
        texels = atlas[iv].view(np.uint8).reshape(H, W, 4)[:, :, :3]
        image = (texels * shade[:, :, None]).astype(np.uint8)  # shade <= 1: no overflow
        return image, normals

    def _atlas(self) -> tuple[np.ndarray, np.ndarray]:
        """The scene's textures (built once per scene, shared between equal scenes).

        Returns (atlas, shifts): atlas is (S * T * T,) uint32 packed RGBX texels, surface ``s``'s
        T x T texture at offset ``s * T * T``; shifts is (S * 7, 2) int32 texel offsets per (surface, face).
        """
        colors = (*self.room_colors_rgb, *(s.color_rgb for s in self.spheres), *(b.color_rgb for b in self.boxes))
        return _build_atlas(tuple(tuple(float(c) for c in rgb) for rgb in colors), self.seed, self.textured)

    def _box_face_codes(self, p: list[np.ndarray], sid: np.ndarray, code: np.ndarray) -> None:
        """Fill ``code`` for box hits: the face whose plane is closest to the hit point."""
        first = len(ROOM_FACE_NAMES) + len(self.spheres)
        for i, bx in enumerate(self.boxes):
            rows, cols = np.nonzero(sid == first + i)
            if rows.size == 0:
                continue
            q = np.stack([p[k][rows, cols] for k in range(3)], axis=1).astype(np.float64)
            gaps = np.concatenate([np.abs(q - np.asarray(bx.min_W)), np.abs(q - np.asarray(bx.max_W))], axis=1)
            face = np.argmin(gaps, axis=1)  # 0..2: min face of axis k (normal -k); 3..5: max face (normal +k)
            code[rows, cols] = np.where(face < 3, 2 * face, 2 * (face - 3) + 1).astype(np.int16)


@dataclass(frozen=True, eq=False)
class _Hits:
    """Ray-cast result: t (H, W) float64 z-depth, sid (H, W) int16 surface id, d: 3 x (H, W) world ray dirs."""

    t: np.ndarray
    sid: np.ndarray
    d: list[np.ndarray]


def _box_sdf(p: np.ndarray, lo: Vec3, hi: Vec3) -> np.ndarray:
    """Exact signed distance (N,) from points (N, 3) to a solid axis-aligned box, positive outside."""
    q = np.maximum(np.asarray(lo) - p, p - np.asarray(hi))
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def _check_pose(T_W_C: np.ndarray) -> np.ndarray:
    T = np.asarray(T_W_C)
    if T.shape != (4, 4) or not np.issubdtype(T.dtype, np.floating):
        raise ValueError(f"T_W_C must be a 4x4 float array, got shape {T.shape} dtype {T.dtype}")
    T = T.astype(np.float64)
    if not np.all(np.isfinite(T)):
        raise ValueError("T_W_C has non-finite entries")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"T_W_C's last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
        raise ValueError("T_W_C's rotation block is not a proper rotation (orthonormal, det +1)")
    return T


def _screen_window(T: np.ndarray, K: Intrinsics, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice] | None:
    """Image rectangle (rows, cols) that holds the projection of a world box, None if it is not in view.

    The box is clipped to the part in front of the camera (z >= 1 um) before projecting, so the
    rectangle bounds the visible part exactly enough and boxes reaching behind the camera stay cheap.
    """
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pc = (corners - T[:3, 3]) @ T[:3, :3]  # camera coordinates, (8, 3)
    near = 1e-6
    front = pc[:, 2] >= near
    if not np.any(front):
        return None
    points = [pc[front]]
    for i, j in _BOX_EDGES:
        zi, zj = pc[i, 2], pc[j, 2]
        if (zi >= near) != (zj >= near):  # the edge crosses the near plane: keep the crossing point
            w = (near - zi) / (zj - zi)
            points.append((pc[i] + w * (pc[j] - pc[i]))[None, :])
    q = np.concatenate(points)
    u = K.fx * q[:, 0] / q[:, 2] + K.cx
    v = K.fy * q[:, 1] / q[:, 2] + K.cy
    c0, c1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, K.width_px)
    r0, r1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, K.height_px)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


_BOX_EDGES: tuple[tuple[int, int], ...] = tuple(
    (i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit
)
"""The 12 edges of a box whose 8 corners are numbered by bits (x: 4, y: 2, z: 1)."""


_BAND_PIXELS = 640 * 48
"""Pixels per band of rows rendered at once (see SyntheticScene.render)."""
_TEX_BITS = 9
_TEX_SIZE = 1 << _TEX_BITS
"""Texture side in texels (power of two: coordinates wrap with a bit mask)."""
_TEXEL_M = 0.02
"""Texel size in metres: a texture covers 10.24 m, more than any room extent, so nothing repeats."""
_TEX_ORIGIN_M = 5.12
"""Added to texture coordinates so that the room's coordinates (about -3..3 m) never wrap."""
_N_CODES = 7
"""Normal codes -1..5 (curved, then 2k + positive) shifted to 0..6."""
_PALETTE = (
    (242, 242, 242), (20, 20, 20), (230, 40, 40), (40, 180, 50),
    (40, 75, 230), (242, 215, 25), (180, 50, 205), (25, 205, 215),
)


@functools.lru_cache(maxsize=4)
def _build_atlas(colors: tuple[Vec3, ...], seed: int, textured: bool) -> tuple[np.ndarray, np.ndarray]:
    """Procedural textures, one T x T per surface, deterministic in ``seed`` (see SyntheticScene._atlas)."""
    import cv2  # only needed to draw the textures

    n = _TEX_SIZE
    atlas = np.zeros((len(colors), n, n, 4), np.uint8)
    rng_shift = np.random.default_rng([seed, 0x5EED])
    shifts = rng_shift.integers(0, n, (len(colors) * _N_CODES, 2)).astype(np.int32)
    for sid, rgb in enumerate(colors):
        base = np.asarray(rgb, np.float32) * 255.0
        if not textured:
            atlas[sid, :, :, :3] = np.round(base).astype(np.uint8)
            continue
        rng = np.random.default_rng([seed, sid])
        # brightness: random 0.32 m blocks, overlaid with random larger rectangles
        blocks = rng.uniform(0.7, 1.15, (n // 16, n // 16)).astype(np.float32)
        bright = np.kron(blocks, np.ones((16, 16), np.float32))
        for (x, y), (w, h), f in zip(
            rng.integers(0, n, (150, 2)).tolist(), rng.integers(8, 48, (150, 2)).tolist(),
            rng.uniform(0.75, 1.25, 150).tolist(), strict=True,
        ):
            bright[y : y + h, x : x + w] *= f
        tex = np.clip(base * bright[:, :, None], 0.0, 255.0).astype(np.uint8)
        # coloured stickers: small rectangles and discs from a fixed palette
        colours = rng.integers(0, len(_PALETTE), 1500).tolist()
        for (x, y), (w, h), c in zip(
            rng.integers(0, n, (1100, 2)).tolist(), rng.integers(2, 8, (1100, 2)).tolist(), colours[:1100], strict=True
        ):
            cv2.rectangle(tex, (x, y), (x + w, y + h), _PALETTE[c], -1)
        for (x, y), r, c in zip(
            rng.integers(0, n, (400, 2)).tolist(), rng.integers(2, 6, 400).tolist(), colours[1100:], strict=True
        ):
            cv2.circle(tex, (x, y), r, _PALETTE[c], -1)
        # thin dark grid lines every 0.5 m: T- and X-junctions for corner detectors
        for g in range(0, n, 25):
            tex[g, :] //= 3
            tex[:, g] //= 3
        atlas[sid, :, :, :3] = tex
    flat = atlas.reshape(-1).view(np.uint32)
    flat.flags.writeable = False  # cached and shared: nobody may change it
    shifts.flags.writeable = False
    return flat, shifts


# ----------------------------------------------------------------------------------------------------
# camera path
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraPath:
    """A smooth, periodic camera path inside the default room (hand-held-like speed and turn rate)."""

    kind: PathKind = PathKind.LOOP
    """Path shape."""
    period_s: float = DEFAULT_PERIOD_S[PathKind.LOOP]
    """Seconds per cycle; the pose at ``t`` and ``t + period_s`` is the same."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PathKind(self.kind))
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"CameraPath.period_s must be positive and finite, got {self.period_s!r}")

    def camera_pose(self, t_s: float) -> np.ndarray:
        """``T_W_C`` (4, 4) float64 at time ``t_s`` seconds (any real; the path repeats every period)."""
        if not math.isfinite(t_s):
            raise ValueError(f"t_s must be finite, got {t_s!r}")
        th = 2.0 * math.pi * (t_s / self.period_s)
        if self.kind is PathKind.LOOP:
            # an ellipse through the middle of the room, looking inward across the room (a little to the
            # right of its centre) at the objects and walls on the far side; one full turn per period
            pos = (1.3 * math.cos(th), 0.9 * math.sin(th), 1.5 + 0.12 * math.sin(2.0 * th))
            yaw = th + math.pi - math.radians(30.0) + math.radians(6.0) * math.sin(2.0 * th)
            pitch = math.radians(-15.0) + math.radians(5.0) * math.sin(3.0 * th + 0.5)
            roll = math.radians(3.0) * math.sin(2.0 * th + 1.0)
        else:
            # sway side to side in front of the +y wall (table, blue and red balls), panning to follow
            pos = (0.6 * math.sin(th), -0.9 + 0.1 * math.sin(2.0 * th), 1.45 + 0.08 * math.cos(th))
            yaw = math.pi / 2 - math.radians(12.0) * math.sin(th)
            pitch = math.radians(-20.0) + math.radians(4.0) * math.sin(2.0 * th)
            roll = math.radians(2.0) * math.sin(th + 0.7)
        return _pose_from_angles(np.asarray(pos), yaw, pitch, roll)


def _pose_from_angles(pos_W: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera looking along (yaw about world z, pitch up from horizontal), rolled about its optical axis."""
    fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = math.cos(roll), math.sin(roll)
    x_c, y_c = cr * right + sr * down, -sr * right + cr * down
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x_c, y_c, fwd, pos_W
    return T


# ----------------------------------------------------------------------------------------------------
# the frame source
# ----------------------------------------------------------------------------------------------------


class SyntheticSource:
    """The built-in synthetic scene as a :class:`~stream.sources.base.FrameSource`.

    Every :class:`ColorFrame` carries the ground-truth z-depth (``depth_m``) and pose (``T_W_C``).
    Deterministic: the same config yields identical frames. ``open()`` (re)starts at frame 0.
    """

    name: str = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config if config is not None else SyntheticConfig()
        self.scene = SyntheticScene(seed=self.config.seed, textured=self.config.texture)
        """The rendered scene (ground-truth geometry: :meth:`SyntheticScene.signed_distance`)."""
        self.path = CameraPath(self.config.path, self.config.effective_period_s)
        """The camera path (ground-truth trajectory)."""
        self.intrinsics = self.config.intrinsics()
        """Intrinsics of every frame."""
        self._next_id = 0
        self._is_open = False

    @property
    def nominal_fps(self) -> float | None:
        return float(self.config.fps)

    @property
    def is_live(self) -> bool:
        return False

    def camera_pose(self, t_s: float) -> np.ndarray:
        """Ground-truth ``T_W_C`` (4, 4) float64 at time ``t_s`` seconds."""
        return self.path.camera_pose(t_s)

    def frame_pose(self, frame_id: int) -> np.ndarray:
        """Ground-truth ``T_W_C`` (4, 4) float64 of frame ``frame_id`` (taken at ``frame_id / fps``)."""
        return self.path.camera_pose(frame_id / self.config.fps)

    def stamp_ns(self, frame_id: int) -> int:
        """Timestamp of frame ``frame_id``: ``round(frame_id / fps * 1e9)``."""
        return round(frame_id / self.config.fps * 1e9)

    def open(self) -> None:
        self._is_open = True
        self._next_id = 0

    def read(self) -> ColorFrame | None:
        if not self._advance():
            return None
        frame_id = self._next_id - 1
        T_W_C = self.frame_pose(frame_id)
        result = self.scene.render(T_W_C, self.intrinsics)
        return ColorFrame(
            frame_id=frame_id, stamp_ns=self.stamp_ns(frame_id), image=result.image, intrinsics=self.intrinsics,
            depth_m=result.depth_m, T_W_C=T_W_C, source="synthetic",
        )

    def skip(self) -> bool:
        return self._advance()

    def close(self) -> None:
        self._is_open = False

    def _advance(self) -> bool:
        if not self._is_open:
            raise SourceError(f"{self.name}: the source is not open (call open() first)")
        if self.config.num_frames and self._next_id >= self.config.num_frames:
            return False
        self._next_id += 1
        return True
