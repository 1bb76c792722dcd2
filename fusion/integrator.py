"""Projective TSDF integration of depth (+ colour) frames into a :class:`~fusion.volume.TsdfVolume`.

The integrator holds parameters only; the volume is passed in (the nvblox split)::

    volume = TsdfVolume(VolumeConfig(voxel_size_m=0.02))
    integrator = Integrator(IntegratorConfig(truncation_vox=4.0, max_depth_m=3.0))
    result = integrator.integrate(depth_m, rgb, T_W_C, intrinsics, volume)
    meshes = mesh_blocks(volume, blocks_affected_by(volume, result.touched_keys))

Inputs are validated here, before any kernel runs (see :mod:`fusion.validation`); the algorithm and the
exact update rule are documented in :mod:`fusion.integrate_kernels`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from fusion import integrate_kernels as ik
from fusion.validation import check_color, check_depth, check_intrinsics, check_pose, check_positive
from fusion.volume import TsdfVolume, unpack_keys
from stream.messages import Intrinsics


@dataclass(frozen=True)
class IntegratorConfig:
    """Parameters of projective TSDF integration."""

    truncation_vox: float = 4.0
    """Truncation distance in voxels (> 0): signed distances are clamped to +-truncation_vox * voxel size,
    and voxels further than that behind the observed surface are not updated."""
    min_depth_m: float = 0.1
    """Depth below this (metres, > 0) is invalid."""
    max_depth_m: float = 3.0
    """Maximum integration distance: depth above this (metres) is invalid."""
    max_weight: float = 128.0
    """Weight cap (>= 1): a voxel's weight never exceeds it, so the map keeps adapting."""
    band_stride_px: int = 2
    """Pixel stride (>= 1, in x and y) of the block-allocation pass. Blocks are found from every
    ``band_stride_px``-th pixel of every ``band_stride_px``-th row; voxel updates always use every pixel.
    A block is missed only when the band crosses it in a sliver narrower than the gap between sampled
    pixels (2 px = 1 cm at 3 m for 585 px focal length; Open3D's VoxelBlockGrid uses 4)."""

    def __post_init__(self) -> None:
        check_positive(self.truncation_vox, "IntegratorConfig.truncation_vox")
        check_positive(self.min_depth_m, "IntegratorConfig.min_depth_m")
        check_positive(self.max_depth_m, "IntegratorConfig.max_depth_m")
        check_positive(self.max_weight, "IntegratorConfig.max_weight")
        if self.max_depth_m <= self.min_depth_m:
            raise ValueError(
                f"IntegratorConfig.max_depth_m ({self.max_depth_m}) must exceed min_depth_m ({self.min_depth_m})"
            )
        if not isinstance(self.band_stride_px, int) or isinstance(self.band_stride_px, bool) or not (
            1 <= self.band_stride_px <= 16
        ):
            raise ValueError(f"IntegratorConfig.band_stride_px must be an int in 1..16, got {self.band_stride_px!r}")
        if self.max_weight < 1.0:
            raise ValueError(f"IntegratorConfig.max_weight must be >= 1, got {self.max_weight}")


@dataclass(frozen=True)
class IntegrationResult:
    """What one :meth:`Integrator.integrate` call changed."""

    touched_ids: np.ndarray
    """(M,) int32 distinct ids of the blocks that were updated (drive incremental meshing with these)."""
    touched_keys: np.ndarray
    """(M, 3) int32 block keys of ``touched_ids``, row for row."""
    new_block_count: int
    """Blocks allocated by this frame."""
    refused_block_count: int
    """Distinct blocks this frame needed but could not allocate because the memory budget is full
    (their voxels were not updated; every existing block was)."""


@functools.lru_cache(maxsize=16)
def max_ray_norm(intrinsics: Intrinsics) -> float:
    """Largest ``|((u - cx) / fx, (v - cy) / fy, 1)|`` over the image corners."""
    w, h = intrinsics.width_px, intrinsics.height_px
    xs = [(u - intrinsics.cx) / intrinsics.fx for u in (0.0, w - 1.0)]
    ys = [(v - intrinsics.cy) / intrinsics.fy for v in (0.0, h - 1.0)]
    return max(math.sqrt(x * x + y * y + 1.0) for x in xs for y in ys)


def band_layer_count(trunc_m: float, block_size_m: float, ray_norm: float) -> int:
    """Half the number of depth layers sampled per pixel so that layers are < one block apart along rays."""
    return math.floor(trunc_m * ray_norm / block_size_m) + 1


class Integrator:
    """Projective TSDF integrator (parameters only; the volume is an argument)."""

    def __init__(self, config: IntegratorConfig | None = None) -> None:
        self.config = config if config is not None else IntegratorConfig()

    def truncation_m(self, volume: TsdfVolume) -> float:
        """Truncation distance in metres for ``volume``'s voxel size."""
        return self.config.truncation_vox * volume.voxel_size_m

    def integrate(
        self,
        depth_m: np.ndarray,
        color: np.ndarray | None,
        T_W_C: np.ndarray,
        intrinsics: Intrinsics,
        volume: TsdfVolume,
    ) -> IntegrationResult:
        """Fuse one frame into ``volume``.

        depth_m: (H, W) float32 metres; 0, negative, NaN, inf and values outside
        ``[min_depth_m, max_depth_m]`` are invalid pixels. color: (H, W, 3) uint8 RGB registered to the
        depth image, or ``None`` (voxel colours then stay as they are). T_W_C: (4, 4) float64
        camera-to-world. intrinsics: pinhole, undistorted, of size W x H.

        Raises TypeError/ValueError for malformed input, before touching the volume.
        """
        if not isinstance(volume, TsdfVolume):
            raise TypeError(f"volume must be a TsdfVolume, got {type(volume).__name__}")
        intrinsics = check_intrinsics(intrinsics)
        depth = check_depth(depth_m, intrinsics)
        rgb = check_color(color, depth.shape)
        cfg = self.config
        trunc_m = self.truncation_m(volume)
        ray_norm = max_ray_norm(intrinsics)
        reach_m = (cfg.max_depth_m + trunc_m) * ray_norm + volume.config.block_size_m
        T = check_pose(T_W_C, "T_W_C", max_abs_translation_m=volume.config.max_abs_coordinate_m - reach_m)

        R_WC = np.ascontiguousarray(T[:3, :3])
        t_WC = np.ascontiguousarray(T[:3, 3])
        candidates = ik.band_block_keys(
            depth, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, R_WC, t_WC, trunc_m,
            band_layer_count(trunc_m, volume.config.block_size_m, ray_norm),
            cfg.min_depth_m, cfg.max_depth_m, volume.config.block_size_m, cfg.band_stride_px, numba.get_num_threads(),
        )
        alloc = volume.allocate_packed(candidates)
        has_color = rgb is not None
        ik.integrate_blocks(
            alloc.ids, volume.packed_keys, volume.tsdf, volume.weight, volume.color, depth,
            rgb if has_color else np.zeros((1, 1, 3), np.uint8), has_color,
            intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, R_WC, t_WC,
            volume.voxel_size_m, volume.block_size_vox, trunc_m, cfg.min_depth_m, cfg.max_depth_m,
            cfg.max_weight,
        )
        return IntegrationResult(
            touched_ids=alloc.ids,
            touched_keys=unpack_keys(volume.packed_keys[alloc.ids]),
            new_block_count=alloc.new_block_count,
            refused_block_count=alloc.refused_block_count,
        )
