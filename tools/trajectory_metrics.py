"""Trajectory accuracy metrics: timestamp association, Umeyama SE(3)/Sim(3) alignment, ATE and RPE.

Pure functions on numpy arrays (no file IO, no plotting); ``tools/evaluate.py`` is the command line around them.

Definitions follow the TUM RGB-D benchmark (Sturm et al., IROS 2012) and agree with the ``evo`` package
(``evo_ape ... -a`` / ``-as``, ``evo_rpe ... --delta 1 --delta_unit f``, translation part and rotation angle):

* **Association** (like TUM's ``associate.py``): an estimated stamp ``t_e + offset_s`` and a ground-truth stamp
  ``t_g`` are candidates when ``|t_e + offset_s - t_g| <= max_difference_s``; candidate pairs are taken greedily
  by increasing time difference, each pose used at most once. Wherever every estimated stamp has one nearest
  ground-truth stamp of its own (the usual case: stamp jitter below half the ground-truth period) this is the
  same set of pairs ``evo.core.sync.associate_trajectories`` finds.
* **Alignment**: Umeyama (IEEE PAMI 1991) least-squares similarity ``p_gt ≈ s R p_est + t`` of the matched
  positions; the sign correction makes ``R`` a proper rotation (``det R = +1``) even when the best orthogonal
  fit would be a reflection. SE(3) fixes ``s = 1``; ``none`` is the identity.
* **ATE** (evo's APE, translation part): ``e_i = || (s R t_est_i + t) - t_gt_i ||`` in metres.
* **RPE** (evo's RPE, consecutive pairs): for index pairs ``(i, j)``, ``E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with
  ``Q`` ground truth and ``P`` the *aligned* estimate; translation error ``||trans(E)||`` (m), rotation error
  the angle of ``rot(E)`` (deg). Pairs are ``(0, d), (d, 2d), ...`` for a delta of ``d`` frames, or for a
  delta in metres consecutive runs whose travelled path reaches ``d`` (measured on the aligned estimate, as evo
  does by default; the ground truth with ``pairs_from_gt=True``). Under SE(3) alignment RPE equals the
  unaligned RPE; under Sim(3) the estimated translations are scale-corrected (= ``evo_rpe -as``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AlignMode",
    "Association",
    "AteResult",
    "DeltaUnit",
    "ErrorStats",
    "EvaluationConfig",
    "RpeResult",
    "Sim3Alignment",
    "TrajectoryEvaluation",
    "absolute_trajectory_error",
    "associate_stamps",
    "error_stats",
    "evaluate_trajectories",
    "relative_pose_error",
    "rotation_angle_deg",
    "rpe_index_pairs",
    "umeyama_alignment",
]

#: relative size of the second singular value of the cross-covariance below which the matched positions are
#: treated as collinear (rotation about their line undetermined -> alignment refused).
_DEGENERATE_RTOL = 1e-9


class AlignMode(enum.StrEnum):
    """How the estimated trajectory is aligned to the ground truth before the errors are computed."""

    SE3 = "se3"
    """rotation + translation (Umeyama without scale); for metric trajectories."""
    SIM3 = "sim3"
    """rotation + translation + scale (Umeyama with scale); for trajectories of unknown scale (monocular)."""
    NONE = "none"
    """no alignment: both trajectories must already share one world frame."""


class DeltaUnit(enum.StrEnum):
    """Unit of the RPE step ``delta``."""

    FRAMES = "frames"
    """``delta`` counts matched poses (integer)."""
    METRES = "m"
    """``delta`` is a travelled path length in metres."""


# ----------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------


def _check_stamps(stamps_s: np.ndarray, name: str) -> np.ndarray:
    stamps = np.asarray(stamps_s, dtype=np.float64)
    if stamps.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of timestamps in seconds, got shape {stamps.shape}")
    if not np.all(np.isfinite(stamps)):
        raise ValueError(f"{name}: timestamps must be finite")
    return stamps


def _check_poses(T_W_C: np.ndarray, name: str) -> np.ndarray:
    poses = np.asarray(T_W_C, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"{name}: expected poses of shape (N, 4, 4), got {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise ValueError(f"{name}: poses must be finite")
    return poses


def _check_pose_pair(est_T_W_C: np.ndarray, gt_T_W_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = _check_poses(est_T_W_C, "est_T_W_C")
    gt = _check_poses(gt_T_W_C, "gt_T_W_C")
    if est.shape[0] != gt.shape[0]:
        raise ValueError(
            f"est_T_W_C and gt_T_W_C must hold matched poses of equal count, got {est.shape[0]} and {gt.shape[0]}"
        )
    return est, gt


# ----------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorStats:
    """Summary of a vector of non-negative errors (same definitions as evo's statistics)."""

    rmse: float
    """root mean square, ``sqrt(mean(e**2))``."""
    mean: float
    """arithmetic mean."""
    median: float
    """median."""
    std: float
    """population standard deviation (``numpy.std``, ddof 0)."""
    min: float
    """smallest error."""
    max: float
    """largest error."""
    sse: float
    """sum of squared errors."""
    count: int
    """number of errors summarised."""

    def as_dict(self, prefix: str, suffix: str) -> dict[str, float | int]:
        """Flat ``{prefix + stat + suffix: value}`` mapping, e.g. ``ate_rmse_m``."""
        stats = ("rmse", "mean", "median", "std", "min", "max", "sse")
        out: dict[str, float | int] = {f"{prefix}{s}{suffix}": float(getattr(self, s)) for s in stats}
        out[f"{prefix}count"] = self.count
        return out


def error_stats(errors: np.ndarray) -> ErrorStats:
    """Statistics of ``errors`` ((K,) float, K >= 1)."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"error_stats: expected a non-empty 1-D error vector, got shape {e.shape}")
    sq = e * e
    return ErrorStats(
        rmse=math.sqrt(float(np.mean(sq))),
        mean=float(np.mean(e)),
        median=float(np.median(e)),
        std=float(np.std(e)),
        min=float(np.min(e)),
        max=float(np.max(e)),
        sse=float(np.sum(sq)),
        count=int(e.size),
    )


# ----------------------------------------------------------------------------------------------------
# association
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Association:
    """Matched pose pairs of an estimated and a ground-truth trajectory, ordered by estimated time."""

    est_indices: np.ndarray
    """(M,) int64 indices into the estimated trajectory, increasing in (offset) estimated time."""
    gt_indices: np.ndarray
    """(M,) int64 indices into the ground-truth trajectory, one per estimated index."""
    time_diffs_s: np.ndarray
    """(M,) float64 ``est_stamp + offset_s - gt_stamp`` of each pair, seconds."""

    @property
    def count(self) -> int:
        """Number of matched pairs M."""
        return int(self.est_indices.size)


def associate_stamps(
    est_stamps_s: np.ndarray,
    gt_stamps_s: np.ndarray,
    max_difference_s: float = 0.02,
    offset_s: float = 0.0,
) -> Association:
    """Match estimated to ground-truth timestamps, nearest first, each stamp used at most once.

    ``est_stamps_s`` (N,) and ``gt_stamps_s`` (G,) are float seconds in any order; ``offset_s`` is added to the
    estimated stamps (TUM ``associate.py --offset``, evo ``--t_offset``). Pairs with
    ``|est + offset_s - gt| <= max_difference_s`` are candidates; they are accepted greedily by increasing time
    difference (ties: earlier ground-truth stamp, then earlier estimated stamp). Returns possibly zero pairs.
    """
    est = _check_stamps(est_stamps_s, "est_stamps_s")
    gt = _check_stamps(gt_stamps_s, "gt_stamps_s")
    if not (math.isfinite(max_difference_s) and max_difference_s >= 0.0):
        raise ValueError(f"max_difference_s must be a finite number >= 0, got {max_difference_s!r}")
    if not math.isfinite(offset_s):
        raise ValueError(f"offset_s must be finite, got {offset_s!r}")
    empty_i = np.zeros(0, dtype=np.int64)
    if est.size == 0 or gt.size == 0:
        return Association(empty_i, empty_i.copy(), np.zeros(0, dtype=np.float64))

    shifted = est + offset_s
    gt_order = np.argsort(gt, kind="stable")
    gt_sorted = gt[gt_order]
    lo = np.searchsorted(gt_sorted, shifted - max_difference_s, side="left")
    hi = np.searchsorted(gt_sorted, shifted + max_difference_s, side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return Association(empty_i, empty_i.copy(), np.zeros(0, dtype=np.float64))
    # all candidate (est, gt-sorted-position) pairs inside the windows, vectorised
    cand_est = np.repeat(np.arange(est.size, dtype=np.int64), counts)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    cand_pos = starts + np.arange(total, dtype=np.int64)
    diffs = np.abs(shifted[cand_est] - gt_sorted[cand_pos])
    keep = diffs <= max_difference_s  # float rounding at the window edges
    cand_est, cand_pos, diffs = cand_est[keep], cand_pos[keep], diffs[keep]
    # order: smallest difference, then earliest gt stamp, then earliest est stamp
    order = np.lexsort((shifted[cand_est], cand_pos, diffs))
    est_used = np.zeros(est.size, dtype=bool)
    gt_used = np.zeros(gt.size, dtype=bool)
    pairs_e: list[int] = []
    pairs_g: list[int] = []
    for k in order.tolist():
        e = int(cand_est[k])
        g = int(cand_pos[k])
        if est_used[e] or gt_used[g]:
            continue
        est_used[e] = True
        gt_used[g] = True
        pairs_e.append(e)
        pairs_g.append(g)
    est_idx = np.asarray(pairs_e, dtype=np.int64)
    gt_idx = gt_order[np.asarray(pairs_g, dtype=np.int64)].astype(np.int64)
    by_time = np.lexsort((est_idx, shifted[est_idx]))
    est_idx, gt_idx = est_idx[by_time], gt_idx[by_time]
    return Association(est_idx, gt_idx, shifted[est_idx] - gt[gt_idx])


# ----------------------------------------------------------------------------------------------------
# alignment
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sim3Alignment:
    """A similarity transform ``x -> scale * rotation @ x + translation_m`` (estimated world -> gt world)."""

    rotation: np.ndarray
    """(3, 3) float64 proper rotation (det +1)."""
    translation_m: np.ndarray
    """(3,) float64 translation, metres of the ground-truth frame."""
    scale: float
    """scale factor (1.0 for SE(3) and for no alignment)."""

    @staticmethod
    def identity() -> Sim3Alignment:
        """The identity transform."""
        return Sim3Alignment(np.eye(3), np.zeros(3), 1.0)

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix ``[[s R, t], [0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation_m
        return m

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Transform (N, 3) float64 points; returns (N, 3) float64."""
        p = np.asarray(points, dtype=np.float64)
        return self.scale * (p @ self.rotation.T) + self.translation_m

    def apply_poses(self, T_W_C: np.ndarray) -> np.ndarray:
        """Move (N, 4, 4) camera-to-world poses into the target frame: rotation ``R R_i``, position ``s R t_i + t``.

        The result stays a rigid transform (the scale only acts on positions), as in evo's ``align``.
        """
        poses = _check_poses(T_W_C, "T_W_C")
        out = np.array(poses, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.rotation @ poses[:, :3, :3]
        out[:, :3, 3] = self.apply_points(poses[:, :3, 3])
        return out


def umeyama_alignment(source_points: np.ndarray, target_points: np.ndarray, with_scale: bool) -> Sim3Alignment:
    """Least-squares ``target ≈ s R source + t`` (Umeyama 1991) for matched (N, 3) float64 point sets.

    ``R`` is always a proper rotation: when the orthogonal Procrustes optimum is a reflection
    (``det(U) det(V) < 0``), the smallest singular direction is flipped (Umeyama's ``S`` matrix), which is the
    best *rotation*. Raises ValueError for fewer than 3 points, non-finite input, collinear or coincident points
    (rotation undetermined) or, with scale, a source without spread.
    """
    src = np.asarray(source_points, dtype=np.float64)
    dst = np.asarray(target_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(
            f"umeyama_alignment: expected two (N, 3) point arrays of equal shape, got {src.shape} and {dst.shape}"
        )
    n = src.shape[0]
    if n < 3:
        raise ValueError(f"umeyama_alignment: need at least 3 matched points, got {n}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("umeyama_alignment: points must be finite")
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    src_c = src - mean_src
    dst_c = dst - mean_dst
    var_src = float(np.sum(src_c * src_c)) / n
    cov = (dst_c.T @ src_c) / n
    u, d, vt = np.linalg.svd(cov)
    if d[0] <= 0.0 or d[1] <= _DEGENERATE_RTOL * d[0]:
        raise ValueError(
            "umeyama_alignment: the matched positions are (nearly) coincident or collinear, so the alignment "
            f"rotation is undetermined (cross-covariance singular values {d.tolist()}); "
            "use --align none or a trajectory with more motion"
        )
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[2] = -1.0
    rotation = (u * sign) @ vt
    if with_scale:
        if var_src <= 0.0:
            raise ValueError("umeyama_alignment: source points have no spread; scale is undetermined")
        scale = float(np.dot(d, sign)) / var_src
    else:
        scale = 1.0
    translation = mean_dst - scale * (rotation @ mean_src)
    return Sim3Alignment(rotation=rotation, translation_m=translation, scale=scale)


def _alignment_for(est: np.ndarray, gt: np.ndarray, align: AlignMode) -> Sim3Alignment:
    if align is AlignMode.NONE:
        return Sim3Alignment.identity()
    return umeyama_alignment(est[:, :3, 3], gt[:, :3, 3], with_scale=align is AlignMode.SIM3)


# ----------------------------------------------------------------------------------------------------
# ATE
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AteResult:
    """Absolute trajectory error of matched poses after alignment."""

    errors_m: np.ndarray
    """(M,) float64 position error of each matched pose, metres."""
    stats: ErrorStats
    """statistics of ``errors_m``."""
    alignment: Sim3Alignment
    """the transform applied to the estimate (identity for ``AlignMode.NONE``)."""
    aligned_est_T_W_C: np.ndarray  # noqa: N815 - convention
    """(M, 4, 4) float64 estimated poses after alignment."""


def absolute_trajectory_error(
    est_T_W_C: np.ndarray, gt_T_W_C: np.ndarray, align: AlignMode = AlignMode.SE3
) -> AteResult:
    """ATE of matched (M, 4, 4) float64 pose arrays (row i of both belongs to one timestamp), M >= 1
    (M >= 3 when aligning)."""
    est, gt = _check_pose_pair(est_T_W_C, gt_T_W_C)
    mode = AlignMode(align)
    if est.shape[0] == 0:
        raise ValueError("absolute_trajectory_error: no matched poses")
    alignment = _alignment_for(est, gt, mode)
    aligned = alignment.apply_poses(est)
    errors = np.linalg.norm(aligned[:, :3, 3] - gt[:, :3, 3], axis=1)
    return AteResult(errors_m=errors, stats=error_stats(errors), alignment=alignment, aligned_est_T_W_C=aligned)


# ----------------------------------------------------------------------------------------------------
# RPE
# ----------------------------------------------------------------------------------------------------


def _inverse_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of (K, 4, 4) rigid transforms (rotation block transposed)."""
    out = np.zeros_like(T)
    rt = np.transpose(T[:, :3, :3], (0, 2, 1))
    out[:, :3, :3] = rt
    out[:, :3, 3] = -np.einsum("kij,kj->ki", rt, T[:, :3, 3])
    out[:, 3, 3] = 1.0
    return out


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees, in [0, 180], of (K, 3, 3) float64 rotation matrices; returns (K,) float64.

    Uses ``atan2(|axis part|, cos part)``, accurate for tiny angles as well as near 180 degrees.
    """
    r = np.asarray(R, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (3, 3):
        raise ValueError(f"rotation_angle_deg: expected (K, 3, 3) matrices, got {r.shape}")
    cos_part = (np.trace(r, axis1=1, axis2=2) - 1.0) / 2.0
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=1)
    sin_part = np.linalg.norm(axis, axis=1) / 2.0
    return np.degrees(np.arctan2(sin_part, cos_part))


def rpe_index_pairs(T_W_C: np.ndarray, delta: float, delta_unit: DeltaUnit = DeltaUnit.FRAMES) -> np.ndarray:
    """Consecutive index pairs for RPE over (M, 4, 4) poses; returns (K, 2) int64, possibly K = 0.

    Frames: ``(0, d), (d, 2d), ...`` (``d`` a positive integer). Metres: a pair closes as soon as the path
    travelled since its first pose reaches ``delta``; the next pair starts there (evo's consecutive mode).
    """
    poses = _check_poses(T_W_C, "T_W_C")
    unit = DeltaUnit(delta_unit)
    m = poses.shape[0]
    if unit is DeltaUnit.FRAMES:
        if delta != int(delta) or delta < 1:
            raise ValueError(f"RPE delta in frames must be a positive integer, got {delta!r}")
        ids = np.arange(0, m, int(delta), dtype=np.int64)
    else:
        if not (math.isfinite(delta) and delta > 0.0):
            raise ValueError(f"RPE delta in metres must be a positive finite number, got {delta!r}")
        steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        id_list = [0]
        travelled = 0.0
        for i, step in enumerate(steps.tolist(), start=1):
            travelled += step
            if travelled >= delta:
                id_list.append(i)
                travelled = 0.0
        ids = np.asarray(id_list, dtype=np.int64)
    return np.stack([ids[:-1], ids[1:]], axis=1) if ids.size >= 2 else np.zeros((0, 2), dtype=np.int64)


@dataclass(frozen=True)
class RpeResult:
    """Relative pose error over consecutive pose pairs."""

    pairs: np.ndarray
    """(K, 2) int64 indices (i, j) into the matched poses."""
    trans_errors_m: np.ndarray
    """(K,) float64 translation norm of each relative error pose, metres."""
    rot_errors_deg: np.ndarray
    """(K,) float64 rotation angle of each relative error pose, degrees."""
    trans: ErrorStats
    """statistics of ``trans_errors_m``."""
    rot: ErrorStats
    """statistics of ``rot_errors_deg``."""
    delta: float
    """the step used."""
    delta_unit: DeltaUnit
    """unit of ``delta``."""


def relative_pose_error(
    est_T_W_C: np.ndarray,
    gt_T_W_C: np.ndarray,
    delta: float = 1,
    delta_unit: DeltaUnit = DeltaUnit.FRAMES,
    pairs_from_gt: bool = False,
) -> RpeResult:
    """RPE of matched (M, 4, 4) float64 poses (already aligned if wanted; rotation blocks must be rotations).

    ``E_ij = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with ``Q`` = ``gt_T_W_C``, ``P`` = ``est_T_W_C``; pairs from
    :func:`rpe_index_pairs` on the estimate (or on the ground truth with ``pairs_from_gt``). Raises ValueError
    when no pair fits (too few poses or ``delta`` longer than the trajectory).
    """
    est, gt = _check_pose_pair(est_T_W_C, gt_T_W_C)
    unit = DeltaUnit(delta_unit)
    pairs = rpe_index_pairs(gt if pairs_from_gt else est, delta, unit)
    if pairs.shape[0] == 0:
        raise ValueError(
            f"relative_pose_error: delta = {delta} {unit.value} yields no pose pair among {est.shape[0]} matched "
            "poses; use a smaller delta"
        )
    i, j = pairs[:, 0], pairs[:, 1]
    gt_rel = _inverse_rigid(gt[i]) @ gt[j]
    est_rel = _inverse_rigid(est[i]) @ est[j]
    err = _inverse_rigid(gt_rel) @ est_rel
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = rotation_angle_deg(err[:, :3, :3])
    return RpeResult(
        pairs=pairs,
        trans_errors_m=trans,
        rot_errors_deg=rot,
        trans=error_stats(trans),
        rot=error_stats(rot),
        delta=float(delta),
        delta_unit=unit,
    )


# ----------------------------------------------------------------------------------------------------
# the whole evaluation
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one trajectory evaluation."""

    align: AlignMode = AlignMode.SE3
    """alignment of the estimate before ATE and RPE."""
    max_difference_s: float = 0.02
    """largest accepted |est + offset - gt| time difference when associating, seconds (TUM default 0.02)."""
    offset_s: float = 0.0
    """time offset added to the estimated stamps before association, seconds."""
    rpe_delta: float = 1
    """RPE step, in ``rpe_delta_unit`` (frames: positive integer)."""
    rpe_delta_unit: DeltaUnit = DeltaUnit.FRAMES
    """unit of ``rpe_delta``."""
    min_matched_poses: int = 3
    """fewest matched poses accepted (>= 3: Umeyama needs three, RPE needs two)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "align", AlignMode(self.align))
        except ValueError as exc:
            raise ValueError(f"EvaluationConfig.align must be one of {[m.value for m in AlignMode]}") from exc
        try:
            object.__setattr__(self, "rpe_delta_unit", DeltaUnit(self.rpe_delta_unit))
        except ValueError as exc:
            raise ValueError(
                f"EvaluationConfig.rpe_delta_unit must be one of {[u.value for u in DeltaUnit]}"
            ) from exc
        if not (math.isfinite(self.max_difference_s) and self.max_difference_s >= 0.0):
            raise ValueError(f"EvaluationConfig.max_difference_s must be finite and >= 0, got {self.max_difference_s}")
        if not math.isfinite(self.offset_s):
            raise ValueError(f"EvaluationConfig.offset_s must be finite, got {self.offset_s}")
        if self.rpe_delta_unit is DeltaUnit.FRAMES:
            if not (float(self.rpe_delta).is_integer() and self.rpe_delta >= 1):
                raise ValueError(f"EvaluationConfig.rpe_delta in frames must be an integer >= 1, got {self.rpe_delta}")
        elif not (math.isfinite(self.rpe_delta) and self.rpe_delta > 0.0):
            raise ValueError(f"EvaluationConfig.rpe_delta in metres must be finite and > 0, got {self.rpe_delta}")
        if isinstance(self.min_matched_poses, bool) or not isinstance(self.min_matched_poses, int):
            raise ValueError(f"EvaluationConfig.min_matched_poses must be an int, got {self.min_matched_poses!r}")
        if self.min_matched_poses < 3:
            raise ValueError(f"EvaluationConfig.min_matched_poses must be >= 3, got {self.min_matched_poses}")


@dataclass(frozen=True)
class TrajectoryEvaluation:
    """Result of :func:`evaluate_trajectories`."""

    config: EvaluationConfig
    """settings used."""
    association: Association
    """matched pose pairs (indices into the inputs)."""
    ate: AteResult
    """absolute trajectory error (rows follow ``association``)."""
    rpe: RpeResult
    """relative pose error on the aligned matched poses."""
    est_count: int
    """poses in the estimated trajectory."""
    gt_count: int
    """poses in the ground-truth trajectory."""
    matched_gt_T_W_C: np.ndarray  # noqa: N815 - convention
    """(M, 4, 4) float64 ground-truth poses of the matched pairs."""

    @property
    def matched_poses(self) -> int:
        """Number of matched pose pairs M."""
        return self.association.count

    def summary(self) -> dict[str, object]:
        """JSON-ready flat summary (floats, ints, strings and small nested lists)."""
        cfg = self.config
        out: dict[str, object] = {
            "align": cfg.align.value,
            "matched_poses": self.matched_poses,
            "est_poses": self.est_count,
            "gt_poses": self.gt_count,
            "max_diff_s": cfg.max_difference_s,
            "offset_s": cfg.offset_s,
            "max_abs_time_diff_s": float(np.max(np.abs(self.association.time_diffs_s))),
            "scale": self.ate.alignment.scale,
            "alignment_rotation": self.ate.alignment.rotation.tolist(),
            "alignment_translation_m": self.ate.alignment.translation_m.tolist(),
        }
        out.update(self.ate.stats.as_dict("ate_", "_m"))
        out["rpe_delta"] = self.rpe.delta
        out["rpe_delta_unit"] = self.rpe.delta_unit.value
        out.update(self.rpe.trans.as_dict("rpe_trans_", "_m"))
        rot = self.rpe.rot.as_dict("rpe_rot_", "_deg")
        rot.pop("rpe_rot_count")
        out.update(rot)
        out["rpe_pairs"] = out.pop("rpe_trans_count")
        out.pop("ate_count")
        return out


def evaluate_trajectories(
    est_stamps_s: np.ndarray,
    est_T_W_C: np.ndarray,
    gt_stamps_s: np.ndarray,
    gt_T_W_C: np.ndarray,
    config: EvaluationConfig | None = None,
) -> TrajectoryEvaluation:
    """Associate, align and score an estimated trajectory against ground truth.

    ``*_stamps_s`` (N,) / (G,) float64 seconds, ``*_T_W_C`` (N, 4, 4) / (G, 4, 4) float64 camera-to-world.
    Raises ValueError when fewer than ``config.min_matched_poses`` poses match.
    """
    cfg = EvaluationConfig() if config is None else config
    est_stamps = _check_stamps(est_stamps_s, "est_stamps_s")
    gt_stamps = _check_stamps(gt_stamps_s, "gt_stamps_s")
    est = _check_poses(est_T_W_C, "est_T_W_C")
    gt = _check_poses(gt_T_W_C, "gt_T_W_C")
    if est.shape[0] != est_stamps.size:
        raise ValueError(f"estimate: {est_stamps.size} timestamps but {est.shape[0]} poses")
    if gt.shape[0] != gt_stamps.size:
        raise ValueError(f"ground truth: {gt_stamps.size} timestamps but {gt.shape[0]} poses")
    assoc = associate_stamps(est_stamps, gt_stamps, cfg.max_difference_s, cfg.offset_s)
    if assoc.count < cfg.min_matched_poses:
        raise ValueError(
            f"only {assoc.count} of {est_stamps.size} estimated poses match a ground-truth pose within "
            f"{cfg.max_difference_s} s (time offset {cfg.offset_s} s); at least {cfg.min_matched_poses} are needed "
            "(check that both files use the same clock, or raise --max-diff-s / set --offset-s)"
        )
    est_m = est[assoc.est_indices]
    gt_m = gt[assoc.gt_indices]
    ate = absolute_trajectory_error(est_m, gt_m, cfg.align)
    rpe = relative_pose_error(ate.aligned_est_T_W_C, gt_m, cfg.rpe_delta, cfg.rpe_delta_unit)
    return TrajectoryEvaluation(
        config=cfg,
        association=assoc,
        ate=ate,
        rpe=rpe,
        est_count=int(est_stamps.size),
        gt_count=int(gt_stamps.size),
        matched_gt_T_W_C=gt_m,
    )
