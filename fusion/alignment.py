"""Depth scale alignment: how a frame's depth image maps to map-consistent metric depth, and robust fits.

Two depth models, one per :class:`~stream.messages.DepthKind`, each with a small parameter vector:

* ``METRIC``: ``depth = exp(p[0]) * raw`` (parameter: log scale; a sensor gives p = 0).
* ``INVERSE_RELATIVE``: the raw value is affine in inverse depth, ``1 / depth = p[0] * raw + p[1]``
  (scale ``a = p[0] > 0`` and shift ``b = p[1]``, both in the map's units).

Raw values of 0 (or non-finite) are invalid and map to depth 0, as does any inverse depth at or below
``1 / max_depth``. The fits compare a frame's raw values at tracked features with the depths that the map
predicts for them (landmarks seen from the frame's estimated pose) and reject outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.messages import DepthKind


def param_count(kind: DepthKind) -> int:
    """Length of the parameter vector of ``kind``'s depth model."""
    return 1 if kind is DepthKind.METRIC else 2


def identity_params(kind: DepthKind) -> np.ndarray:
    """Parameters that leave metric depth unchanged (metric), or ``a = 1, b = 0`` (relative)."""
    return np.zeros(1) if kind is DepthKind.METRIC else np.array([1.0, 0.0])


def scale_and_shift(kind: DepthKind, params: np.ndarray) -> tuple[float, float]:
    """Human-readable ``(scale, shift)``: metric ``(exp(p0), 0)``; relative ``(a, b)`` of inverse depth."""
    if kind is DepthKind.METRIC:
        return float(np.exp(params[0])), 0.0
    return float(params[0]), float(params[1])


