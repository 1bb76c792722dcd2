"""TumSource on tiny generated sequences (exact values) and on the shared real sequences (gated)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.tum import TumConfig, TumSource, associate_by_time

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

W, H = 8, 6
# colour stamps as text (exact ns expected), depth stamps offset by a few ms
RGB_STAMPS = ["1305031229.500000", "1305031229.533333", "1305031229.566666", "1305031229.600001",
              "1305031229.633333"]
DEPTH_STAMPS = ["1305031229.501000", "1305031229.535000", "1305031229.564000", "1305031229.590000",
                "1305031229.900000"]  # the last rgb (.633) has no depth within 0.02 s; depth .900 matches nothing
GT_T0 = 1305031229.48
GT_DT = 0.01
GT_AXIS = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])


def gt_pose(t: float) -> np.ndarray:
    """The continuous ground-truth motion: constant-rate rotation about GT_AXIS and linear translation.

    Sampling it and interpolating (linear + slerp) reproduces it exactly at any time in between.
    """
    s = t - GT_T0
    T = np.eye(4)
    R, _ = cv2.Rodrigues(GT_AXIS * (0.2 + 3.0 * s))
    T[:3, :3] = R
    T[:3, 3] = [0.5 + 2.0 * s, -1.0 + 0.5 * s, 1.5 - 1.0 * s]
    return T


def quaternion_of(t: float) -> np.ndarray:
    angle = 0.2 + 3.0 * (t - GT_T0)
    return np.array([*(GT_AXIS * math.sin(angle / 2)), math.cos(angle / 2)])


def depth_raw(index: int) -> np.ndarray:
    raw = np.random.default_rng(index).integers(0, 65536, size=(H, W)).astype(np.uint16)
    raw[0, 0], raw[0, 1], raw[0, 2] = 0, 5000, 12345
    return raw


def colour(index: int) -> np.ndarray:
    """BGR image with blue = 10 * index, green 1, red 2."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10 * index, 1, 2
    return image


