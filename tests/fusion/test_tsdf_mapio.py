"""Map files (versioned save/load round trip, corrupt/foreign/newer files) and PLY export read back by Open3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tsdf_scene import Scene, intrinsics, orbit_poses

from fusion.integrator import Integrator
from fusion.mapio import (
    MAP_FORMAT_VERSION,
    MapFileError,
    export_mesh_ply,
    export_point_cloud_ply,
    load_map,
    save_map,
    write_ply,
)
from fusion.meshing import extract_mesh
from fusion.raycast import raycast
from fusion.volume import UNOBSERVED_TSDF, TsdfVolume, VolumeConfig

K = intrinsics(160, 120)


@pytest.fixture(scope="module")
def volume() -> TsdfVolume:
    scene = Scene()
    vol = TsdfVolume(VolumeConfig(voxel_size_m=0.04, block_size_vox=8, max_blocks=50_000))
    for T in orbit_poses(6):
        r = scene.render(T, K)
        Integrator().integrate(r.depth_m, r.color, T, K, vol)
    return vol


def _open3d():
    try:
        import open3d as o3d
    except (ImportError, OSError) as exc:  # e.g. libusb-1.0 missing on the machine
        pytest.skip(f"open3d cannot be imported here: {exc}")
    return o3d


@pytest.mark.parametrize("compress", [False, True])
def test_save_load_round_trip_is_exact(tmp_path: Path, volume: TsdfVolume, compress: bool) -> None:
    path = save_map(tmp_path / "session", volume, compress=compress)
    assert path.name == "session.npz" and path.is_file()
    back = load_map(path)
    n = volume.block_count
    assert back.config == volume.config
    assert back.block_count == n
    assert np.array_equal(back.block_keys(), volume.block_keys())
    assert np.array_equal(back.tsdf[:n], volume.tsdf[:n])
    assert np.array_equal(back.weight[:n], volume.weight[:n])
    assert np.array_equal(back.color[:n], volume.color[:n])
    assert np.array_equal(back.lookup(volume.block_keys()), np.arange(n))
    # the resumed map behaves like the original
    T = orbit_poses(12)[1]
    assert np.array_equal(raycast(back, T, K).depth_m, raycast(volume, T, K).depth_m)
    assert np.array_equal(extract_mesh(back).faces, extract_mesh(volume).faces)
    # integration continues on the loaded map
    r = Scene().render(T, K)
    res = Integrator().integrate(r.depth_m, r.color, T, K, back)
    assert len(res.touched_ids) > 0


def test_load_with_smaller_budget_is_refused_clearly(tmp_path: Path, volume: TsdfVolume) -> None:
    path = save_map(tmp_path / "m.npz", volume)
    with pytest.raises(MapFileError, match="memory budget"):
        load_map(path, max_blocks=10)
    assert load_map(path, max_blocks=volume.block_count).is_full


def test_bad_map_files_raise_map_file_error(tmp_path: Path, volume: TsdfVolume) -> None:
    with pytest.raises(MapFileError, match="no such map file"):
        load_map(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(MapFileError, match="cannot read"):
        load_map(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(MapFileError, match="missing entry 'format'"):
        load_map(foreign)
    path = save_map(tmp_path / "m.npz", volume)
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files}
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**entries, "version": np.array(MAP_FORMAT_VERSION + 1)})
    with pytest.raises(MapFileError, match="version 2 is not supported"):
        load_map(newer)
    other = tmp_path / "other.npz"
    np.savez(other, **{**entries, "format": np.array("someone.else")})
    with pytest.raises(MapFileError, match="not a depthslam map"):
        load_map(other)
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{**entries, "tsdf": entries["tsdf"][:, :10]})
    with pytest.raises(MapFileError, match="tsdf must be"):
        load_map(broken)
    nan = tmp_path / "nan.npz"
    t = entries["tsdf"].copy()
    t[0, 0] = np.nan
    np.savez(nan, **{**entries, "tsdf": t})
    with pytest.raises(MapFileError, match="non-finite"):
        load_map(nan)
    bad_cfg = tmp_path / "cfg.npz"
    np.savez(bad_cfg, **{**entries, "block_size_vox": np.array(7)})
    with pytest.raises(MapFileError, match="block_size_vox"):
        load_map(bad_cfg)
    fractional = tmp_path / "fractional.npz"
    w = entries["weight"].copy()
    w[0, 0] = 0.5
    np.savez(fractional, **{**entries, "weight": w})
    with pytest.raises(MapFileError, match="weights must be 0"):
        load_map(fractional)
    # a file from before the unobserved marker (tsdf 0 where the weight is 0) loads with the marker
    unseen = entries["weight"] == 0
    assert unseen.any()
    older = tmp_path / "older.npz"
    np.savez(older, **{**entries, "tsdf": np.where(unseen, np.float32(0), entries["tsdf"])})
    loaded = load_map(older)
    n = loaded.block_count
    assert np.all(loaded.tsdf[:n][unseen] == UNOBSERVED_TSDF)
    assert np.array_equal(loaded.tsdf[:n][~unseen], entries["tsdf"][~unseen])


def test_mesh_ply_is_read_by_open3d_with_the_same_counts(tmp_path: Path, volume: TsdfVolume) -> None:
    o3d = _open3d()
    mesh = export_mesh_ply(tmp_path / "mesh.ply", volume)
    back = o3d.io.read_triangle_mesh(str(tmp_path / "mesh.ply"))
    assert len(back.vertices) == len(mesh.vertices) > 1000
    assert len(back.triangles) == len(mesh.faces)
    assert np.allclose(np.asarray(back.vertices), mesh.vertices, atol=1e-6)
    assert np.array_equal(np.asarray(back.triangles), mesh.faces)
    assert np.allclose(np.asarray(back.vertex_colors) * 255, mesh.colors, atol=0.5)
    assert back.has_vertex_normals()


def test_point_cloud_ply_is_read_by_open3d(tmp_path: Path, volume: TsdfVolume) -> None:
    o3d = _open3d()
    n = export_point_cloud_ply(tmp_path / "cloud.ply", volume)
    cloud = o3d.io.read_point_cloud(str(tmp_path / "cloud.ply"))
    assert len(cloud.points) == n == len(extract_mesh(volume).vertices)
    assert cloud.has_colors() and cloud.has_normals()
    assert np.allclose(np.linalg.norm(np.asarray(cloud.normals), axis=1), 1.0, atol=1e-3)


def test_write_ply_rejects_bad_arrays(tmp_path: Path) -> None:
    v = np.zeros((3, 3), np.float32)
    c = np.zeros((3, 3), np.uint8)
    with pytest.raises(ValueError, match="colors must be"):
        write_ply(tmp_path / "x.ply", v, c[:2])
    with pytest.raises(ValueError, match="faces index"):
        write_ply(tmp_path / "x.ply", v, c, np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="vertices must be"):
        write_ply(tmp_path / "x.ply", v[:, :2], c)