def depth_from_raw(kind: DepthKind, params: np.ndarray, raw: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth (same shape as ``raw``, float64) of raw values under ``params``; 0 where invalid or beyond max."""
    raw = np.asarray(raw, dtype=np.float64)
    valid = np.isfinite(raw) & (raw > 0)
    if kind is DepthKind.METRIC:
        depth = np.where(valid, np.exp(params[0]) * np.where(valid, raw, 0.0), 0.0)
        return np.where(depth <= max_depth, depth, 0.0)
    inv = params[0] * np.where(valid, raw, 0.0) + params[1]
    ok = valid & (inv > 1.0 / max_depth)
    return np.where(ok, 1.0 / np.where(ok, inv, 1.0), 0.0)


def log_depth_jacobian(kind: DepthKind, params: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """d log(depth) / d params, (N, P) float64, for valid raw values (N,)."""
    raw = np.asarray(raw, dtype=np.float64)
    if kind is DepthKind.METRIC:
        return np.ones((raw.shape[0], 1))
    inv = params[0] * raw + params[1]
    return np.stack([-raw / inv, -1.0 / inv], axis=1)


def aligned_depth_image(kind: DepthKind, params: np.ndarray, raw: np.ndarray, max_depth: float) -> np.ndarray:
    """(H, W) float32 map-consistent depth of a raw (H, W) float32 depth image; 0 = invalid."""
    if kind is DepthKind.METRIC:
        out = raw * np.float32(np.exp(params[0]))
        out[~(out <= max_depth)] = 0.0  # also clears NaN
        out[out < 0] = 0.0
        return out
    inv = raw * np.float32(params[0]) + np.float32(params[1])
    ok = (raw > 0) & (inv > np.float32(1.0 / max_depth))
    out = np.zeros(raw.shape, np.float32)
    np.divide(np.float32(1.0), inv, out=out, where=ok)
    return out


@dataclass(frozen=True)
class AlignmentConfig:
    """Robust fitting of a frame's depth model to the map."""

    inlier_tolerance: float = 0.08
    """Largest relative inverse-depth error ``|fit - target| / target`` of an inlier (> 0)."""
    min_points: int = 12
    """Fewest inliers for an accepted fit (>= 3)."""
    ransac_iterations: int = 64
    """Two-point RANSAC hypotheses for the relative (scale + shift) fit (>= 1)."""
    min_raw_spread: float = 0.05
    """Relative spread (std / mean) of the raw values below which the shift is not fitted (scale only)."""

    def __post_init__(self) -> None:
        if not (self.inlier_tolerance > 0.0 and np.isfinite(self.inlier_tolerance)):
            raise ValueError(f"AlignmentConfig.inlier_tolerance must be positive, got {self.inlier_tolerance!r}")
        if not isinstance(self.min_points, int) or self.min_points < 3:
            raise ValueError(f"AlignmentConfig.min_points must be an int >= 3, got {self.min_points!r}")
        if not isinstance(self.ransac_iterations, int) or self.ransac_iterations < 1:
            raise ValueError(
                f"AlignmentConfig.ransac_iterations must be an int >= 1, got {self.ransac_iterations!r}"
            )
        if not (self.min_raw_spread >= 0.0 and np.isfinite(self.min_raw_spread)):
            raise ValueError(f"AlignmentConfig.min_raw_spread must be >= 0, got {self.min_raw_spread!r}")


@dataclass(frozen=True, eq=False)
class AlignmentFit:
    """Result of fitting a depth model to target depths."""

    ok: bool
    """True when enough inliers supported the fit."""
    params: np.ndarray
    """(P,) float64 fitted parameters (meaningless when not ``ok``)."""
    inliers: np.ndarray
    """(N,) bool inlier mask over the input points."""
    median_rel_error: float
    """Median relative inverse-depth error of the inliers (nan when none)."""

    @property
    def inlier_count(self) -> int:
        """Number of inliers."""
        return int(np.count_nonzero(self.inliers))


def fit_depth_model(
    kind: DepthKind, raw: np.ndarray, target_depth: np.ndarray, config: AlignmentConfig, rng: np.random.Generator
) -> AlignmentFit:
    """Fit ``kind``'s parameters so that ``depth_from_raw(raw) ~ target_depth`` (both (N,)), robustly.

    Metric: log-ratio median, then the mean over inliers. Relative: two-point RANSAC on inverse depth,
    then weighted least squares (relative residuals) on the inliers, twice. Points with invalid raw
    value or non-positive target are ignored.
    """
    raw = np.asarray(raw, dtype=np.float64)
    target = np.asarray(target_depth, dtype=np.float64)
    if raw.shape != target.shape or raw.ndim != 1:
        raise ValueError(f"raw and target_depth must be equal-length 1-D arrays, got {raw.shape} and {target.shape}")
    usable = np.isfinite(raw) & (raw > 0) & np.isfinite(target) & (target > 0)
    n_params = param_count(kind)
    fail = AlignmentFit(False, identity_params(kind), np.zeros(raw.shape, bool), float("nan"))
    if np.count_nonzero(usable) < config.min_points:
        return fail
    w = np.where(usable, 1.0 / np.where(usable, target, 1.0), 0.0)
    tol = config.inlier_tolerance

    if kind is DepthKind.METRIC:
        logq = np.where(usable, np.log(np.where(usable, target / np.where(usable, raw, 1.0), 1.0)), 0.0)
        centre = float(np.median(logq[usable]))
        inl = usable & (np.abs(np.expm1(logq - centre)) < tol)
        if np.count_nonzero(inl) < config.min_points:
            return fail
        centre = float(np.mean(logq[inl]))
        inl = usable & (np.abs(np.expm1(logq - centre)) < tol)
        if np.count_nonzero(inl) < config.min_points:
            return fail
        params = np.array([float(np.mean(logq[inl]))])
        rel = np.abs(np.expm1(logq[inl] - params[0]))
        return AlignmentFit(True, params, inl, float(np.median(rel)))

    idx = np.flatnonzero(usable)
    r, wt = raw[idx], w[idx]
    spread = float(np.std(r) / max(np.mean(r), 1e-12))
    if spread < config.min_raw_spread:
        # no depth variation to separate scale from shift: fit a scale of inverse depth only
        a = float(np.median(wt / r))
        params = np.array([a, 0.0])
    else:
        n = idx.size
        i = rng.integers(0, n, config.ransac_iterations)
        j = rng.integers(0, n, config.ransac_iterations)
        dr = r[i] - r[j]
        good = np.abs(dr) > 1e-9 * np.abs(r[i])
        a = np.where(good, (wt[i] - wt[j]) / np.where(good, dr, 1.0), 0.0)
        b = wt[i] - a * r[i]
        good &= a > 0
        if not np.any(good):
            return fail
        a, b = a[good], b[good]
        err = np.abs((a[:, None] * r[None, :] + b[:, None]) / wt[None, :] - 1.0)
        best = int(np.argmax(np.count_nonzero(err < tol, axis=1)))
        params = np.array([a[best], b[best]])
        for _ in range(2):
            inl_local = np.abs((params[0] * r + params[1]) / wt - 1.0) < tol
            if np.count_nonzero(inl_local) < config.min_points:
                return fail
            # minimise sum(((a r + b) / w - 1)^2): linear least squares in (a, b)
            A = np.stack([r[inl_local] / wt[inl_local], 1.0 / wt[inl_local]], axis=1)
            sol, *_ = np.linalg.lstsq(A, np.ones(A.shape[0]), rcond=None)
            if not (np.all(np.isfinite(sol)) and sol[0] > 0):
                return fail
            params = sol
    rel_all = np.abs((params[0] * r + params[1]) / wt - 1.0)
    inl_local = rel_all < tol
    if np.count_nonzero(inl_local) < config.min_points:
        return fail
    inl = np.zeros(raw.shape, bool)
    inl[idx[inl_local]] = True
    assert params.shape == (n_params,)
    return AlignmentFit(True, params.astype(np.float64), inl, float(np.median(rel_all[inl_local])))
