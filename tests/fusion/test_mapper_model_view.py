"""The mapper's model view: the map raycast from the frame's pose, at a reduced size, every n-th frame.

Stated tolerances (v = 2 cm voxel; synthetic room of tests/fusion/tsdf_scene.py, 320x240 frames fused with
exact depth and poses, the view rendered at half size from the last fused pose): on pixels away from depth
discontinuities, at least 98 % have a surface and their depth error against the exactly rendered truth has a
median <= 0.1 v and a 99th percentile <= 1 v; normals within 5 degrees (median) of the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter
from tsdf_scene import Scene, intrinsics, orbit_poses

from fusion.integrator import IntegratorConfig
from fusion.mapper import GroundTruthPoses, Mapper, MapperConfig
from fusion.raycast import RaycastConfig
from fusion.volume import VolumeConfig
from stream.messages import DepthFrame, DepthKind, Intrinsics

VOXEL = 0.02


def _frame(scene: Scene, i: int, T: np.ndarray, k: Intrinsics) -> DepthFrame:
    r = scene.render(T, k)
    return DepthFrame(i, i * 33_000_000, r.depth_m, DepthKind.METRIC, k, image=r.color, T_W_C_gt=T)


def test_model_view_every_n_frames_matches_the_scene() -> None:
    scene = Scene()
    k = intrinsics(320, 240)
    config = MapperConfig(
        volume=VolumeConfig(voxel_size_m=VOXEL),
        integrator=IntegratorConfig(max_depth_m=5.0),
        render_every_n=3,
        render_scale=0.5,
        raycast=RaycastConfig(max_depth_m=5.0),
    )
    mapper = Mapper(config, GroundTruthPoses())
    poses = orbit_poses(12)
    views = []
    for i, T in enumerate(poses):
        step = mapper.process(_frame(scene, i, T, k))
        assert step.integrated
        if (i + 1) % 3 == 0:
            assert step.model_view is not None and "render" in step.timings_ms
            views.append((T, step.model_view))
        else:
            assert step.model_view is None and "render" not in step.timings_ms
    assert len(views) == 4
    T, view = views[-1]
    assert np.array_equal(view.T_W_C, T)
    assert (view.intrinsics.width_px, view.intrinsics.height_px) == (160, 120)
    assert view.images.depth_m.shape == (120, 160)
    truth = scene.render(T, view.intrinsics)
    edge = (maximum_filter(truth.depth_m, 5) - minimum_filter(truth.depth_m, 5)) > 0.1
    ok = (truth.depth_m > 0) & ~edge
    assert ok.sum() > 10_000
    assert view.images.valid[ok].mean() >= 0.98
    both = ok & view.images.valid
    err = np.abs(view.images.depth_m - truth.depth_m)[both] / VOXEL
    assert np.median(err) <= 0.1
    assert np.percentile(err, 99) <= 1.0
    n_c = truth.normals_W @ T[:3, :3]
    cos = np.clip(np.sum(view.images.normals_C * n_c, axis=2)[both], -1.0, 1.0)
    assert np.median(np.degrees(np.arccos(cos))) <= 5.0


def test_model_view_off_by_default_and_config_checked() -> None:
    assert MapperConfig().render_every_n == 0
    with pytest.raises(ValueError, match="render_every_n"):
        MapperConfig(render_every_n=-1)
    with pytest.raises(ValueError, match="render_scale"):
        MapperConfig(render_scale=0.0)
    with pytest.raises(ValueError, match="render_scale"):
        MapperConfig(render_scale=1.5)
