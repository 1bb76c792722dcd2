"""Integration kernels against the numpy reference; invalid depth; bad input; the memory budget policy."""

from __future__ import annotations

import numpy as np
import pytest
import tsdf_reference as ref
from tsdf_scene import Scene, intrinsics, orbit_poses

from fusion import integrate_kernels as ik
from fusion.integrator import (
    IntegrationResult,
    Integrator,
    IntegratorConfig,
    band_layer_count,
    max_ray_norm,
)
from fusion.volume import UNOBSERVED_TSDF, TsdfVolume, VolumeConfig, unpack_keys
from stream.messages import Intrinsics

VOXEL = 0.03
K_SMALL = intrinsics(160, 120)


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    scene = Scene()
    out = []
    for T in orbit_poses(6)[:3]:
        r = scene.render(T, K_SMALL)
        out.append((r.depth_m, r.color, T))
    return out


def _noisy(depth: np.ndarray, seed: int) -> np.ndarray:
    """Depth with invalid pixels of every kind sprinkled in (they must be ignored)."""
    rng = np.random.default_rng(seed)
    d = depth.copy()
    idx = rng.choice(d.size, size=d.size // 20, replace=False)
    bad = np.array([0.0, np.nan, np.inf, -np.inf, -1.0, 50.0, 0.01], np.float32)
    d.flat[idx] = bad[rng.integers(0, len(bad), size=idx.size)]
    return d


def test_band_block_keys_match_reference(frames) -> None:
    cfg = IntegratorConfig(truncation_vox=4.0, band_stride_px=1)
    block_m = VOXEL * 8
    trunc = cfg.truncation_vox * VOXEL
    for i, (depth, _rgb, T) in enumerate(frames):
        d = _noisy(depth, i)
        n_half = band_layer_count(trunc, block_m, max_ray_norm(K_SMALL))
        args = (d, K_SMALL.fx, K_SMALL.fy, K_SMALL.cx, K_SMALL.cy, T[:3, :3].copy(), T[:3, 3].copy(), trunc, n_half,
                cfg.min_depth_m, cfg.max_depth_m, block_m, 1)
        got = ik.band_block_keys(*args, 2)
        # the row interleaving over threads never changes the keys or their order
        for n_threads in (1, 3, 7):
            assert np.array_equal(ik.band_block_keys(*args, n_threads), got)
        got_set = {tuple(k) for k in unpack_keys(np.unique(got)).tolist()}
        want = {tuple(k) for k in ref.band_keys(d, K_SMALL, T, trunc, n_half, cfg.min_depth_m, cfg.max_depth_m,
                                                block_m, 1).tolist()}
        # float32 depth * float64 ray in both; a key can only differ for a sample exactly on a block face
        assert len(got_set ^ want) <= max(1, len(want) // 500), (len(got_set ^ want), len(want))


@pytest.mark.parametrize("with_color", [True, False])
def test_integration_matches_numpy_reference(frames, with_color: bool) -> None:
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    cfg = IntegratorConfig(truncation_vox=4.0, max_weight=2.5, max_depth_m=4.0)
    integ = Integrator(cfg)
    trunc = cfg.truncation_vox * VOXEL
    checked = 0
    for i, (depth, rgb, T) in enumerate(frames * 2):  # 6 updates: weights reach the cap of 2.5
        d = _noisy(depth, 100 + i)
        before = (vol.tsdf.copy(), vol.weight.copy(), vol.color.copy(), vol.block_count)
        res = integ.integrate(d, rgb if with_color else None, T, K_SMALL, vol)
        assert isinstance(res, IntegrationResult)
        assert len(np.unique(res.touched_ids)) == len(res.touched_ids) > 0
        assert np.array_equal(res.touched_keys, vol.block_keys()[res.touched_ids])
        ids = res.touched_ids
        n_old = before[3]
        old_t = np.full((len(ids), 512), UNOBSERVED_TSDF, np.float32)  # what a new block holds
        old_w = np.zeros((len(ids), 512), np.float32)
        old_c = np.zeros((len(ids), 512, 3), np.uint8)
        was = ids < n_old
        old_t[was], old_w[was], old_c[was] = before[0][ids[was]], before[1][ids[was]], before[2][ids[was]]
        want = ref.integrate(res.touched_keys, old_t, old_w, old_c, d, rgb if with_color else None, K_SMALL, T,
                             VOXEL, 8, trunc, cfg.min_depth_m, cfg.max_depth_m, cfg.max_weight)
        got_t, got_w, got_c = vol.tsdf[ids], vol.weight[ids], vol.color[ids]
        bad = (np.abs(got_t - want.tsdf) > 1e-5) | (got_w != want.weight)
        bad |= np.abs(got_c.astype(int) - want.color.astype(int)).max(axis=2) > 1
        assert not np.any(bad & ~want.tie), f"frame {i}: {np.sum(bad & ~want.tie)} voxels differ from the reference"
        assert want.tie.mean() < 0.02
        assert np.sum(bad) <= np.sum(want.tie)
        # blocks not touched this frame are unchanged
        untouched = np.setdiff1d(np.arange(n_old), ids)
        assert np.array_equal(vol.tsdf[untouched], before[0][untouched])
        assert np.array_equal(vol.weight[untouched], before[1][untouched])
        checked += int(np.sum(got_w > 0))
    assert vol.weight[: vol.block_count].max() == pytest.approx(2.5)
    assert checked > 50_000
    if not with_color:
        assert not np.any(vol.color)


def test_invalid_depth_values_are_ignored(frames) -> None:
    depth, rgb, T = frames[0]
    noisy = _noisy(depth, 7)
    clean = depth.copy()
    invalid = ~((noisy >= 0.1) & (noisy <= 3.0))
    clean[invalid] = 0.0
    vols = []
    for d in (noisy, clean):
        vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
        Integrator().integrate(d, rgb, T, K_SMALL, vol)
        vols.append(vol)
    a, b = vols
    assert a.block_count == b.block_count > 0
    assert np.array_equal(a.block_keys(), b.block_keys())
    assert np.array_equal(a.tsdf, b.tsdf) and np.array_equal(a.weight, b.weight)
    assert np.all(np.isfinite(a.tsdf))


def test_all_invalid_frame_changes_nothing(frames) -> None:
    _depth, rgb, T = frames[0]
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    res = Integrator().integrate(np.full((120, 160), np.nan, np.float32), rgb, T, K_SMALL, vol)
    assert vol.block_count == 0 and res.touched_ids.size == 0 and res.touched_keys.shape == (0, 3)


def test_depth_range_limits_integration(frames) -> None:
    depth, rgb, T = frames[0]
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    Integrator(IntegratorConfig(max_depth_m=1.5)).integrate(depth, rgb, T, K_SMALL, vol)
    keys = vol.block_keys()
    centres = (keys + 0.5) * VOXEL * 8
    cam_z = (centres - T[:3, 3]) @ T[:3, 2]
    # blocks are allocated only around depths <= 1.5 m (+ truncation + half a block diagonal)
    assert cam_z.max() < 1.5 + 4 * VOXEL + np.sqrt(3) * 4 * VOXEL


def test_memory_budget_refuses_blocks_and_keeps_existing_ones(frames) -> None:
    (d0, c0, T0), (d1, c1, T1) = frames[0], frames[1]
    full = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    n0 = len(Integrator().integrate(d0, c0, T0, K_SMALL, full).touched_ids)
    budget = n0 + 10
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL, max_blocks=budget))
    integ = Integrator()
    integ.integrate(d0, c0, T0, K_SMALL, vol)
    snap_t, snap_w = vol.tsdf[:n0].copy(), vol.weight[:n0].copy()
    res = integ.integrate(d1, c1, T1, K_SMALL, vol)
    assert vol.block_count == budget and vol.is_full
    assert res.new_block_count == 10 and res.refused_block_count > 0
    # what frame 1 did to the first frame's blocks equals the reference update of those blocks
    both = res.touched_ids[res.touched_ids < n0]
    want = ref.integrate(vol.block_keys()[both], snap_t[both], snap_w[both], np.zeros((len(both), 512, 3), np.uint8),
                         d1, None, K_SMALL, T1, VOXEL, 8, 4 * VOXEL, 0.1, 3.0, 128.0)
    ok = ~want.tie
    assert np.allclose(vol.tsdf[both][ok], want.tsdf[ok], atol=1e-5)
    assert np.array_equal(vol.weight[both][ok], want.weight[ok])
    others = np.setdiff1d(np.arange(n0), both)
    assert np.array_equal(vol.tsdf[others], snap_t[others])
    # more frames never exceed the budget
    res2 = integ.integrate(frames[2][0], frames[2][1], frames[2][2], K_SMALL, vol)
    assert vol.block_count == budget and res2.new_block_count == 0


