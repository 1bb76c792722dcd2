"""Render depth, normals and colour images of the TSDF map from a camera pose (for tracking and views).

Algorithm: :mod:`fusion.raycast_kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from fusion import raycast_kernels as rk
from fusion.validation import check_intrinsics, check_pose, check_positive
from fusion.volume import TsdfVolume
from stream.messages import Intrinsics


@dataclass(frozen=True)
class RaycastConfig:
    """Parameters of raycasting."""

    min_depth_m: float = 0.1
    """Rays start no nearer than this camera depth (metres, > 0)."""
    max_depth_m: float = 5.0
    """Rays stop at this camera depth (metres, > min_depth_m)."""
    min_weight: float = 1.0
    """Voxels with a smaller weight count as unobserved (> 0)."""
    tile_px: int = 8
    """Side of the pixel tiles of the block range map (1..64)."""
    newton_tolerance_vox: float = 0.25
    """Depth refinement: after a Newton step longer than this (voxels) the TSDF is sampled again and the
    step repeated (up to 3 times). Smaller is more accurate near curved surfaces and silhouettes, larger
    is faster (>= 1: a single Newton step; about 3 % faster on 7-Scenes at 2 cm, as most refinements start
    on the previous pixel's tangent plane and need one step anyway)."""

    def __post_init__(self) -> None:
        check_positive(self.min_depth_m, "RaycastConfig.min_depth_m")
        check_positive(self.max_depth_m, "RaycastConfig.max_depth_m")
        check_positive(self.min_weight, "RaycastConfig.min_weight")
        if self.max_depth_m <= self.min_depth_m:
            raise ValueError(
                f"RaycastConfig.max_depth_m ({self.max_depth_m}) must exceed min_depth_m ({self.min_depth_m})"
            )
        check_positive(self.newton_tolerance_vox, "RaycastConfig.newton_tolerance_vox")
        if not isinstance(self.tile_px, int) or isinstance(self.tile_px, bool) or not 1 <= self.tile_px <= 64:
            raise ValueError(f"RaycastConfig.tile_px must be an int in 1..64, got {self.tile_px!r}")


@dataclass(frozen=True)
class RaycastResult:
    """Images rendered from the map; pixels whose ray hits no surface have depth 0."""

    depth_m: np.ndarray
    """(H, W) float32 camera depth (z) of the first front-facing surface, 0 = none."""
    normals_C: np.ndarray  # noqa: N815 - frame suffix
    """(H, W, 3) float32 unit surface normals in the camera frame (towards free space), 0 where no surface."""
    color: np.ndarray
    """(H, W, 3) uint8 RGB of the surface, 0 where no surface."""

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: pixels with a surface."""
        return self.depth_m > 0


def raycast(
    volume: TsdfVolume, T_W_C: np.ndarray, intrinsics: Intrinsics, config: RaycastConfig | None = None
) -> RaycastResult:
    """Render ``volume`` from camera pose ``T_W_C`` (4, 4) float64 with pinhole ``intrinsics`` (output size)."""
    if not isinstance(volume, TsdfVolume):
        raise TypeError(f"volume must be a TsdfVolume, got {type(volume).__name__}")
    cfg = config if config is not None else RaycastConfig()
    intrinsics = check_intrinsics(intrinsics)
    T = check_pose(T_W_C, "T_W_C", max_abs_translation_m=volume.config.max_abs_coordinate_m - cfg.max_depth_m * 2)
    R_WC = np.ascontiguousarray(T[:3, :3])
    t_WC = np.ascontiguousarray(T[:3, 3])
    R_CW = np.ascontiguousarray(R_WC.T)
    t_CW = -R_CW @ t_WC
    h, w = intrinsics.height_px, intrinsics.width_px
    k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    near, far, table, table_origin = rk.block_range_map(
        volume.packed_keys, volume.block_count, R_CW, t_CW, *k, w, h, cfg.tile_px, volume.config.block_shift,
        volume.voxel_size_m, cfg.min_depth_m, cfg.max_depth_m, volume.tsdf, volume.weight, float(cfg.min_weight),
        max(1, min(volume.block_count, 4 * numba.get_num_threads())),
    )
    depth = np.empty((h, w), np.float32)
    normals = np.empty((h, w, 3), np.float32)
    color = np.empty((h, w, 3), np.uint8)
    rk.march(
        near, far, cfg.tile_px, volume.tsdf, volume.weight, volume.color, volume.hash_keys, volume.hash_ids,
        volume.config.block_shift, volume.voxel_size_m, R_WC, t_WC, *k, cfg.min_depth_m, cfg.max_depth_m,
        float(cfg.min_weight), float(cfg.newton_tolerance_vox), depth, normals, color, numba.get_num_threads(), table,
        table_origin, cfg.min_weight <= 1.0,  # weights are 0 or >= 1, so below 1 the TSDF tells observed voxels
    )
    return RaycastResult(depth_m=depth, normals_C=normals, color=color)
