"""Local refinement of a window of recent keyframes: poses and depth-model parameters together (GTSAM).

Landmarks are *anchored*: a landmark is the back-projection of a pixel of its anchor keyframe at the depth
that the anchor's depth model gives for the raw depth value there, so landmark positions are not separate
variables; they move with the anchor's pose and depth parameters. For every observer keyframe one GTSAM
``CustomFactor`` holds all landmarks it sees that are anchored elsewhere (vectorised numpy residuals and
analytic Jacobians: one Python call per keyframe, not per landmark):

* reprojection: ``(project(T_k^-1 T_a (ray_a * depth_a)) - uv_k) / sigma_px`` (2 per landmark);
* depth: ``(log z_k(predicted) - log depth_k(raw_k)) / sigma_log_depth`` where the observer has depth.

Each residual block gets a Cauchy weight (IRLS inside the factor, scale ``robust_k`` sigmas), so gross
outliers lose their influence. Gauge:
the oldest keyframe of the window keeps its pose; its depth parameters are held by a prior (the scale
tightly, a relative model's shift loosely, so multi-view geometry can correct the shift the first frame
had to guess). Anchors older than the window enter as constants.

GTSAM's ``Pose3`` tangent vector is ``(omega, v)`` with right-multiplied perturbation ``T Exp(xi)``; the
Jacobians below follow that convention (valid for its Expmap and Cayley retractions alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion.alignment import depth_from_raw, log_depth_jacobian
from fusion.pose_refine import cauchy_weight
from fusion.se3 import orthonormalize, skew
from stream.messages import DepthKind, Intrinsics


@dataclass(frozen=True)
class WindowConfig:
    """Settings of the local keyframe-window refinement."""

    size: int = 6
    """Keyframes in the window (>= 2); the oldest is the gauge (pose fixed)."""
    max_iterations: int = 6
    """Levenberg-Marquardt iterations per refinement (>= 1)."""
    reprojection_sigma_px: float = 1.0
    """Standard deviation of a feature position, pixels (> 0)."""
    robust_k: float = 2.0
    """Scale of the Cauchy robust kernel in standard deviations (> 0): weight ``1 / (1 + (e / k)^2)``."""
    metric_scale_prior_sigma: float = 0.05
    """Prior sigma of a metric keyframe's log depth scale around 0 (> 0): sensors are nearly metric."""
    relative_shift_prior_sigma: float = 0.5
    """Prior sigma of a relative keyframe's inverse-depth shift, in units of its median inverse depth (> 0)."""
    relative_scale_prior_sigma: float = 0.5
    """Prior sigma of a non-gauge relative keyframe's inverse-depth scale, relative to its value (> 0)."""

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 2:
            raise ValueError(f"WindowConfig.size must be an int >= 2, got {self.size!r}")
        if not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise ValueError(f"WindowConfig.max_iterations must be an int >= 1, got {self.max_iterations!r}")
        for name in ("reprojection_sigma_px", "robust_k", "metric_scale_prior_sigma",
                     "relative_shift_prior_sigma", "relative_scale_prior_sigma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"WindowConfig.{name} must be a positive number, got {value!r}")


@dataclass
class WindowKeyframe:
    """A keyframe as the window sees it (input and, after :func:`refine_window`, output)."""

    kf_id: int
    """Keyframe id (unique)."""
    T_W_C: np.ndarray
    """(4, 4) float64 camera-to-world pose."""
    params: np.ndarray
    """(P,) float64 depth-model parameters (see :mod:`fusion.alignment`)."""
    pose_fixed: bool
    """True: the pose is a constant (the gauge, or an anchor outside the window)."""
    params_fixed: bool
    """True: the depth parameters are constants."""
    params_prior_sigmas: np.ndarray | None = None
    """(P,) prior sigmas around the initial parameters, or None for no prior (free parameters only)."""


@dataclass(frozen=True, eq=False)
class Observations:
    """Landmarks observed in keyframe ``observer`` and anchored in other keyframes."""

    observer: int
    """Observer keyframe id."""
    anchor_ids: np.ndarray
    """(M,) int64 anchor keyframe id of each landmark (never ``observer``)."""
    anchor_rays: np.ndarray
    """(M, 3) float64 rays (z = 1) of the landmarks' anchor pixels."""
    anchor_raw: np.ndarray
    """(M,) float64 raw depth values at the anchor pixels (all valid)."""
    observer_uv: np.ndarray
    """(M, 2) float64 undistorted pixel positions in the observer."""
    observer_raw: np.ndarray
    """(M,) float64 raw depth values at the observer pixels (0 = none)."""


@dataclass(frozen=True)
class WindowResult:
    """Outcome of one refinement."""

    initial_error: float
    """Graph error (0.5 * weighted squared residuals) before optimising."""
    final_error: float
    """Graph error after optimising."""
    iterations: int
    """Levenberg-Marquardt iterations run."""
    factors: int
    """Factors in the graph (observer factors + priors)."""
    residuals: int
    """Scalar residuals of all observer factors."""
    time_ms: float
    """Wall time of building and optimising the graph, milliseconds."""
    timings: dict[str, float] = field(default_factory=dict)
    """Extra timings, milliseconds."""


def _x(kf_id: int) -> int:
    import gtsam

    return int(gtsam.symbol("x", kf_id))


def _d(kf_id: int) -> int:
    import gtsam

    return int(gtsam.symbol("d", kf_id))


class _ObserverFactorModel:
    """Residuals and Jacobians of all landmarks one keyframe observes; called by GTSAM via a CustomFactor."""

    def __init__(
        self, kind: DepthKind, intrinsics: Intrinsics, obs: Observations, keyframes: dict[int, WindowKeyframe],
        config: WindowConfig, log_depth_sigma: float, max_depth: float,
    ) -> None:
        self.kind = kind
        self.k = intrinsics
        self.obs = obs
        self.observer = keyframes[obs.observer]
        anchor_ids, self.idx = np.unique(obs.anchor_ids, return_inverse=True)
        self.anchors = [keyframes[int(a)] for a in anchor_ids]
        self.sigma_px = config.reprojection_sigma_px
        self.sigma_d = log_depth_sigma
        self.robust_k = config.robust_k
        self.max_depth = max_depth
        # (key, role, anchor index or -1): the free variables this factor depends on
        self.slots: list[tuple[int, str, int]] = []
        if not self.observer.pose_fixed:
            self.slots.append((_x(self.observer.kf_id), "xk", -1))
        if not self.observer.params_fixed:
            self.slots.append((_d(self.observer.kf_id), "dk", -1))
        for j, kf in enumerate(self.anchors):
            if not kf.pose_fixed:
                self.slots.append((_x(kf.kf_id), "xa", j))
            if not kf.params_fixed:
                self.slots.append((_d(kf.kf_id), "da", j))
        self.keys = [slot[0] for slot in self.slots]
        self.dim = 3 * obs.anchor_raw.shape[0]

    @staticmethod
    def _pose(values: Any, kf: WindowKeyframe) -> np.ndarray:
        return kf.T_W_C if kf.pose_fixed else values.atPose3(_x(kf.kf_id)).matrix()

    @staticmethod
    def _params(values: Any, kf: WindowKeyframe) -> np.ndarray:
        return kf.params if kf.params_fixed else np.asarray(values.atVector(_d(kf.kf_id)), dtype=np.float64)

    def error(self, values: Any, H: Any) -> np.ndarray:
        o, k, idx = self.obs, self.k, self.idx
        m = o.anchor_raw.shape[0]
        T_k = self._pose(values, self.observer)
        th_k = self._params(values, self.observer)
        R_k, t_k = T_k[:3, :3], T_k[:3, 3]
        anchor_T = np.stack([self._pose(values, kf) for kf in self.anchors])
        anchor_th = [self._params(values, kf) for kf in self.anchors]
        z_a = np.empty(m)
        for j, th in enumerate(anchor_th):
            sel = idx == j
            z_a[sel] = depth_from_raw(self.kind, th, o.anchor_raw[sel], self.max_depth)
        p_a = o.anchor_rays * z_a[:, None]
        R_a = anchor_T[idx, :3, :3]  # (M, 3, 3)
        p_w = np.einsum("mij,mj->mi", R_a, p_a) + anchor_T[idx, :3, 3]
        p_k = (p_w - t_k) @ R_k
        z = p_k[:, 2]
        valid = (z_a > 0) & (z > 1e-6)
        zs = np.where(valid, z, 1.0)
        inv_z = 1.0 / zs
        e = np.zeros((m, 3))
        e[:, 0] = (k.fx * p_k[:, 0] * inv_z + k.cx - o.observer_uv[:, 0]) / self.sigma_px
        e[:, 1] = (k.fy * p_k[:, 1] * inv_z + k.cy - o.observer_uv[:, 1]) / self.sigma_px
        z_meas = depth_from_raw(self.kind, th_k, o.observer_raw, self.max_depth)
        has_d = valid & (z_meas > 0)
        e[:, 2] = np.where(has_d, (np.log(zs) - np.log(np.where(has_d, z_meas, 1.0))) / self.sigma_d, 0.0)
        e[~valid] = 0.0

        # Cauchy IRLS weights (per 2-D reprojection block and per depth residual)
        w_uv = np.sqrt(cauchy_weight(np.linalg.norm(e[:, :2], axis=1), self.robust_k))
        w_d = np.sqrt(cauchy_weight(np.abs(e[:, 2]), self.robust_k))
        w = np.stack([w_uv, w_uv, w_d], axis=1) * valid[:, None]
        w[:, 2] *= has_d
        ew = e * w

        if H is not None:
            # d residual / d p_k is sparse per landmark: u row (au, 0, bu), v row (0, av, bv), log-z row (0, 0, c)
            au = w[:, 0] * k.fx * inv_z / self.sigma_px
            bu = -w[:, 0] * k.fx * p_k[:, 0] * inv_z * inv_z / self.sigma_px
            av = w[:, 1] * k.fy * inv_z / self.sigma_px
            bv = -w[:, 1] * k.fy * p_k[:, 1] * inv_z * inv_z / self.sigma_px
            c = w[:, 2] * inv_z / self.sigma_d
            for i, (_, role, j) in enumerate(self.slots):
                if role == "dk":  # only the depth residual depends on the observer's parameters
                    raw_safe = np.where(has_d, o.observer_raw, 1.0)
                    out = np.zeros((3 * m, th_k.shape[0]))
                    out[2 * m :] = -log_depth_jacobian(self.kind, th_k, raw_safe) / self.sigma_d * w[:, 2:3]
                    H[i] = out
                    continue
                if role == "xk":
                    sel = slice(None)
                    dp = np.zeros((m, 3, 6))
                    dp[:, :, :3] = skew(p_k)
                    dp[:, 0, 3] = dp[:, 1, 4] = dp[:, 2, 5] = -1.0
                else:
                    sel = np.flatnonzero(idx == j)
                    R_ka = R_k.T @ anchor_T[j, :3, :3]  # the same for all landmarks of this anchor
                    if role == "xa":  # d p_k / d (omega_a, v_a) = (-R_ka [p_a]x, R_ka) = (-[R_ka p_a]x R_ka, R_ka)
                        dp = np.empty((sel.shape[0], 3, 6))
                        dp[:, :, :3] = -(skew(p_a[sel] @ R_ka.T) @ R_ka)
                        dp[:, :, 3:] = R_ka
                    else:  # "da"
                        raw_a = np.where(valid[sel], o.anchor_raw[sel], 1.0)
                        dz = log_depth_jacobian(self.kind, anchor_th[j], raw_a) * z_a[sel][:, None]
                        dp = (o.anchor_rays[sel] @ R_ka.T)[:, :, None] * dz[:, None, :]
                out = np.zeros((3 * m, dp.shape[2]))
                rows = np.arange(m)[sel]
                out[2 * rows] = au[sel, None] * dp[:, 0] + bu[sel, None] * dp[:, 2]
                out[2 * rows + 1] = av[sel, None] * dp[:, 1] + bv[sel, None] * dp[:, 2]
                out[2 * m + rows] = c[sel, None] * dp[:, 2]
                H[i] = out
        return np.concatenate([ew[:, :2].reshape(-1), ew[:, 2]])


def refine_window(
    kind: DepthKind, intrinsics: Intrinsics, keyframes: dict[int, WindowKeyframe], observations: list[Observations],
    config: WindowConfig, log_depth_sigma: float, max_depth: float,
) -> WindowResult:
    """Jointly refine the free poses and depth parameters of ``keyframes``; updates them in place.

    ``keyframes`` must hold every anchor and observer named by ``observations``. Returns statistics; the refined
    values are written back into the :class:`WindowKeyframe` objects.
    """
    import gtsam

    t0 = time.perf_counter()
    graph = gtsam.NonlinearFactorGraph()
    values = gtsam.Values()
    for kf in keyframes.values():
        if not kf.pose_fixed:
            values.insert(_x(kf.kf_id), gtsam.Pose3(orthonormalize(kf.T_W_C)))
        if not kf.params_fixed:
            values.insert(_d(kf.kf_id), np.asarray(kf.params, dtype=np.float64))
            if kf.params_prior_sigmas is not None:
                noise = gtsam.noiseModel.Diagonal.Sigmas(np.asarray(kf.params_prior_sigmas, dtype=np.float64))
                graph.add(gtsam.PriorFactorVector(_d(kf.kf_id), np.asarray(kf.params, dtype=np.float64), noise))
    models = []
    n_res = 0
    for obs in observations:
        if obs.anchor_raw.shape[0] == 0:
            continue
        if np.any(obs.anchor_ids == obs.observer):
            raise ValueError(f"keyframe {obs.observer} cannot observe landmarks anchored in itself")
        model = _ObserverFactorModel(kind, intrinsics, obs, keyframes, config, log_depth_sigma, max_depth)
        if not model.keys:
            continue
        models.append(model)  # keep the Python objects alive as long as the graph
        n_res += model.dim
        graph.add(gtsam.CustomFactor(
            gtsam.noiseModel.Unit.Create(model.dim), model.keys,
            lambda _this, v, H, m=model: m.error(v, H),
        ))
    if not models:
        return WindowResult(0.0, 0.0, 0, int(graph.size()), 0, (time.perf_counter() - t0) * 1e3)
    t1 = time.perf_counter()
    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(config.max_iterations)
    params.setRelativeErrorTol(1e-5)
    params.setAbsoluteErrorTol(1e-8)
    optimizer = gtsam.LevenbergMarquardtOptimizer(graph, values, params)
    initial_error = float(graph.error(values))
    result = optimizer.optimize()
    final_error = float(graph.error(result))
    for kf in keyframes.values():
        if not kf.pose_fixed:
            kf.T_W_C = orthonormalize(result.atPose3(_x(kf.kf_id)).matrix())
        if not kf.params_fixed:
            kf.params = np.asarray(result.atVector(_d(kf.kf_id)), dtype=np.float64).copy()
    t2 = time.perf_counter()
    return WindowResult(
        initial_error, final_error, int(optimizer.iterations()), int(graph.size()), n_res, (t2 - t0) * 1e3,
        {"build": (t1 - t0) * 1e3, "optimise": (t2 - t1) * 1e3},
    )