# ------------------------------------------------------------------ bad input
def _good(frames):
    depth, rgb, T = frames[0]
    return depth, rgb, T, K_SMALL, TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (lambda a: {**a, "depth": a["depth"].astype(np.float64)}, TypeError, "float32 metres"),
        (lambda a: {**a, "depth": (a["depth"] * 1000).astype(np.uint16)}, TypeError, "float32 metres"),
        (lambda a: {**a, "depth": a["depth"][:, :100]}, ValueError, "does not match the intrinsics"),
        (lambda a: {**a, "depth": a["depth"][None]}, ValueError, "2-D"),
        (lambda a: {**a, "depth": a["depth"].tolist()}, TypeError, "numpy array"),
        (lambda a: {**a, "color": a["color"][:, :, :2]}, ValueError, "color must have shape"),
        (lambda a: {**a, "color": a["color"].astype(np.float32)}, TypeError, "uint8"),
        (lambda a: {**a, "T": a["T"][:3]}, ValueError, r"shape \(4, 4\)"),
        (lambda a: {**a, "T": np.where(np.eye(4, dtype=bool), np.nan, a["T"])}, ValueError, "non-finite"),
        (lambda a: {**a, "T": a["T"] * np.array([2.0, 1, 1, 1])}, ValueError, "not a rigid transform"),
        (lambda a: {**a, "T": a["T"] @ np.diag([1.0, 1.0, -1.0, 1.0])}, ValueError, "not a rigid transform"),
        (lambda a: {**a, "T": np.vstack([a["T"][:3], [0, 0, 1, 1]])}, ValueError, "last row"),
        (lambda a: {**a, "T": a["T"].astype(np.int64)}, TypeError, "float"),
        (lambda a: {**a, "T": a["T"] + np.pad(np.array([[0, 0, 0, 1e9]]), ((0, 3), (0, 0)))}, ValueError, "range"),
        (lambda a: {**a, "K": Intrinsics(160, 120, 100.0, 100.0, 80.0, 60.0, (0.1, 0.0, 0.0, 0.0))}, ValueError,
         "distortion"),
        (lambda a: {**a, "K": (100.0, 100.0, 80.0, 60.0)}, TypeError, "Intrinsics"),
        (lambda a: {**a, "vol": "volume"}, TypeError, "TsdfVolume"),
    ],
)
def test_bad_input_raises_clear_errors_and_leaves_volume_untouched(frames, change, exc, match) -> None:
    depth, rgb, T, K, vol = _good(frames)
    args = change({"depth": depth, "color": rgb, "T": T, "K": K, "vol": vol})
    with pytest.raises(exc, match=match):
        Integrator().integrate(args["depth"], args["color"], args["T"], args["K"], args["vol"])
    assert vol.block_count == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"truncation_vox": 0.0}, "truncation_vox"),
        ({"min_depth_m": -1.0}, "min_depth_m"),
        ({"max_depth_m": float("inf")}, "max_depth_m"),
        ({"min_depth_m": 2.0, "max_depth_m": 1.0}, "must exceed"),
        ({"max_weight": 0.5}, "max_weight"),
        ({"band_stride_px": 0}, "band_stride_px"),
        ({"band_stride_px": 1.5}, "band_stride_px"),
    ],
)
def test_integrator_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IntegratorConfig(**kwargs)
