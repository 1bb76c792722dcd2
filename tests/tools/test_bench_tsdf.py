"""``depthslam bench tsdf`` runs end to end on a couple of frames and reports what it promises (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from tools import bench_tsdf


def _open3d_importable() -> bool:
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def test_bench_json_has_the_promised_fields(capsys: pytest.CaptureFixture[str]) -> None:
    if not _open3d_importable():
        pytest.skip("open3d cannot be imported here (libusb-1.0-0 missing?)")
    assert bench_tsdf.main(["--frames", "2", "--json", "--voxel-size-m", "0.04"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 2 and out["width"] == 640 and out["height"] == 480
    assert out["ours_integrate_ms"] > 0 and out["ours_raycast_ms"] > 0 and out["ours_mesh_incremental_ms"] > 0
    assert out["open3d_integrate_ms"]["VoxelBlockGrid"] > 0
    assert out["speedup"]["VoxelBlockGrid"] == pytest.approx(
        out["open3d_integrate_ms"]["VoxelBlockGrid"] / out["ours_integrate_ms"]
    )
    assert set(out["speedup"]) == set(out["open3d_integrate_ms"])
    assert set(out["numba_first_call_s"]) == {"integrate", "mesh", "raycast"}
    assert out["ours_blocks"] > 0 and out["ours_mesh_vertices"] > 0
    assert out["open3d_mesh_vertices"]["VoxelBlockGrid"] > 0


def test_bench_table_without_open3d(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_tsdf.main(["--frames", "1", "--no-open3d", "--voxel-size-m", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "integrate (VoxelBlockGrid CPU)" in text and "raycast depth+normal+colour" in text


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert bench_tsdf.main(["--frames", "0", "--no-open3d"]) == 2
    assert "--frames must be >= 1" in capsys.readouterr().err
    assert bench_tsdf.main(["--data", str(tmp_path), "--no-open3d"]) != 0