def make_sequence(folder: Path, *, camera: str | None = "default", associations: bool = False,
                  gt_samples: int = 20) -> Path:
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    rgb_lines = ["# color images", "# file: 'tiny.bag'", "# timestamp filename"]
    for i, stamp in enumerate(RGB_STAMPS):
        assert cv2.imwrite(str(folder / "rgb" / f"{stamp}.png"), colour(i))
        rgb_lines.append(f"{stamp} rgb/{stamp}.png")
    depth_lines = ["# depth maps", "# file: 'tiny.bag'", "# timestamp filename"]
    for i, stamp in enumerate(DEPTH_STAMPS):
        assert cv2.imwrite(str(folder / "depth" / f"{stamp}.png"), depth_raw(i))
        depth_lines.append(f"{stamp} depth/{stamp}.png")
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt_lines = ["# ground truth trajectory", "# file: 'tiny.bag'", "# timestamp tx ty tz qx qy qz qw"]
    for k in range(gt_samples):
        t = GT_T0 + k * GT_DT
        tx, ty, tz = gt_pose(t)[:3, 3]
        q = quaternion_of(t) * (-1.0 if k % 2 else 1.0)  # sign flips between samples, as in real TUM files
        gt_lines.append(f"{t:.4f} {tx:.10f} {ty:.10f} {tz:.10f} {q[0]:.12f} {q[1]:.12f} {q[2]:.12f} {q[3]:.12f}")
    (folder / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    if camera == "default":
        camera = "# tiny camera\nwidth 8\nheight 6\nfx 10.0\nfy 11.0\ncx 3.5\ncy 2.5  # centre\ndistortion none\n"
    if camera is not None:
        (folder / "camera.txt").write_text(camera)
    if associations:  # a deliberately different pairing/order than by-time association would give
        lines = [f"{RGB_STAMPS[2]} rgb/{RGB_STAMPS[2]}.png {DEPTH_STAMPS[2]} depth/{DEPTH_STAMPS[2]}.png",
                 f"{RGB_STAMPS[0]} rgb/{RGB_STAMPS[0]}.png {DEPTH_STAMPS[1]} depth/{DEPTH_STAMPS[1]}.png"]
        (folder / "associations.txt").write_text("\n".join(lines) + "\n")
    return folder


def read_all(source: TumSource) -> list[ColorFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


# ----------------------------------------------------------------------------------------------------
# tiny generated sequences
# ----------------------------------------------------------------------------------------------------


def test_frames_depth_and_poses(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "tiny_seq")
    with TumSource(folder) as source:
        assert len(source) == 4  # the fifth rgb has no depth within 0.02 s
        frames = read_all(source)
        assert not source.skip()
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in frames] == [1305031229500000000, 1305031229533333000, 1305031229566666000,
                                            1305031229600001000]
    k = Intrinsics(8, 6, 10.0, 11.0, 3.5, 2.5)
    for i, frame in enumerate(frames):
        assert frame.source == "tum:tiny_seq"
        assert frame.intrinsics == k
        assert frame.image[0, 0].tolist() == [2, 1, 10 * i]  # BGR on disk -> RGB
        # rgb i pairs with depth i (nearest in time); default TUM scale 5000 (camera.txt has none)
        raw = depth_raw(i)
        assert frame.depth_m is not None and frame.depth_m.dtype == np.float32
        assert frame.depth_m[0, :3].tolist() == [0.0, 1.0, np.float32(12345 / 5000)]
        np.testing.assert_allclose(frame.depth_m, raw / 5000.0, rtol=1e-7, atol=0)
        assert np.all((frame.depth_m == 0) == (raw == 0))
        # pose interpolated at the rgb timestamp; slerp is exact for this motion, the tolerance is set by
        # float64 epoch seconds (resolution 2.4e-7 s at 1.3e9 s, times a rotation rate of 3 rad/s)
        assert frame.T_W_C is not None
        np.testing.assert_allclose(frame.T_W_C, gt_pose(float(RGB_STAMPS[i])), atol=1e-6)


def test_nominal_fps_from_rgb_stamps(tmp_path: Path) -> None:
    with TumSource(make_sequence(tmp_path / "s")) as source:
        assert source.nominal_fps == pytest.approx(30.0, rel=1e-3)
        assert not source.is_live


def test_associations_file_sets_pairs_and_order(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "s", associations=True)
    with TumSource(folder) as source:
        frames = read_all(source)
    assert [f.stamp_ns for f in frames] == [1305031229566666000, 1305031229500000000]
    assert frames[0].image[0, 0, 2] == 20 and frames[1].image[0, 0, 2] == 0
    np.testing.assert_allclose(frames[1].depth_m, depth_raw(1) / 5000.0, rtol=1e-7)  # as the file says
    np.testing.assert_allclose(frames[1].T_W_C, gt_pose(float(RGB_STAMPS[0])), atol=1e-6)


def test_pose_missing_outside_gt_range_and_across_gaps(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "s", gt_samples=10)  # GT ends at .57: frame 3 (.600001) is outside
    with TumSource(folder) as source:
        frames = read_all(source)
    assert [f.T_W_C is None for f in frames] == [False, False, False, True]
    folder = make_sequence(tmp_path / "gap", gt_samples=20)
    gt = (folder / "groundtruth.txt").read_text().splitlines()
    (folder / "groundtruth.txt").write_text("\n".join(gt[:5] + gt[12:]) + "\n")  # samples .48 .49 .57 .58 ...
    with TumSource(folder, TumConfig(max_gt_gap_s=0.05)) as source:
        frames = read_all(source)
    assert [f.T_W_C is None for f in frames] == [True, True, True, False]  # .5 .53 .57 lie in the .08 s gap
    with TumSource(folder) as source:  # default max_gt_gap_s 0.1 bridges it
        frames = read_all(source)
    assert all(f.T_W_C is not None for f in frames)
    # across the gap the motion is still reproduced: constant-rate rotation and linear translation
    np.testing.assert_allclose(frames[1].T_W_C, gt_pose(float(RGB_STAMPS[1])), atol=1e-6)


def test_without_groundtruth_or_camera(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "s", camera=None)
    (folder / "groundtruth.txt").unlink()
    with TumSource(folder) as source:
        frame = source.read()
    assert frame is not None and frame.T_W_C is None and frame.intrinsics is None
    k = Intrinsics(8, 6, 5.0, 5.0, 3.5, 2.5)
    with TumSource(folder, TumConfig(intrinsics=k, load_depth=False)) as source:
        frame = source.read()
    assert frame is not None and frame.intrinsics == k and frame.depth_m is None


def test_depth_scale_from_camera_file_and_config(tmp_path: Path) -> None:
    camera = "width 8\nheight 6\nfx 10\nfy 10\ncx 3.5\ncy 2.5\ndepth_scale 1000.0   # millimetres\n"
    folder = make_sequence(tmp_path / "s", camera=camera)
    with TumSource(folder) as source:
        frame = source.read()
        assert source.sequence.depth_scale == 1000.0
    assert frame is not None and frame.depth_m is not None
    assert frame.depth_m[0, 1] == pytest.approx(5.0) and frame.depth_m[0, 2] == pytest.approx(12.345)
    with TumSource(folder, TumConfig(depth_scale=5000.0)) as source:
        frame = source.read()
    assert frame is not None and frame.depth_m is not None and frame.depth_m[0, 1] == 1.0


def test_associate_by_time_uses_each_depth_once() -> None:
    rgb = np.array([0.0, 0.01, 0.1, 0.2])
    depth = np.array([0.004, 0.107, 0.3, 0.095])
    # rgb 0 and 1 both want depth 0: the closer (rgb 0) gets it; rgb 2 takes depth 3 (0.005) over depth 1 (0.007)
    assert associate_by_time(rgb, depth, 0.02) == [(0, 0), (2, 3)]
    # greedy by smallest difference: (0,0) .004, (2,3) .005, then (3,1) .093; rgb 1 is left without depth
    assert associate_by_time(rgb, depth, 0.2) == [(0, 0), (2, 3), (3, 1)]
    assert associate_by_time(rgb, np.array([5.0]), 0.02) == []


def test_skip_does_not_decode(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "s")
    (folder / "rgb" / f"{RGB_STAMPS[1]}.png").write_bytes(b"corrupt")
    with TumSource(folder) as source:
        assert source.read() is not None
        assert source.skip()
        frame = source.read()
        assert frame is not None and frame.frame_id == 2
        assert source.skip() and not source.skip() and source.read() is None


def replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: replace_line(f / "rgb.txt", 5, "1305031229.566666 rgb/x.png extra"),
         r"rgb\.txt:5: expected 'timestamp filename', got 3 fields"),
        (lambda f: replace_line(f / "rgb.txt", 4, "1305031229.5x rgb/a.png"), r"rgb\.txt:4: bad timestamp"),
        (lambda f: replace_line(f / "depth.txt", 6, "1305031229.564000 depth/missing.png"),
         r"depth\.txt:6: file depth/missing\.png does not exist"),
        (lambda f: (f / "depth.txt").unlink(), r"depth\.txt is missing"),
        (lambda f: replace_line(f / "groundtruth.txt", 7, "1305031229.52 1 2 3 0 0 0"),
         r"groundtruth\.txt:7: expected 8 fields"),
        (lambda f: replace_line(f / "groundtruth.txt", 7, "1305031229.40 1 2 3 0 0 0 1"),
         r"groundtruth\.txt:7: timestamp 1305031229.40 does not increase"),
        (lambda f: replace_line(f / "camera.txt", 4, "fz 10.0"), r"camera\.txt:4: unknown key 'fz'"),
        (lambda f: (f / "associations.txt").write_text("1305031229.5 rgb/a.png 1305031229.5\n"),
         r"associations\.txt:1: expected 't_rgb rgb_file t_depth depth_file', got 3 fields"),
        (lambda f: (f / "rgb.txt").write_text("# only a header\n"), r"rgb\.txt lists no images"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, damage: Callable[[Path], None], message: str) -> None:
    folder = make_sequence(tmp_path / "s")
    damage(folder)
    with pytest.raises(SourceError, match=message):
        TumSource(folder).open()


