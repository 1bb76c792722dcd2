"""TUM trajectory files and the quaternion/pose helpers."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.tum_format import (
    TumFormatError,
    TumTrajectory,
    parse_stamp_ns,
    pose_from_tum,
    quaternion_slerp,
    quaternion_to_rotation,
    read_tum_trajectory,
    rotation_to_quaternion,
    write_tum_trajectory,
)


def axis_angle_quaternion(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.array([*(axis * math.sin(angle / 2)), math.cos(angle / 2)])


def rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by OpenCV (an implementation independent of ours)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    R, _ = cv2.Rodrigues(axis * angle)
    return R


def random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rodrigues(rng.normal(size=3), rng.uniform(0, math.pi))
    T[:3, 3] = rng.uniform(-5, 5, size=3)
    return T


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.7, math.pi - 1e-9, math.pi])
@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 2, 3), (-2, 0.5, 0.1)])
def test_quaternion_matches_opencv_rotation(axis: tuple[float, float, float], angle: float) -> None:
    q = axis_angle_quaternion(np.array(axis), angle)
    R = rodrigues(np.array(axis), angle)
    np.testing.assert_allclose(quaternion_to_rotation(q), R, atol=1e-12)
    back = rotation_to_quaternion(R)
    assert back[3] >= 0 and np.linalg.norm(back) == pytest.approx(1.0)
    # q and -q are the same rotation
    assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-7
    np.testing.assert_allclose(quaternion_to_rotation(-q), R, atol=1e-12)


def test_quaternion_is_normalised_and_zero_is_refused() -> None:
    q = axis_angle_quaternion(np.array([0, 0, 1.0]), 0.5)
    np.testing.assert_allclose(quaternion_to_rotation(3.0 * q), quaternion_to_rotation(q), atol=1e-15)
    with pytest.raises(ValueError, match="zero or non-finite norm"):
        quaternion_to_rotation(np.zeros(4))


def test_rotation_to_quaternion_refuses_non_rotations() -> None:
    with pytest.raises(ValueError, match="not orthonormal"):
        rotation_to_quaternion(np.diag([1.0, 1.0, 1.5]))
    with pytest.raises(ValueError, match="reflection"):
        rotation_to_quaternion(np.diag([1.0, 1.0, -1.0]))


def test_slerp_takes_the_short_way() -> None:
    axis = np.array([1.0, -1.0, 2.0])
    q0 = axis_angle_quaternion(axis, 0.2)
    q1 = axis_angle_quaternion(axis, 1.0)
    for sign in (1.0, -1.0):  # the second sample may be stored with the opposite sign
        for alpha in (0.0, 0.25, 0.5, 1.0):
            R = quaternion_to_rotation(quaternion_slerp(q0, sign * q1, alpha))
            np.testing.assert_allclose(R, rodrigues(axis, 0.2 + 0.8 * alpha), atol=1e-12)
    # nearly identical quaternions (normalised-lerp branch)
    q2 = axis_angle_quaternion(axis, 0.2 + 1e-4)
    np.testing.assert_allclose(quaternion_to_rotation(quaternion_slerp(q0, q2, 0.5)),
                               rodrigues(axis, 0.2 + 0.5e-4), atol=1e-12)


def test_parse_stamp_ns_is_exact() -> None:
    assert parse_stamp_ns("1305031229.528748") == 1305031229528748000
    assert parse_stamp_ns("0.033333") == 33333000
    assert parse_stamp_ns("12") == 12_000_000_000
    with pytest.raises(ValueError, match="not a number"):
        parse_stamp_ns("12a")
    with pytest.raises(ValueError, match="not a finite number"):
        parse_stamp_ns("nan")


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stamps = 1305031229.0 + np.cumsum(rng.uniform(0.01, 0.05, size=20))
    poses = np.array([random_pose(rng) for _ in range(20)])
    path = tmp_path / "traj.txt"
    write_tum_trajectory(path, stamps, poses)
    assert path.read_text().splitlines()[0] == "# timestamp tx ty tz qx qy qz qw"
    traj = read_tum_trajectory(path)
    assert len(traj) == 20
    np.testing.assert_allclose(traj.stamps_s, stamps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(traj.T_W_C, poses, atol=1e-8)


def test_read_known_line(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("# ground truth\n# timestamp tx ty tz qx qy qz qw\n\n"
                    "1.5 1.0 2.0 3.0 0 0 0.7071067811865476 0.7071067811865476\n")
    traj = read_tum_trajectory(path)
    assert traj.stamps_s.tolist() == [1.5]
    expected = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(traj.T_W_C[0], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 1\n", r"gt\.txt:2: expected 8 fields"),
        ("1.0 0 0 0 0 0 0 1\n2.0 0 0 x 0 0 0 1\n", r"gt\.txt:2: field 'x' is not a number"),
        ("# h\n1.0 0 0 0 0 0 0 1\n1.0 0 0 0 0 0 0 1\n", r"gt\.txt:3: timestamp 1.0 does not increase"),
        ("1.0 0 0 0 0 0 0 0\n", r"gt\.txt:1: quaternion .* zero"),
        ("1.0 0 0 inf 0 0 0 1\n", r"gt\.txt:1: field 'inf' is not finite"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(body)
    with pytest.raises(TumFormatError, match=message):
        read_tum_trajectory(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TumFormatError, match="cannot read trajectory file"):
        read_tum_trajectory(tmp_path / "none.txt")


def test_write_refuses_bad_input(tmp_path: Path) -> None:
    poses = np.array([np.eye(4), np.eye(4)])
    with pytest.raises(ValueError, match="strictly increasing"):
        write_tum_trajectory(tmp_path / "t.txt", np.array([1.0, 1.0]), poses)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        write_tum_trajectory(tmp_path / "t.txt", np.array([1.0]), poses)
    bad = poses.copy()
    bad[1, :3, :3] *= 2.0
    with pytest.raises(ValueError, match=r"T_W_C\[1\]: rotation block: .*not orthonormal"):
        write_tum_trajectory(tmp_path / "t.txt", np.array([1.0, 2.0]), bad)


def test_pose_at_interpolates() -> None:
    axis = np.array([0.2, 1.0, -0.3])
    poses = np.array([pose_from_tum(np.array([0.0, 0.0, 0.0]), axis_angle_quaternion(axis, 0.0)),
                      pose_from_tum(np.array([1.0, -2.0, 0.5]), -axis_angle_quaternion(axis, 0.6)),
                      pose_from_tum(np.array([1.0, -2.0, 0.5]), axis_angle_quaternion(axis, 0.6))])
    traj = TumTrajectory(np.array([10.0, 10.1, 10.5]), poses)
    mid = traj.pose_at(10.025, max_gap_s=0.2)
    assert mid is not None
    np.testing.assert_allclose(mid[:3, 3], [0.25, -0.5, 0.125], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], rodrigues(axis, 0.15), atol=1e-12)
    np.testing.assert_array_equal(traj.pose_at(10.1, max_gap_s=0.2), poses[1])
    np.testing.assert_array_equal(traj.pose_at(10.5, max_gap_s=0.2), poses[2])
    assert traj.pose_at(10.3, max_gap_s=0.2) is None  # bracketing samples 0.4 s apart
    assert traj.pose_at(10.3, max_gap_s=0.5) is not None
    assert traj.pose_at(9.99, max_gap_s=1.0) is None and traj.pose_at(10.51, max_gap_s=1.0) is None


def test_trajectory_validation() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        TumTrajectory(np.array([1.0, 0.5]), np.array([np.eye(4), np.eye(4)]))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\) float64"):
        TumTrajectory(np.array([1.0, 2.0]), np.array([np.eye(4)]))
