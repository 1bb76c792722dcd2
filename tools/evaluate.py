"""``depthslam eval``: score an estimated TUM trajectory against ground truth (ATE and RPE, evo-compatible).

    depthslam eval EST.txt GT.txt [--align se3|sim3|none] [--plot FILE.png] [--json] [--max-diff-s S]
                                  [--offset-s S] [--delta D] [--delta-unit frames|m]

Both files are TUM trajectories (``timestamp tx ty tz qx qy qz qw``, camera-to-world). Poses are associated by
nearest timestamp, the estimate is aligned (Umeyama SE(3) by default, Sim(3) for trajectories of unknown scale),
then ATE and RPE are printed as text, or as one JSON object with ``--json``. The numbers agree with
``evo_ape GT EST -a|-as --max_diff S`` and ``evo_rpe GT EST [-a|-as] --delta 1 --delta_unit f`` (see
``tools/trajectory_metrics.py`` for the exact definitions).

The optional plot is drawn with OpenCV (a core dependency) rather than matplotlib, so evaluation works in a plain
install: three orthographic views (x-y, x-z, y-z) of the matched ground truth and aligned estimate.

Exit status: 0 on success, 1 for bad input data (unreadable/empty/malformed file, too few matched poses,
degenerate alignment), 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.tum_format import TumTrajectory, read_tum_trajectory
from tools.trajectory_metrics import (
    AlignMode,
    DeltaUnit,
    EvaluationConfig,
    TrajectoryEvaluation,
    evaluate_trajectories,
)

# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------


def load_trajectory(path: str | Path, role: str) -> TumTrajectory:
    """Read a TUM trajectory and refuse an empty one; ``role`` ("estimate"/"ground truth") names it in errors.

    Raises ValueError (``stream.tum_format.TumFormatError`` for malformed lines, with file and line number).
    """
    traj = read_tum_trajectory(path)
    if len(traj) == 0:
        raise ValueError(f"{role} file {path} holds no poses (empty, or only comments)")
    return traj


# ----------------------------------------------------------------------------------------------------
# plot (OpenCV, no GUI)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotStyle:
    """Layout of the trajectory plot."""

    panel_px: int = 480
    """side of each (square) view panel, pixels."""
    header_px: int = 64
    """height of the text header above the panels, pixels."""
    margin_px: int = 36
    """blank border inside each panel, pixels."""
    max_error_lines: int = 200
    """at most this many est-gt connector lines per panel (evenly subsampled)."""

    def __post_init__(self) -> None:
        if self.panel_px < 64:
            raise ValueError(f"PlotStyle.panel_px must be >= 64, got {self.panel_px}")
        if self.header_px < 0:
            raise ValueError(f"PlotStyle.header_px must be >= 0, got {self.header_px}")
        if not 0 <= self.margin_px < self.panel_px // 3:
            raise ValueError(f"PlotStyle.margin_px must be in [0, panel_px/3), got {self.margin_px}")
        if self.max_error_lines < 0:
            raise ValueError(f"PlotStyle.max_error_lines must be >= 0, got {self.max_error_lines}")


_GT_BGR = (60, 140, 20)
_EST_BGR = (30, 30, 220)
_ERR_BGR = (200, 200, 200)
_TEXT_BGR = (20, 20, 20)
_AXIS_BGR = (120, 120, 120)
_VIEWS: tuple[tuple[int, int, str], ...] = ((0, 1, "x-y"), (0, 2, "x-z"), (1, 2, "y-z"))
_SUBPIXEL_BITS = 4


def _nice_length(span: float) -> float:
    """A 1/2/5 x 10^k length close to a fifth of ``span`` (for the scale bar)."""
    target = max(span / 5.0, 1e-9)
    base = 10.0 ** math.floor(math.log10(target))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if base * factor >= target:
            return base * factor
    return base * 10.0


def render_trajectory_plot(
    gt_xyz: np.ndarray, est_xyz: np.ndarray, title: str, style: PlotStyle | None = None
) -> np.ndarray:
    """Draw matched ground-truth and estimated positions in three orthographic views.

    gt_xyz, est_xyz: (M, 3) float64 positions, metres, row i of both matched (M >= 1). Returns a
    (header_px + panel_px, 3 * panel_px, 3) uint8 BGR image: ground truth green, estimate red, grey connectors
    between matched poses, a circle at the first pose, equal axis scales per view and a scale bar.
    """
    import cv2

    st = PlotStyle() if style is None else style
    gt = np.asarray(gt_xyz, dtype=np.float64)
    est = np.asarray(est_xyz, dtype=np.float64)
    if gt.ndim != 2 or gt.shape[1] != 3 or gt.shape != est.shape or gt.shape[0] == 0:
        raise ValueError(f"render_trajectory_plot: expected two (M, 3) arrays, M >= 1, got {gt.shape}, {est.shape}")
    if not (np.all(np.isfinite(gt)) and np.all(np.isfinite(est))):
        raise ValueError("render_trajectory_plot: positions must be finite")
    p = st.panel_px
    img = np.full((st.header_px + p, 3 * p, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if st.header_px > 0:
        cv2.putText(img, title, (10, 26), font, 0.55, _TEXT_BGR, 1, cv2.LINE_AA)
        cv2.line(img, (10, 48), (40, 48), _GT_BGR, 2, cv2.LINE_AA)
        cv2.putText(img, "ground truth", (46, 53), font, 0.5, _TEXT_BGR, 1, cv2.LINE_AA)
        cv2.line(img, (170, 48), (200, 48), _EST_BGR, 2, cv2.LINE_AA)
        cv2.putText(img, "estimate (aligned)", (206, 53), font, 0.5, _TEXT_BGR, 1, cv2.LINE_AA)
    both = np.concatenate([gt, est], axis=0)
    step = max(1, math.ceil(gt.shape[0] / st.max_error_lines)) if st.max_error_lines > 0 else 0
    mult = 1 << _SUBPIXEL_BITS
    inner = p - 2 * st.margin_px
    for k, (a, b, name) in enumerate(_VIEWS):
        x0, y0 = k * p, st.header_px
        lo = both[:, [a, b]].min(axis=0)
        hi = both[:, [a, b]].max(axis=0)
        span = float(max(hi[0] - lo[0], hi[1] - lo[1]))
        span = span if span > 0.0 else 1.0
        px_per_m = inner / span
        centre = (lo + hi) / 2.0

        def to_px(xy: np.ndarray, x0: int = x0, y0: int = y0, centre: np.ndarray = centre, s: float = px_per_m):
            u = x0 + p / 2.0 + (xy[:, 0] - centre[0]) * s
            v = y0 + p / 2.0 - (xy[:, 1] - centre[1]) * s  # image rows grow downwards
            return np.round(np.stack([u, v], axis=1) * mult).astype(np.int32)

        g_px = to_px(gt[:, [a, b]])
        e_px = to_px(est[:, [a, b]])
        cv2.rectangle(img, (x0 + 4, y0 + 4), (x0 + p - 5, y0 + p - 5), _AXIS_BGR, 1)
        if step:
            for i in range(0, gt.shape[0], step):
                cv2.line(img, tuple(g_px[i]), tuple(e_px[i]), _ERR_BGR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.polylines(img, [g_px.reshape(-1, 1, 2)], False, _GT_BGR, 2, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.polylines(img, [e_px.reshape(-1, 1, 2)], False, _EST_BGR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.circle(img, tuple(g_px[0]), 5 * mult, _GT_BGR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.circle(img, tuple(e_px[0]), 5 * mult, _EST_BGR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
        axis_names = "xyz"
        cv2.putText(img, f"{name} (right: {axis_names[a]}, up: {axis_names[b]})", (x0 + 12, y0 + 24), font, 0.45,
                    _TEXT_BGR, 1, cv2.LINE_AA)
        bar_m = _nice_length(span)
        bar_px = round(bar_m * px_per_m)
        bx, by = x0 + 14, y0 + p - 16
        cv2.line(img, (bx, by), (bx + bar_px, by), _TEXT_BGR, 2)
        cv2.putText(img, f"{bar_m:g} m", (bx + bar_px + 6, by + 5), font, 0.45, _TEXT_BGR, 1, cv2.LINE_AA)
    return img


def write_trajectory_plot(path: str | Path, evaluation: TrajectoryEvaluation, style: PlotStyle | None = None) -> None:
    """Render the matched ground truth and aligned estimate of ``evaluation`` to a PNG file at ``path``."""
    import cv2

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"plot file must end in .png, got {out}")
    s = evaluation.summary()
    title = (
        f"ATE rmse {s['ate_rmse_m']:.4f} m ({s['align']}, scale {s['scale']:.4f}) | "
        f"RPE {s['rpe_trans_rmse_m']:.4f} m, {s['rpe_rot_rmse_deg']:.3f} deg | {s['matched_poses']} poses"
    )
    img = render_trajectory_plot(
        evaluation.matched_gt_T_W_C[:, :3, 3], evaluation.ate.aligned_est_T_W_C[:, :3, 3], title, style
    )
    if not cv2.imwrite(str(out), img):
        raise OSError(f"could not write plot file {out} (does its folder exist and is it writable?)")


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------


def format_text_report(evaluation: TrajectoryEvaluation, est_path: str, gt_path: str) -> str:
    """A short human-readable summary of ``evaluation`` (several lines, no trailing newline)."""
    s = evaluation.summary()
    return "\n".join(
        [
            f"estimate      {est_path}",
            f"ground truth  {gt_path}",
            f"matched       {s['matched_poses']} of {s['est_poses']} estimated poses (ground truth: "
            f"{s['gt_poses']}), max |dt| {s['max_abs_time_diff_s']:.4f} s",
            f"alignment     {s['align']}, scale {s['scale']:.6f}",
            f"ATE [m]       rmse {s['ate_rmse_m']:.6f}  mean {s['ate_mean_m']:.6f}  median {s['ate_median_m']:.6f}"
            f"  max {s['ate_max_m']:.6f}",
            f"RPE [m]       rmse {s['rpe_trans_rmse_m']:.6f}  mean {s['rpe_trans_mean_m']:.6f}  median "
            f"{s['rpe_trans_median_m']:.6f}  max {s['rpe_trans_max_m']:.6f}",
            f"RPE [deg]     rmse {s['rpe_rot_rmse_deg']:.6f}  mean {s['rpe_rot_mean_deg']:.6f}  median "
            f"{s['rpe_rot_median_deg']:.6f}  max {s['rpe_rot_max_deg']:.6f}",
            f"RPE pairs     {s['rpe_pairs']} (delta {s['rpe_delta']:g} {s['rpe_delta_unit']})",
        ]
    )


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthslam eval",
        description="Score an estimated TUM trajectory against ground truth: ATE (after alignment) and RPE.",
    )
    parser.add_argument("est", help="estimated trajectory, TUM format")
    parser.add_argument("gt", help="ground-truth trajectory, TUM format")
    parser.add_argument(
        "--align",
        choices=[m.value for m in AlignMode],
        default=AlignMode.SE3.value,
        help="Umeyama alignment of the estimate: se3 (default), sim3 (also scale, for monocular), none",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="write a PNG plot of ground truth vs aligned estimate")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    parser.add_argument(
        "--max-diff-s", type=float, default=0.02, help="max timestamp difference for association, s (default 0.02)"
    )
    parser.add_argument("--offset-s", type=float, default=0.0, help="time offset added to estimated stamps, s")
    parser.add_argument("--delta", type=float, default=1.0, help="RPE step (default 1)")
    parser.add_argument(
        "--delta-unit",
        choices=[u.value for u in DeltaUnit],
        default=DeltaUnit.FRAMES.value,
        help="unit of --delta: frames (matched poses, default) or m (travelled path)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``depthslam eval``; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = EvaluationConfig(
            align=AlignMode(args.align),
            max_difference_s=args.max_diff_s,
            offset_s=args.offset_s,
            rpe_delta=args.delta,
            rpe_delta_unit=DeltaUnit(args.delta_unit),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        parser.error(f"--plot must name a .png file, got {args.plot}")
    try:
        est = load_trajectory(args.est, "estimate")
        gt = load_trajectory(args.gt, "ground truth")
        evaluation = evaluate_trajectories(est.stamps_s, est.T_W_C, gt.stamps_s, gt.T_W_C, config)
        if args.plot is not None:
            write_trajectory_plot(args.plot, evaluation)
    except (ValueError, OSError) as exc:
        print(f"depthslam eval: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        summary = evaluation.summary()
        summary["est_file"] = str(args.est)
        summary["gt_file"] = str(args.gt)
        summary["plot_file"] = args.plot
        print(json.dumps(summary, indent=2))
    else:
        print(format_text_report(evaluation, str(args.est), str(args.gt)))
        if args.plot is not None:
            print(f"plot          {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