def test_mismatched_sizes_and_bad_depth(tmp_path: Path) -> None:
    folder = make_sequence(tmp_path / "s")
    depth0 = folder / "depth" / f"{DEPTH_STAMPS[0]}.png"
    cv2.imwrite(str(depth0), np.zeros((H + 1, W), np.uint16))
    depth1 = folder / "depth" / f"{DEPTH_STAMPS[1]}.png"
    cv2.imwrite(str(depth1), np.zeros((H, W), np.uint8))
    with TumSource(folder) as source:
        with pytest.raises(SourceError, match=r"depth image .*501000\.png is 8x7, its colour image .* is 8x6"):
            source.read()
        with pytest.raises(SourceError, match=r"535000\.png must be a single-channel 16-bit PNG"):
            source.read()
    replace_line(folder / "camera.txt", 2, "width 10")
    with TumSource(folder) as source, pytest.raises(SourceError, match=r"is 8x6 but the intrinsics .* 10x6"):
        source.read()


def test_no_overlap_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        TumSource(tmp_path / "none").open()
    folder = make_sequence(tmp_path / "s")
    with pytest.raises(SourceError, match=r"no depth image within 0\.0001 s"):
        TumSource(folder, TumConfig(max_difference_s=1e-4)).open()
    with pytest.raises(SourceError, match="not open"):
        TumSource(folder).read()


