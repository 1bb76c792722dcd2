"""Pose checks at the boundary of the fusion kernels: every way a 4x4 can fail to be a usable rigid transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.se3 import from_rvec_tvec
from fusion.validation import RIGID_TOLERANCE, check_pose


def _pose() -> np.ndarray:
    return from_rvec_tvec(np.array([0.4, -0.2, 1.1]), np.array([0.3, -1.2, 2.0]))


def test_rigid_pose_passes_and_comes_back_contiguous_float64() -> None:
    T = _pose()
    out = check_pose(np.asfortranarray(T.astype(np.float32)))
    assert out.dtype == np.float64 and out.flags.c_contiguous
    assert np.allclose(out, T, atol=1e-6)
    # a rotation off by less than the tolerance (real ground truth is ~4e-4 off) is accepted
    noisy = T.copy()
    noisy[:3, :3] *= 1.0 + 0.2 * RIGID_TOLERANCE  # |R^T R - I| = 0.4 tol, |det - 1| = 0.6 tol
    check_pose(noisy)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda T: T[:3, :3] * 1.01, ValueError, "not a rigid transform"),  # scaled
        (lambda T: T[:3, :3] @ np.diag([1.0, 1.0, -1.0]), ValueError, "det R = -1"),  # reflection
        (lambda T: T[:3, :3] + np.array([[0, 0.01, 0], [0, 0, 0], [0, 0, 0]]), ValueError, "not a rigid"),  # shear
    ],
)
def test_non_rigid_rotation_is_rejected(edit, error, message) -> None:
    T = _pose()
    T[:3, :3] = edit(T)
    with pytest.raises(error, match=message):
        check_pose(T)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entries_are_rejected(bad: float) -> None:
    for i, j in ((0, 0), (1, 3), (3, 3)):
        T = _pose()
        T[i, j] = bad
        with pytest.raises(ValueError, match="non-finite"):
            check_pose(T, "T_W_C")


def test_last_row_translation_range_shape_and_dtype() -> None:
    T = _pose()
    T[3, 1] = 1e-3
    with pytest.raises(ValueError, match=r"last row must be \[0, 0, 0, 1\]"):
        check_pose(T)
    T = _pose()
    T[2, 3] = -500.0
    with pytest.raises(ValueError, match="beyond the map's range of \\+-100 m"):
        check_pose(T, max_abs_translation_m=100.0)
    check_pose(T, max_abs_translation_m=600.0)
    with pytest.raises(ValueError, match="shape"):
        check_pose(np.eye(3))
    with pytest.raises(TypeError, match="float array"):
        check_pose(np.eye(4, dtype=np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        check_pose([[1.0, 0, 0, 0]] * 4)
    with pytest.raises(ValueError, match="pose_x"):  # the caller's name is in the message
        check_pose(np.zeros((4, 4)), "pose_x")
