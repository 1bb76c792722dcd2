"""Tests of trajectory evaluation (tools/trajectory_metrics.py, tools/evaluate.py), with evo as the reference."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from stream.tum_format import read_tum_trajectory, write_tum_trajectory
from tools import evaluate
from tools.trajectory_metrics import (
    AlignMode,
    DeltaUnit,
    EvaluationConfig,
    absolute_trajectory_error,
    associate_stamps,
    evaluate_trajectories,
    relative_pose_error,
    rotation_angle_deg,
    umeyama_alignment,
)

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FR1_GT = DATA_DIR / "tum_fr1_rpy" / "groundtruth.txt"

REL_TOL = 1e-6  # agreement with evo, relative
STATS = ("rmse", "mean", "median", "std", "min", "max", "sse")


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues: (3,) rotation vector -> (3, 3) rotation."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-15:
        return np.eye(3)
    k = v / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def _random_trajectory(rng: np.random.Generator, n: int, step_m: float = 0.02, step_rad: float = 0.03) -> np.ndarray:
    """(n, 4, 4) smooth-ish random walk of camera-to-world poses."""
    T = np.tile(np.eye(4), (n, 1, 1))
    vel = rng.normal(0.0, step_m, 3)
    R = _rotvec_to_matrix(rng.normal(0.0, 1.0, 3))
    p = rng.normal(0.0, 1.0, 3)
    for i in range(n):
        vel = 0.9 * vel + 0.1 * rng.normal(0.0, step_m, 3) * 3.0
        p = p + vel
        R = R @ _rotvec_to_matrix(rng.normal(0.0, step_rad, 3))
        T[i, :3, :3] = R
        T[i, :3, 3] = p
    return T


def _sim3(s: float, R: np.ndarray, t: np.ndarray, T_W_C: np.ndarray) -> np.ndarray:
    """Apply x -> s R x + t to the poses (rotation R R_i, position s R t_i + t)."""
    out = T_W_C.copy()
    out[:, :3, :3] = R @ T_W_C[:, :3, :3]
    out[:, :3, 3] = s * T_W_C[:, :3, 3] @ R.T + t
    return out


def _perturb(rng: np.random.Generator, T_W_C: np.ndarray, sigma_m: float, sigma_rad: float) -> np.ndarray:
    out = T_W_C.copy()
    out[:, :3, 3] += rng.normal(0.0, sigma_m, (len(T_W_C), 3))
    for i in range(len(out)):
        out[i, :3, :3] = out[i, :3, :3] @ _rotvec_to_matrix(rng.normal(0.0, sigma_rad, 3))
    return out


def _write_pair(
    tmp_path: Path, rng: np.random.Generator, n_gt: int = 240, every: int = 3, jitter_s: float = 0.003
) -> tuple[Path, Path]:
    """GT at 100 Hz (epoch stamps) and a sim3-transformed, noisy, jittered estimate at every ``every``-th stamp."""
    gt_stamps = 1305031229.4832 + 0.01 * np.arange(n_gt)
    gt = _random_trajectory(rng, n_gt)
    idx = np.arange(0, n_gt, every)
    est = _sim3(0.37, _rotvec_to_matrix(np.array([0.4, -1.2, 2.0])), np.array([3.0, -1.0, 0.5]), gt[idx])
    est = _perturb(rng, est, 0.004, 0.004)
    est_stamps = gt_stamps[idx] + rng.uniform(-jitter_s, jitter_s, idx.size)
    gt_path, est_path = tmp_path / "gt.txt", tmp_path / "est.txt"
    write_tum_trajectory(gt_path, gt_stamps, gt)
    write_tum_trajectory(est_path, est_stamps, est)
    return est_path, gt_path


def _evo_reference(
    est_path: Path,
    gt_path: Path,
    align: str,
    max_diff_s: float = 0.02,
    offset_s: float = 0.0,
    delta: float = 1,
    delta_unit: str = "frames",
) -> dict[str, object]:
    """ATE/RPE statistics the way evo_ape / evo_rpe compute them (translation part, rotation angle deg)."""
    from evo.core import metrics, sync
    from evo.tools import file_interface

    ref = file_interface.read_tum_trajectory_file(str(gt_path))
    est = file_interface.read_tum_trajectory_file(str(est_path))
    ref, est = sync.associate_trajectories(ref, est, max_diff=max_diff_s, offset_2=offset_s)
    scale = 1.0
    if align != "none":
        _, _, scale = est.align(ref, correct_scale=align == "sim3")
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    unit = metrics.Unit.frames if delta_unit == "frames" else metrics.Unit.meters
    rpe_stats = {}
    for name, relation in (
        ("trans", metrics.PoseRelation.translation_part),
        ("rot", metrics.PoseRelation.rotation_angle_deg),
    ):
        rpe = metrics.RPE(relation, delta=delta, delta_unit=unit, all_pairs=False)
        rpe.process_data((copy.deepcopy(ref), copy.deepcopy(est)))
        rpe_stats[name] = rpe.get_all_statistics()
        rpe_stats[name + "_count"] = len(rpe.error)
    return {
        "matched": ref.num_poses,
        "scale": float(scale),
        "ate": ape.get_all_statistics(),
        **rpe_stats,
    }


def _assert_matches_evo(summary: dict[str, object], ref: dict[str, object]) -> None:
    assert summary["matched_poses"] == ref["matched"]
    assert summary["rpe_pairs"] == ref["trans_count"]
    assert summary["scale"] == pytest.approx(ref["scale"], rel=REL_TOL)
    for stat in STATS:
        assert summary[f"ate_{stat}_m"] == pytest.approx(ref["ate"][stat], rel=REL_TOL, abs=1e-12), stat
        assert summary[f"rpe_trans_{stat}_m"] == pytest.approx(ref["trans"][stat], rel=REL_TOL, abs=1e-12), stat
        assert summary[f"rpe_rot_{stat}_deg"] == pytest.approx(ref["rot"][stat], rel=REL_TOL, abs=1e-9), stat


def _run_cli_json(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, object]:
    rc = evaluate.main([*args, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


# ----------------------------------------------------------------------------------------------------
# Umeyama alignment
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_scale", [False, True])
def test_umeyama_recovers_exact_transform(with_scale: bool) -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(0.0, 1.0, (50, 3))
    R = _rotvec_to_matrix(np.array([0.3, 2.1, -0.7]))
    s = 2.5 if with_scale else 1.0
    t = np.array([0.5, -4.0, 10.0])
    dst = s * src @ R.T + t
    a = umeyama_alignment(src, dst, with_scale=with_scale)
    np.testing.assert_allclose(a.rotation, R, atol=1e-12)
    np.testing.assert_allclose(a.translation_m, t, atol=1e-11)
    assert a.scale == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(a.apply_points(src), dst, atol=1e-11)


def test_umeyama_planar_points_need_the_sign_correction() -> None:
    """Coplanar points: the third singular value is 0 and plain U V^T can be a reflection."""
    rng = np.random.default_rng(2)
    src = np.column_stack([rng.normal(0.0, 1.0, (40, 2)), np.zeros(40)])
    for rv in ([0.0, 0.0, 2.0], [1.0, 0.5, -0.2], [np.pi - 0.01, 0.0, 0.0]):
        R = _rotvec_to_matrix(np.array(rv))
        a = umeyama_alignment(src, src @ R.T, with_scale=True)
        np.testing.assert_allclose(a.rotation, R, atol=1e-10)
        assert a.scale == pytest.approx(1.0, rel=1e-12)


def test_umeyama_mirrored_target_gives_best_proper_rotation() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(0.0, 1.0, (60, 3)) * np.array([3.0, 2.0, 1.0])
    dst = src * np.array([1.0, 1.0, -1.0])  # a reflection: no rotation maps src onto dst
    a = umeyama_alignment(src, dst, with_scale=False)
    assert np.linalg.det(a.rotation) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(a.rotation @ a.rotation.T, np.eye(3), atol=1e-12)

    def cost(R: np.ndarray, t: np.ndarray) -> float:
        return float(np.sum((src @ R.T + t - dst) ** 2))

    best = cost(a.rotation, a.translation_m)
    # a local minimum over rotations: every small rotation away costs more
    for _ in range(30):
        dR = _rotvec_to_matrix(rng.normal(0.0, 1e-3, 3))
        R2 = dR @ a.rotation
        t2 = dst.mean(axis=0) - R2 @ src.mean(axis=0)
        assert cost(R2, t2) > best
    # and the same as evo's implementation
    from evo.core.geometry import umeyama_alignment as evo_umeyama

    r_evo, t_evo, _ = evo_umeyama(src.T, dst.T, False)
    np.testing.assert_allclose(a.rotation, r_evo, atol=1e-10)
    np.testing.assert_allclose(a.translation_m, t_evo, atol=1e-10)


def test_umeyama_rejects_degenerate_input() -> None:
    line = np.outer(np.linspace(0.0, 1.0, 10), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="collinear"):
        umeyama_alignment(line, line + 1.0, with_scale=False)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_alignment(np.eye(3)[:2], np.eye(3)[:2], with_scale=False)
    with pytest.raises(ValueError, match="equal shape"):
        umeyama_alignment(np.eye(3), np.eye(4)[:, :3], with_scale=False)


@pytest.mark.parametrize("align", [AlignMode.SE3, AlignMode.SIM3])
def test_ate_recovers_transform_and_noise_level(align: AlignMode) -> None:
    rng = np.random.default_rng(4)
    gt = _random_trajectory(rng, 600, step_m=0.03)
    s = 1.0 if align is AlignMode.SE3 else 0.4
    R = _rotvec_to_matrix(np.array([-0.5, 0.9, 2.4]))
    t = np.array([-2.0, 7.0, 0.3])
    exact = _sim3(s, R, t, gt)
    ate0 = absolute_trajectory_error(exact, gt, align)
    assert ate0.stats.rmse < 1e-9
    assert ate0.alignment.scale == pytest.approx(1.0 / s, rel=1e-9)
    np.testing.assert_allclose(ate0.alignment.rotation, R.T, atol=1e-9)
    np.testing.assert_allclose(ate0.alignment.translation_m, -(R.T @ t) / s, atol=1e-8)

    sigma_m = 0.01  # per axis, in the estimate's frame -> sigma/s in the ground-truth frame
    noisy = exact.copy()
    noisy[:, :3, 3] += rng.normal(0.0, sigma_m, (len(gt), 3))
    ate = absolute_trajectory_error(noisy, gt, align)
    expected_rmse = sigma_m / s * np.sqrt(3.0)
    assert 0.85 * expected_rmse < ate.stats.rmse < 1.15 * expected_rmse
    assert ate.alignment.scale == pytest.approx(1.0 / s, rel=0.01)
    assert np.degrees(np.arccos((np.trace(ate.alignment.rotation @ R) - 1) / 2)) < 0.2


def test_ate_without_alignment_is_the_raw_position_error() -> None:
    rng = np.random.default_rng(5)
    gt = _random_trajectory(rng, 20)
    est = gt.copy()
    est[:, :3, 3] += np.array([0.03, 0.0, 0.04])  # a constant 5 cm offset
    ate = absolute_trajectory_error(est, gt, AlignMode.NONE)
    np.testing.assert_allclose(ate.errors_m, 0.05, atol=1e-12)
    assert absolute_trajectory_error(est, gt, AlignMode.SE3).stats.rmse < 1e-12


# ----------------------------------------------------------------------------------------------------
# RPE
# ----------------------------------------------------------------------------------------------------


def test_rotation_angle_small_and_large() -> None:
    angles = np.array([0.0, 1e-9, 1e-4, 0.5, 3.0, np.pi])
    Rs = np.stack([_rotvec_to_matrix(a * np.array([0.6, 0.0, 0.8])) for a in angles])
    np.testing.assert_allclose(rotation_angle_deg(Rs), np.degrees(angles), rtol=1e-9, atol=1e-12)


def test_rpe_of_known_relative_error() -> None:
    # a constant per-step drift D: est_i = D^i against a static ground truth -> every E is D
    D = np.eye(4)
    D[:3, :3] = _rotvec_to_matrix(np.array([0.0, 0.0, np.radians(0.5)]))
    D[:3, 3] = [0.003, 0.0, 0.004]
    gt_static = np.tile(np.eye(4), (30, 1, 1))
    est_drift = np.stack([np.linalg.matrix_power(D, i) for i in range(30)])
    rpe = relative_pose_error(est_drift, gt_static, 1)
    assert rpe.pairs.shape == (29, 2)
    np.testing.assert_allclose(rpe.trans_errors_m, 0.005, atol=1e-12)
    np.testing.assert_allclose(rpe.rot_errors_deg, 0.5, atol=1e-9)
    rpe3 = relative_pose_error(est_drift, gt_static, 3, DeltaUnit.FRAMES)
    np.testing.assert_array_equal(rpe3.pairs[:, 0], np.arange(0, 27, 3))
    np.testing.assert_allclose(rpe3.rot_errors_deg, 1.5, atol=1e-9)
    # a moving trajectory seen from another world frame has no relative error at all
    gt = _random_trajectory(np.random.default_rng(6), 30)
    A = np.eye(4)
    A[:3, :3] = _rotvec_to_matrix(np.array([1.0, -2.0, 0.5]))
    A[:3, 3] = [4.0, 5.0, 6.0]
    rpe0 = relative_pose_error(A @ gt, gt, 1)
    assert rpe0.trans.max < 1e-12 and rpe0.rot.max < 1e-6
    with pytest.raises(ValueError, match="no pose pair"):
        relative_pose_error(est_drift[:3], gt_static[:3], 5)


# ----------------------------------------------------------------------------------------------------
# association
# ----------------------------------------------------------------------------------------------------


def test_associate_nearest_within_max_difference() -> None:
    gt = np.arange(0.0, 1.0, 0.01)
    est = np.array([0.0031, 0.2549, 0.5, 0.7, 1.5])  # last one has no partner
    a = associate_stamps(est, gt, max_difference_s=0.02)
    np.testing.assert_array_equal(a.est_indices, [0, 1, 2, 3])
    np.testing.assert_array_equal(a.gt_indices, [0, 25, 50, 70])
    np.testing.assert_allclose(a.time_diffs_s, [0.0031, 0.0049, 0.0, 0.0], atol=1e-12)
    assert associate_stamps(est, gt, max_difference_s=0.004).count == 3  # 0.0049 now too far


def test_associate_uses_each_stamp_once_and_applies_offset() -> None:
    # both estimates are nearest to gt 0.002; the second must take its next-best partner
    a = associate_stamps(np.array([0.0, 0.004]), np.array([0.002, 0.010]), max_difference_s=0.02)
    np.testing.assert_array_equal(a.est_indices, [0, 1])
    np.testing.assert_array_equal(a.gt_indices, [0, 1])
    # offset added to the estimated stamps
    a = associate_stamps(np.array([10.0, 10.1]), np.array([0.0, 0.1]), max_difference_s=0.001, offset_s=-10.0)
    np.testing.assert_array_equal(a.gt_indices, [0, 1])
    assert associate_stamps(np.array([10.0]), np.array([0.0]), 0.02).count == 0


def test_associate_matches_evo_on_jittered_stamps() -> None:
    from evo.core.sync import matching_time_indices

    rng = np.random.default_rng(7)
    gt = 1.3e9 + 0.01 * np.arange(500)
    est = gt[::3] + rng.uniform(-0.0045, 0.0045, gt[::3].size)
    est = np.concatenate([est[:50], est[60:]])  # a gap
    a = associate_stamps(est, gt, max_difference_s=0.02)
    i_est, i_gt = matching_time_indices(est, gt, max_diff=0.02)
    np.testing.assert_array_equal(a.est_indices, i_est)
    np.testing.assert_array_equal(a.gt_indices, i_gt)


# ----------------------------------------------------------------------------------------------------
# agreement with evo on files
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align", ["se3", "sim3", "none"])
def test_cli_agrees_with_evo(tmp_path: Path, capsys: pytest.CaptureFixture[str], align: str) -> None:
    rng = np.random.default_rng(8)
    est_path, gt_path = _write_pair(tmp_path, rng)
    summary = _run_cli_json(capsys, [str(est_path), str(gt_path), "--align", align])
    ref = _evo_reference(est_path, gt_path, align)
    _assert_matches_evo(summary, ref)
    assert summary["matched_poses"] == 80
    assert summary["align"] == align
    if align == "sim3":
        assert summary["scale"] == pytest.approx(1.0 / 0.37, rel=0.02)
        assert summary["ate_rmse_m"] < 0.03  # noise 4 mm / 0.37 per axis
    if align == "none":
        assert summary["ate_rmse_m"] > 1.0  # the estimate lives in another frame


@pytest.mark.parametrize(("delta", "unit"), [(4, "frames"), (0.3, "m")])
def test_rpe_delta_options_agree_with_evo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], delta: float, unit: str
) -> None:
    rng = np.random.default_rng(9)
    est_path, gt_path = _write_pair(tmp_path, rng, n_gt=300, every=2)
    summary = _run_cli_json(
        capsys, [str(est_path), str(gt_path), "--align", "sim3", "--delta", str(delta), "--delta-unit", unit]
    )
    ref = _evo_reference(est_path, gt_path, "sim3", delta=delta, delta_unit=unit)
    _assert_matches_evo(summary, ref)
    assert summary["rpe_pairs"] >= 5


def test_time_offset_agrees_with_evo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(10)
    gt_stamps = 100.0 + 0.01 * np.arange(200)
    gt = _random_trajectory(rng, 200)
    est = _perturb(rng, gt[::2], 0.003, 0.003)
    est_stamps = gt_stamps[::2] - 0.5 + rng.uniform(-0.002, 0.002, 100)  # estimate clock 0.5 s behind
    write_tum_trajectory(tmp_path / "gt.txt", gt_stamps, gt)
    write_tum_trajectory(tmp_path / "est.txt", est_stamps, est)
    args = [str(tmp_path / "est.txt"), str(tmp_path / "gt.txt"), "--offset-s", "0.5", "--max-diff-s", "0.01"]
    summary = _run_cli_json(capsys, args)
    _assert_matches_evo(summary, _evo_reference(tmp_path / "est.txt", tmp_path / "gt.txt", "se3", 0.01, 0.5))
    assert summary["matched_poses"] == 100
    assert summary["ate_rmse_m"] < 0.01


# ----------------------------------------------------------------------------------------------------
# command line, report and plot
# ----------------------------------------------------------------------------------------------------


def test_cli_json_text_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    from tools.cli import main as cli_main

    rng = np.random.default_rng(11)
    est_path, gt_path = _write_pair(tmp_path, rng, n_gt=120)
    plot = tmp_path / "traj.png"
    assert cli_main(["eval", str(est_path), str(gt_path), "--align", "sim3", "--plot", str(plot), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("ate_rmse_m", "ate_mean_m", "ate_median_m", "ate_max_m", "rpe_trans_rmse_m", "rpe_rot_rmse_deg",
                "scale", "matched_poses", "rpe_pairs", "alignment_rotation", "alignment_translation_m"):
        assert key in summary, key
    assert summary["plot_file"] == str(plot)
    # the JSON numbers are the library's numbers
    est, gt = read_tum_trajectory(est_path), read_tum_trajectory(gt_path)
    ev = evaluate_trajectories(est.stamps_s, est.T_W_C, gt.stamps_s, gt.T_W_C, EvaluationConfig(align="sim3"))
    assert summary["ate_rmse_m"] == ev.ate.stats.rmse
    assert summary["rpe_rot_rmse_deg"] == ev.rpe.rot.rmse
    assert summary["matched_poses"] == 40

    img = cv2.imread(str(plot), cv2.IMREAD_COLOR)
    assert img is not None
    style = evaluate.PlotStyle()
    assert img.shape == (style.header_px + style.panel_px, 3 * style.panel_px, 3)
    b, g, r = (img[..., k].astype(int) for k in range(3))
    red = np.count_nonzero((r > 180) & (g < 90) & (b < 90))
    green = np.count_nonzero((g > 110) & (r < 100) & (b < 60))
    assert red > 500 and green > 500, (red, green)  # both trajectories drawn in all three views

    assert evaluate.main([str(est_path), str(gt_path)]) == 0
    text = capsys.readouterr().out
    assert "ATE [m]" in text and "RPE [deg]" in text and "40 of 40" in text


def test_render_plot_handles_a_single_static_pose() -> None:
    img = evaluate.render_trajectory_plot(np.zeros((1, 3)), np.zeros((1, 3)), "static", evaluate.PlotStyle(128, 0, 8))
    assert img.shape == (128, 384, 3)
    assert img.dtype == np.uint8


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------


def _good_lines(n: int, t0: float = 0.0) -> list[str]:
    return [f"{t0 + 0.1 * i:.3f} {0.1 * i:.3f} {0.02 * i * i:.4f} {0.01 * i:.3f} 0 0 0 1" for i in range(n)]


def _cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], est_text: str, gt_lines: int = 10) -> str:
    (tmp_path / "est.txt").write_text(est_text)
    (tmp_path / "gt.txt").write_text("\n".join(_good_lines(gt_lines)) + "\n")
    rc = evaluate.main([str(tmp_path / "est.txt"), str(tmp_path / "gt.txt")])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""
    assert captured.err.startswith("depthslam eval: error: ")
    return captured.err


def test_error_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no poses" in _cli_error(tmp_path, capsys, "# timestamp tx ty tz qx qy qz qw\n\n")
    assert "no poses" in _cli_error(tmp_path, capsys, "")


def test_error_malformed_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _good_lines(5)
    lines[3] = "0.3 0.1 0.2 0.3 0 0 one 1"
    err = _cli_error(tmp_path, capsys, "# header\n" + "\n".join(lines) + "\n")
    assert f"{tmp_path / 'est.txt'}:5" in err
    lines[3] = "0.3 0.1 0.2"
    err = _cli_error(tmp_path, capsys, "\n".join(lines) + "\n")
    assert f"{tmp_path / 'est.txt'}:4" in err


def test_error_too_few_matched_poses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli_error(tmp_path, capsys, "\n".join(_good_lines(2)) + "\n")
    assert "only 2 of 2" in err and "at least 3" in err
    err = _cli_error(tmp_path, capsys, "\n".join(_good_lines(5, t0=1000.0)) + "\n")
    assert "only 0 of 5" in err


def test_error_zero_quaternion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _good_lines(5)
    lines[2] = "0.2 0 0 0 0 0 0 0"
    assert f"{tmp_path / 'est.txt'}:3" in _cli_error(tmp_path, capsys, "\n".join(lines) + "\n")


def test_nearly_unit_quaternion_is_normalised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _good_lines(10)
    lines[4] = "0.4 0.4 0.32 0.04 0 0 0.0001 1.00005"  # 4-decimal rounding, |q| - 1 ~ 5e-5
    (tmp_path / "est.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "gt.txt").write_text("\n".join(_good_lines(10)) + "\n")
    summary = _run_cli_json(capsys, [str(tmp_path / "est.txt"), str(tmp_path / "gt.txt"), "--align", "none"])
    assert summary["ate_max_m"] < 1e-12
    assert summary["rpe_rot_max_deg"] == pytest.approx(np.degrees(2 * np.arctan2(0.0001, 1.00005)), rel=1e-6)


def test_error_far_from_unit_quaternion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _good_lines(5)
    lines[2] = "0.2 0 0 0 0 0 0 2"
    err = _cli_error(tmp_path, capsys, "\n".join(lines) + "\n")
    assert f"{tmp_path / 'est.txt'}:3" in err and "quaternion" in err


def test_error_degenerate_alignment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    static = [f"{0.1 * i:.3f} 1 2 3 0 0 0 1" for i in range(6)]
    assert "collinear" in _cli_error(tmp_path, capsys, "\n".join(static) + "\n")


def test_error_missing_file_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(_good_lines(10)) + "\n")
    assert evaluate.main([str(tmp_path / "nope.txt"), str(gt)]) == 1
    assert "nope.txt" in capsys.readouterr().err
    for bad in (["--align", "affine"], ["--max-diff-s", "-1"], ["--delta", "1.5"], ["--plot", "x.jpg"]):
        with pytest.raises(SystemExit) as exc:
            evaluate.main([str(gt), str(gt), *bad])
        assert exc.value.code == 2, bad
        capsys.readouterr()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="align"):
        EvaluationConfig(align="affine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_difference_s"):
        EvaluationConfig(max_difference_s=float("nan"))
    with pytest.raises(ValueError, match="rpe_delta"):
        EvaluationConfig(rpe_delta=0)
    with pytest.raises(ValueError, match="rpe_delta"):
        EvaluationConfig(rpe_delta=-0.5, rpe_delta_unit=DeltaUnit.METRES)
    with pytest.raises(ValueError, match="min_matched_poses"):
        EvaluationConfig(min_matched_poses=2)
    assert EvaluationConfig(align="sim3").align is AlignMode.SIM3  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# real data (optional)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_fr1_rpy_groundtruth_against_itself_and_perturbed_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not FR1_GT.is_file():
        pytest.skip(f"real data not present: {FR1_GT}")
    same = _run_cli_json(capsys, [str(FR1_GT), str(FR1_GT), "--align", "sim3"])
    assert same["matched_poses"] == len(read_tum_trajectory(FR1_GT))
    assert same["ate_rmse_m"] < 1e-9
    assert same["rpe_trans_rmse_m"] < 1e-9 and same["rpe_rot_rmse_deg"] < 1e-6
    assert same["scale"] == pytest.approx(1.0, abs=1e-9)

    rng = np.random.default_rng(12)
    gt = read_tum_trajectory(FR1_GT)
    idx = np.arange(0, len(gt), 3)  # ~33 Hz like the camera
    est = _sim3(2.0, _rotvec_to_matrix(np.array([0.1, 0.2, -0.3])), np.array([0.5, 0.0, -1.0]), gt.T_W_C[idx])
    est = _perturb(rng, est, 0.005, 0.005)
    est_path = tmp_path / "est.txt"
    write_tum_trajectory(est_path, gt.stamps_s[idx] + rng.uniform(-0.004, 0.004, idx.size), est)
    for align in ("se3", "sim3"):
        summary = _run_cli_json(capsys, [str(est_path), str(FR1_GT), "--align", align])
        _assert_matches_evo(summary, _evo_reference(est_path, FR1_GT, align))
        assert summary["matched_poses"] == idx.size