@pytest.mark.parametrize("kwargs", [{"depth_scale": 0.0}, {"max_difference_s": -1.0}, {"max_gt_gap_s": math.inf}])
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="TumConfig"):
        TumConfig(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# the shared real sequences
# ----------------------------------------------------------------------------------------------------


def reprojection_residual_m(a: ColorFrame, b: ColorFrame, T_b_a: np.ndarray, k: Intrinsics) -> float:
    """Median |z| difference of frame a's depth moved into frame b and compared with b's depth there."""
    assert a.depth_m is not None and b.depth_m is not None
    v, u = np.mgrid[0:k.height_px:4, 0:k.width_px:4]
    z = a.depth_m[v, u]
    ok = z > 0
    u, v, z = u[ok], v[ok], z[ok].astype(np.float64)
    points = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=1)
    pb = points @ T_b_a[:3, :3].T + T_b_a[:3, 3]
    pb = pb[pb[:, 2] > 0.1]
    ub = np.round(pb[:, 0] / pb[:, 2] * k.fx + k.cx).astype(int)
    vb = np.round(pb[:, 1] / pb[:, 2] * k.fy + k.cy).astype(int)
    inside = (ub >= 0) & (ub < k.width_px) & (vb >= 0) & (vb < k.height_px)
    zb = b.depth_m[vb[inside], ub[inside]]
    valid = zb > 0
    assert valid.sum() > 1000, "too little overlap to judge"
    return float(np.median(np.abs(pb[inside][valid, 2] - zb[valid])))


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "count", "fx", "scale", "gap"),
    [("tum_fr1_rpy", 100, 517.3, 5000.0, 10), ("7scenes_redkitchen", 250, 585.0, 1000.0, 45)],
)
def test_real_sequence(name: str, count: int, fx: float, scale: float, gap: int) -> None:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent")
    with TumSource(folder) as source:
        seq = source.sequence
        assert len(source) == count
        assert seq.intrinsics is not None and seq.intrinsics.fx == fx
        assert seq.depth_scale == scale
        assert source.nominal_fps == pytest.approx(30.0, rel=0.1)
        assert all(f.T_W_C is not None for f in seq.frames)
        for f in seq.frames:
            R = f.T_W_C[:3, :3]  # type: ignore[index]
            np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
            assert np.linalg.det(R) == pytest.approx(1.0)
        a = source.read()
        for _ in range(gap - 1):
            assert source.skip()
        b = source.read()
    assert a is not None and b is not None and b.frame_id == gap
    for frame in (a, b):
        assert frame.image.shape == (480, 640, 3) and frame.depth_m is not None
        valid = frame.depth_m[frame.depth_m > 0]
        assert valid.size > 0.5 * frame.depth_m.size
        assert 0.5 < float(np.median(valid)) < 4.0
    assert a.T_W_C is not None and b.T_W_C is not None
    with_gt = reprojection_residual_m(a, b, np.linalg.inv(b.T_W_C) @ a.T_W_C, seq.intrinsics)
    with_identity = reprojection_residual_m(a, b, np.eye(4), seq.intrinsics)
    assert with_gt < 0.03, f"median reprojection residual with GT poses {with_gt:.3f} m"
    assert with_gt < 0.25 * with_identity, f"GT {with_gt:.3f} m vs identity {with_identity:.3f} m"
