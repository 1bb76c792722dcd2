"""Tests of the built-in synthetic scene source: geometry, rendering, camera path and the FrameSource API.

Ground truth here is independent of the renderer: hand-computed distances, the pinhole model, and
consistency between frames (depth + pose of one frame must predict the depth of another).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.synthetic import (
    AxisBox,
    CameraPath,
    PathKind,
    RenderResult,
    Sphere,
    SyntheticConfig,
    SyntheticScene,
    SyntheticSource,
)

SMALL = {"width_px": 160, "height_px": 120}

# a small custom scene with hand-computable distances: room [-1, 1] x [-1, 1] x [0, 2], one ball, one block
TOY = SyntheticScene(
    room_min_W=(-1.0, -1.0, 0.0), room_max_W=(1.0, 1.0, 2.0),
    spheres=(Sphere((0.5, 0.0, 1.0), 0.2, (0.8, 0.2, 0.2)),),
    boxes=(AxisBox((-0.8, -0.2, -0.5), (-0.4, 0.2, 0.6), (0.2, 0.6, 0.2)),),
)


def look_pose(position: tuple[float, float, float], forward: tuple[float, float, float]) -> np.ndarray:
    """T_W_C at ``position`` looking along ``forward`` (horizontal), world z up -> camera y down."""
    f = np.asarray(forward, float) / np.linalg.norm(forward)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, np.cross(f, right), f, position
    return T


def backproject(depth_m: np.ndarray, T_W_C: np.ndarray, K: Intrinsics) -> np.ndarray:
    """World points (H*W, 3) float64 of every pixel's depth (independent pinhole model, not the renderer's)."""
    H, W = depth_m.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    z = depth_m.astype(np.float64)
    p_C = np.stack([(u - K.cx) / K.fx * z, (v - K.cy) / K.fy * z, z], axis=-1).reshape(-1, 3)
    return p_C @ T_W_C[:3, :3].T + T_W_C[:3, 3]


def reprojection_errors(depth_i: np.ndarray, T_i: np.ndarray, depth_j: np.ndarray, T_j: np.ndarray,
                        K: Intrinsics) -> tuple[np.ndarray, float]:
    """|z predicted from frame i - z of frame j| (metres) at every pixel of i that lands inside j.

    Frame j's depth is sampled by bilinear interpolation of inverse depth (exact for planes).
    Returns (errors, fraction of frame i's pixels that landed inside frame j).
    """
    P = backproject(depth_i, T_i, K)
    p_C = (P - T_j[:3, 3]) @ T_j[:3, :3]
    z = p_C[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K.fx * p_C[:, 0] / z + K.cx
        v = K.fy * p_C[:, 1] / z + K.cy
    inside = (z > 0) & (u >= 0) & (u <= K.width_px - 1) & (v >= 0) & (v <= K.height_px - 1)
    u, v, z = u[inside], v[inside], z[inside]
    u0 = np.minimum(np.floor(u).astype(int), K.width_px - 2)
    v0 = np.minimum(np.floor(v).astype(int), K.height_px - 2)
    a, b = u - u0, v - v0
    inv = 1.0 / depth_j.astype(np.float64)
    inv_z = (inv[v0, u0] * (1 - a) * (1 - b) + inv[v0, u0 + 1] * a * (1 - b)
             + inv[v0 + 1, u0] * (1 - a) * b + inv[v0 + 1, u0 + 1] * a * b)
    return np.abs(1.0 / inv_z - z), float(inside.mean())


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the relative rotation R_a^T R_b, for stacks (N, 3, 3)."""
    rel = np.einsum("nji,njk->nik", R_a, R_b)
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


# ----------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = SyntheticConfig()
    assert (cfg.width_px, cfg.height_px, cfg.fps, cfg.hfov_deg, cfg.path, cfg.texture) == (
        640, 480, 30.0, 70.0, PathKind.LOOP, True)
    assert cfg.num_frames > 0
    assert cfg.effective_period_s == 20.0
    assert SyntheticConfig(path="pan").path is PathKind.PAN
    assert SyntheticConfig(path="pan").effective_period_s == 8.0
    assert SyntheticConfig(period_s=12.5).effective_period_s == 12.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width_px": 0}, "width_px"), ({"width_px": 64.0}, "width_px"), ({"height_px": 100_000}, "height_px"),
        ({"fps": 0.0}, "fps"), ({"fps": float("nan")}, "fps"), ({"fps": True}, "fps"),
        ({"num_frames": -1}, "num_frames"), ({"num_frames": 2.5}, "num_frames"),
        ({"hfov_deg": 5.0}, "hfov_deg"), ({"hfov_deg": 179.0}, "hfov_deg"),
        ({"seed": -1}, "seed"), ({"seed": 2**32}, "seed"),
        ({"path": "spiral"}, "path"), ({"period_s": 0.0}, "period_s"), ({"period_s": float("inf")}, "period_s"),
        ({"texture": "yes"}, "texture"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**kwargs)  # type: ignore[arg-type]


def test_intrinsics_follow_hfov() -> None:
    cfg = SyntheticConfig(width_px=320, height_px=240, hfov_deg=60.0)
    K = SyntheticSource(cfg).intrinsics
    f = 160.0 / math.tan(math.radians(30.0))
    assert (K.width_px, K.height_px) == (320, 240)
    assert K.fx == pytest.approx(f, rel=1e-12) and K.fy == pytest.approx(f, rel=1e-12)
    assert (K.cx, K.cy) == (159.5, 119.5)
    assert K.distortion == ()
    # the outermost pixel edges subtend the field of view
    assert math.degrees(2 * math.atan((K.cx + 0.5) / K.fx)) == pytest.approx(60.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------------
# scene geometry
# ----------------------------------------------------------------------------------------------------


def test_signed_distance_hand_computed() -> None:
    points = np.array([
        [0.0, 0.0, 1.0],  # free: the ball is nearest (0.5 - 0.2)
        [0.5, 0.0, 1.25],  # free: 5 cm above the ball
        [0.5, 0.0, 1.0],  # the ball's centre
        [-0.6, 0.0, 0.3],  # inside the block standing on the floor: 0.2 to its sides
        [0.9, 0.9, 1.9],  # free corner: 0.1 to two walls and the ceiling
        [0.0, 0.0, 0.02],  # 2 cm above the floor
        [1.5, 0.0, 1.0],  # behind a wall
        [1.5, 1.5, 1.0],  # behind a vertical room edge
    ])
    expected = [0.3, 0.05, -0.2, -0.2, 0.1, 0.02, -0.5, -math.sqrt(0.5)]
    np.testing.assert_allclose(TOY.signed_distance(points), expected, atol=1e-12)


def test_signed_distance_rejects_bad_points() -> None:
    with pytest.raises(ValueError, match="shape"):
        TOY.signed_distance(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        TOY.signed_distance(np.array([[0.0, np.nan, 1.0]]))


def test_default_scene_layout() -> None:
    scene = SyntheticScene()
    extent = np.subtract(scene.room_max_W, scene.room_min_W)
    assert 5.0 <= extent[0] <= 7.0 and 2.5 <= extent[2] <= 3.5 and 4.0 <= extent[1] <= 6.0
    assert len(scene.spheres) >= 2 and len(scene.boxes) >= 1
    assert scene.surface_names[:6] == ("wall_x_min", "wall_x_max", "wall_y_min", "wall_y_max", "floor", "ceiling")
    assert len(scene.surface_names) == 6 + len(scene.spheres) + len(scene.boxes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spheres": (Sphere((2.9, 0.0, 1.0), 0.5, (1.0, 0.0, 0.0)),)}, "outside the room"),
        ({"spheres": (Sphere((0.0, 0.0, 1.0), -0.1, (1.0, 0.0, 0.0)),)}, "positive radius"),
        ({"boxes": (AxisBox((0.0, 0.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 0.0)),)}, "exceed"),
        ({"boxes": (AxisBox((5.0, 0.0, 0.0), (6.0, 1.0, 1.0), (1.0, 0.0, 0.0)),)}, "outside the room"),
        ({"room_min_W": (0.0, 0.0, 0.0), "room_max_W": (1.0, -1.0, 1.0)}, "room extent"),
        ({"room_colors_rgb": ((0.5, 0.5, 0.5),)}, "6 colours"),
        ({"spheres": (Sphere((0.0, 0.0, 1.0), 0.1, (1.5, 0.0, 0.0)),)}, r"\[0, 1\]"),
    ],
)
def test_scene_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticScene(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# rendering against independent ground truth
# ----------------------------------------------------------------------------------------------------


def test_depth_is_z_depth_not_ray_length() -> None:
    """Facing a wall squarely, every pixel's depth is the wall distance (a ray length would grow to the edges)."""
    scene = SyntheticScene(spheres=(), boxes=())
    K = Intrinsics.from_hfov(160, 120, 60.0)  # the view stays on the wall: +-30 deg across, +-23 deg up/down
    result = scene.render(look_pose((0.0, 0.0, 1.5), (1.0, 0.0, 0.0)), K)  # the x = 3 wall, 3 m ahead
    assert result.depth_m.dtype == np.float32 and result.depth_m.shape == (120, 160)
    np.testing.assert_allclose(result.depth_m, 3.0, atol=1e-6)
    assert np.all(result.surface_id == scene.surface_names.index("wall_x_max"))


def test_sphere_silhouette_matches_pinhole_model() -> None:
    """A ball of radius r at distance D spans 2 f tan(asin(r / D)) pixels across the image centre."""
    K = Intrinsics.from_hfov(161, 121, 60.0)  # odd size: the principal point is a pixel centre
    r, D = 0.5, 2.0
    scene = SyntheticScene(spheres=(Sphere((0.0, 0.0, 1.5), r, (0.8, 0.2, 0.2)),), boxes=())
    result = scene.render(look_pose((-D, 0.0, 1.5), (1.0, 0.0, 0.0)), K)
    sphere_id = scene.surface_names.index("sphere0")
    half_px = K.fx * math.tan(math.asin(r / D))
    row = result.surface_id[int(K.cy)]
    assert int(np.count_nonzero(row == sphere_id)) == 2 * math.floor(half_px) + 1
    assert result.depth_m[int(K.cy), int(K.cx)] == pytest.approx(D - r, abs=1e-6)


def test_rendered_depth_lies_on_the_surface() -> None:
    """Back-projected depth of every pixel is on the scene surface (sdf ~ 0) and on the surface it is labelled."""
    source = SyntheticSource(SyntheticConfig(**SMALL))
    scene, K = source.scene, source.intrinsics
    n_room = 6
    seen = set()
    for frame_id in range(0, 600, 75):
        T = source.frame_pose(frame_id)
        result = scene.render(T, K)
        P = backproject(result.depth_m, T, K)
        sdf = scene.signed_distance(P)
        # float32 depth alone is good to ~5e-7 m at 8 m
        assert np.abs(sdf).max() < 1e-6, f"frame {frame_id}: |sdf| up to {np.abs(sdf).max():.2e} m"
        sid = result.surface_id.ravel()
        seen.update(np.unique(sid).tolist())
        for i, s in enumerate(scene.spheres):
            on = sid == n_room + i
            dist = np.linalg.norm(P[on] - np.asarray(s.center_W), axis=1) - s.radius_m
            assert np.all(np.abs(dist) < 1e-6)
        floor = sid == scene.surface_names.index("floor")
        assert np.all(np.abs(P[floor, 2] - scene.room_min_W[2]) < 1e-6)
    assert seen >= set(range(len(scene.surface_names))) - {scene.surface_names.index("ceiling")}


def test_depth_and_pose_agree_between_frames() -> None:
    """Frame i's depth + both poses predict frame j's depth (median < 0.01 mm, >= 95% within 1 cm)."""
    source = SyntheticSource(SyntheticConfig(**SMALL))
    K = source.intrinsics
    for frame_id in (0, 140, 290, 445):
        j = frame_id + 6
        T_i, T_j = source.frame_pose(frame_id), source.frame_pose(j)
        d_i, d_j = (source.scene.render(T, K).depth_m for T in (T_i, T_j))
        errors, overlap = reprojection_errors(d_i, T_i, d_j, T_j, K)
        assert overlap > 0.6
        assert np.median(errors) < 1e-5, f"frames {frame_id}->{j}: median error {np.median(errors):.2e} m"
        assert np.mean(errors < 0.01) >= 0.95  # the rest: occlusion boundaries
        # the check can fail: a 5 cm error in frame j's position (not parallel to any face: moving parallel
        # to a plane leaves its depth unchanged) or a 1 degree error in its orientation is plainly visible
        T_shifted = T_j.copy()
        T_shifted[:3, 3] += [0.03, -0.03, 0.03]
        T_turned = T_j.copy()
        T_turned[:3, :3] = T_j[:3, :3] @ cv2.Rodrigues(np.array([0.0, math.radians(1.0), 0.0]))[0]
        for T_wrong in (T_shifted, T_turned):
            wrong, _ = reprojection_errors(d_i, T_i, d_j, T_wrong, K)
            assert np.median(wrong) > 0.005


def test_normals() -> None:
    source = SyntheticSource(SyntheticConfig(**SMALL))
    scene, K = source.scene, source.intrinsics
    T = source.frame_pose(30)
    result = scene.render(T, K, with_normals=True)
    assert result.normals_W is not None and result.normals_W.shape == (120, 160, 3)
    n = result.normals_W.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    P = backproject(result.depth_m, T, K)
    assert np.all(np.einsum("ij,ij->i", n, P - T[:3, 3]) < 0)  # every normal faces the camera
    sid = result.surface_id.ravel()
    np.testing.assert_allclose(n[sid == scene.surface_names.index("floor")], [[0.0, 0.0, 1.0]] * int(
        np.count_nonzero(sid == scene.surface_names.index("floor"))), atol=1e-6)
    for i, s in enumerate(scene.spheres):
        on = sid == 6 + i
        expected = (P[on] - np.asarray(s.center_W)) / s.radius_m
        np.testing.assert_allclose(n[on], expected, atol=1e-4)
    assert scene.render(T, K).normals_W is None


def test_render_rejects_bad_input() -> None:
    scene = SyntheticScene()
    K = Intrinsics.from_hfov(32, 24, 70.0)
    with pytest.raises(ValueError, match="free space"):
        scene.render(look_pose((5.0, 0.0, 1.5), (1.0, 0.0, 0.0)), K)  # outside the room
    with pytest.raises(ValueError, match="free space"):
        scene.render(look_pose(scene.spheres[0].center_W, (1.0, 0.0, 0.0)), K)  # inside a ball
    bad = look_pose((0.0, 0.0, 1.5), (1.0, 0.0, 0.0))
    bad[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="rotation"):
        scene.render(bad, K)
    with pytest.raises(ValueError, match="4x4"):
        scene.render(np.eye(3), K)
    distorted = Intrinsics(32, 24, 20.0, 20.0, 16.0, 12.0, (0.1, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="pinhole"):
        scene.render(look_pose((0.0, 0.0, 1.5), (1.0, 0.0, 0.0)), distorted)


# ----------------------------------------------------------------------------------------------------
# texture
# ----------------------------------------------------------------------------------------------------


def test_image_is_textured_for_feature_trackers() -> None:
    textured = SyntheticSource(SyntheticConfig())
    flat = SyntheticSource(SyntheticConfig(texture=False))
    floor = textured.scene.surface_names.index("floor")
    for frame_id in (0, 200, 400):
        T = textured.frame_pose(frame_id)
        rich, plain = (src.scene.render(T, src.intrinsics) for src in (textured, flat))
        grey_rich, grey_plain = (cv2.cvtColor(r.image, cv2.COLOR_RGB2GRAY) for r in (rich, plain))
        corners_rich = cv2.goodFeaturesToTrack(grey_rich, maxCorners=3000, qualityLevel=0.01, minDistance=7)
        corners_plain = cv2.goodFeaturesToTrack(grey_plain, maxCorners=3000, qualityLevel=0.01, minDistance=7)
        n_rich = 0 if corners_rich is None else len(corners_rich)
        n_plain = 0 if corners_plain is None else len(corners_plain)
        assert n_rich > 500, f"frame {frame_id}: only {n_rich} corners"
        assert n_plain * 4 < n_rich
        on_floor = rich.surface_id == floor
        assert grey_rich[on_floor].std() > 15.0  # the floor is patterned ...
        assert grey_plain[on_floor].std() < 1.0  # ... and flat without texture (uniform light on a plane)
        np.testing.assert_array_equal(rich.depth_m, plain.depth_m)


# ----------------------------------------------------------------------------------------------------
# camera path
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PathKind))
def test_path_is_smooth_hand_held_and_clear_of_surfaces(kind: PathKind) -> None:
    source = SyntheticSource(SyntheticConfig(path=kind, **SMALL))
    path = source.path
    dt = 1.0 / 120.0
    times = np.arange(0.0, path.period_s + dt / 2, dt)
    poses = np.stack([path.camera_pose(float(t)) for t in times])
    R, c = poses[:, :3, :3], poses[:, :3, 3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    assert source.scene.signed_distance(c).min() > 0.5  # at least 0.5 m from every surface
    speed = np.linalg.norm(np.diff(c, axis=0), axis=1) / dt
    assert 0.3 <= speed.mean() <= 0.6 and speed.max() < 0.8, (speed.mean(), speed.max())
    turn = rotation_angle_deg(R[:-1], R[1:]) / dt
    assert turn.max() < 30.0, turn.max()
    # continuity of velocity and angular velocity: no kinks (bounded accelerations)
    accel = np.linalg.norm(np.diff(c, 2, axis=0), axis=1) / dt**2
    assert accel.max() < 1.0
    assert np.abs(np.diff(turn)).max() / dt < 30.0
    # periodic: the camera comes back to where it started (loop closure / relocalisation material)
    np.testing.assert_allclose(path.camera_pose(path.period_s), path.camera_pose(0.0), atol=1e-9)
    np.testing.assert_allclose(path.camera_pose(3.0 + 2 * path.period_s), path.camera_pose(3.0), atol=1e-9)


@pytest.mark.parametrize("kind", list(PathKind))
def test_path_looks_at_objects(kind: PathKind) -> None:
    source = SyntheticSource(SyntheticConfig(path=kind, width_px=64, height_px=48))
    path, scene = source.path, source.scene
    coverage = []
    for i in range(24):
        result = scene.render(path.camera_pose(path.period_s * i / 24), source.intrinsics)
        coverage.append(float(np.mean(result.surface_id >= 6)))
    assert min(coverage) > 0.02, coverage  # some object is always in view


def test_camera_path_validation() -> None:
    with pytest.raises(ValueError, match="period_s"):
        CameraPath(PathKind.LOOP, 0.0)
    with pytest.raises(ValueError, match="finite"):
        CameraPath().camera_pose(float("nan"))


# ----------------------------------------------------------------------------------------------------
# the FrameSource
# ----------------------------------------------------------------------------------------------------


def test_frames_fields_and_types() -> None:
    cfg = SyntheticConfig(fps=30.0, num_frames=3, **SMALL)
    source = SyntheticSource(cfg)
    assert source.name == "synthetic" and source.nominal_fps == 30.0 and source.is_live is False
    source.open()
    frames = [source.read() for _ in range(3)]
    for i, frame in enumerate(frames):
        assert isinstance(frame, ColorFrame)
        assert frame.frame_id == i
        assert frame.stamp_ns == round(i / 30.0 * 1e9)
        assert frame.source == "synthetic"
        assert frame.image.dtype == np.uint8 and frame.image.shape == (120, 160, 3)
        assert frame.depth_m is not None and frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (120, 160)
        assert np.all(frame.depth_m > 0.0)
        assert frame.T_W_C is not None and frame.T_W_C.dtype == np.float64 and frame.T_W_C.shape == (4, 4)
        np.testing.assert_array_equal(frame.T_W_C, source.camera_pose(i / 30.0))
        assert frame.intrinsics == Intrinsics.from_hfov(160, 120, cfg.hfov_deg)
    assert frames[1] is not None and frames[1].stamp_ns == 33_333_333
    assert source.read() is None
    # frames survive the wire
    assert frames[2] is not None and ColorFrame.decode(frames[2].encode()).same_as(frames[2])


def test_deterministic_for_a_seed() -> None:
    a, b = SyntheticSource(SyntheticConfig(seed=7, **SMALL)), SyntheticSource(SyntheticConfig(seed=7, **SMALL))
    other = SyntheticSource(SyntheticConfig(seed=8, **SMALL))
    for s in (a, b, other):
        s.open()
    for _ in range(3):
        fa, fb, fo = a.read(), b.read(), other.read()
        assert fa is not None and fb is not None and fo is not None
        assert fa.same_as(fb)
        assert not np.array_equal(fa.image, fo.image)  # the seed changes the texture ...
        np.testing.assert_array_equal(fa.depth_m, fo.depth_m)  # ... not the geometry or the path
        np.testing.assert_array_equal(fa.T_W_C, fo.T_W_C)


def test_end_skip_and_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    source = SyntheticSource(SyntheticConfig(num_frames=5, **SMALL))
    with pytest.raises(SourceError, match="synthetic"):
        source.read()
    renders: list[int] = []
    original = SyntheticScene.render

    def counting_render(self: SyntheticScene, *args: object, **kwargs: object) -> RenderResult:
        renders.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SyntheticScene, "render", counting_render)
    source.open()
    first = source.read()
    assert first is not None and first.frame_id == 0
    assert source.skip() and source.skip() and source.skip()
    assert len(renders) == 1  # skip() does not render
    last = source.read()
    assert last is not None and last.frame_id == 4 and last.stamp_ns == round(4 / 30.0 * 1e9)
    np.testing.assert_array_equal(last.T_W_C, source.frame_pose(4))
    assert source.read() is None and source.read() is None
    assert source.skip() is False
    source.close()
    source.close()  # safe twice
    with pytest.raises(SourceError, match="open"):
        source.skip()
    source.open()  # reopening starts over
    again = source.read()
    assert again is not None and again.frame_id == 0 and again.same_as(first)


def test_endless_source_loops() -> None:
    cfg = SyntheticConfig(num_frames=0, fps=10.0, period_s=6.0, **SMALL)  # 60 frames per loop
    source = SyntheticSource(cfg)
    source.open()
    first = source.read()
    for _ in range(59 + 60 * 4):
        assert source.skip()
    revisit = source.read()
    assert first is not None and revisit is not None
    assert revisit.frame_id == 300
    np.testing.assert_allclose(revisit.T_W_C, first.T_W_C, atol=1e-9)  # back at the start after 5 loops
    np.testing.assert_allclose(revisit.depth_m, first.depth_m, atol=1e-5)
