"""`depthslam run` end to end: synthetic scene -> depth stage -> mapper -> mesh, trajectory, map file, .rrd."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from fusion.mapio import load_map
from stream.sources.synthetic import SyntheticConfig, SyntheticScene, SyntheticSource
from stream.tum_format import read_tum_trajectory
from tools import run

SMALL = ["--width", "160", "--height", "120", "--voxel-size-m", "0.04"]


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    code = run.main(argv)
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == 0 else {})


def test_run_lossless_gt_poses_writes_consistent_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    n = 24
    code, summary = _run_json(capsys, [
        "synthetic", "--poses", "gt", "--depth", "gt", "--mode", "lossless", "--max-frames", str(n), *SMALL,
        "--out", str(out), "--json", "--render-every-n", "6",
    ])
    assert code == 0
    assert summary["frames_in"] == n and summary["frames_integrated"] == n and summary["dropped"] == 0
    assert summary["depth"] == "passthrough"
    assert set(summary["outputs"]) == {
        "mesh", "cloud", "trajectory", "groundtruth", "map", "recording", "transforms", "colmap"
    }
    assert summary["evaluation"]["ate_se3_rmse_m"] < 1e-9  # --poses gt: the trajectory is the ground truth
    for stage in ("track", "integrate"):
        assert summary["stages"][stage]["count"] == n
    assert summary["stages"]["mesh"]["count"] == n // 5  # --mesh-every-n 5 (default)
    assert summary["stages"]["render"]["count"] == n // 6

    # trajectory: exactly the source's poses, one line per tracked frame
    traj = read_tum_trajectory(out / "trajectory.txt")
    source = SyntheticSource(SyntheticConfig(width_px=160, height_px=120, num_frames=n))
    source.open()
    truth = [source.read() for _ in range(n)]
    assert np.allclose(traj.T_W_C, np.stack([f.T_W_C for f in truth]), atol=1e-8)
    assert np.allclose(traj.stamps_s, [f.stamp_ns / 1e9 for f in truth], atol=1e-9)

    # mesh: on the true surface (4 cm voxels: median within a quarter voxel)
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(out / "mesh.ply"))
    vertices = np.asarray(mesh.vertices)
    assert len(vertices) > 1000 and len(mesh.triangles) > 1000
    sdf = np.abs(SyntheticScene().signed_distance(vertices))
    assert np.median(sdf) < 0.01 and np.percentile(sdf, 95) < 0.04

    # map file: loads back with the same blocks
    volume = load_map(out / "map.npz")
    assert volume.block_count == summary["map_blocks"]

    # recording: rerun's own reader sees the camera on every frame and the mesh blocks
    from rerun.chunk import RrdReader

    chunks = [(c.entity_path, c.is_static, c.to_record_batch()) for c in RrdReader(out / "recording.rrd").stream()]
    entities = {e for e, _, _ in chunks}
    assert {"/world/camera", "/world/camera/image", "/world/camera/depth"} <= entities
    mesh_entities = {e for e in entities if e.startswith("/world/mesh/")}
    assert len(mesh_entities) > 10
    frames = sorted(
        f for e, static, b in chunks
        if e == "/world/camera" and not static and "Transform3D:translation" in b.schema.names
        for f, v in zip(b.column("frame").to_pylist(), b.column("Transform3D:translation").to_pylist(), strict=True)
        if v is not None
    )
    assert frames == [f.frame_id for f in truth]
    # model view: every 6th frame at half size, the scene's depth where the map has a surface
    views = [
        (f, v) for e, static, b in chunks
        if e == "/model_view/depth" and not static and "DepthImage:buffer" in b.schema.names
        for f, v in zip(b.column("frame").to_pylist(), b.column("DepthImage:buffer").to_pylist(), strict=True)
        if v is not None
    ]
    assert [f for f, _ in views] == [5, 11, 17, 23]
    rendered = np.frombuffer(bytes(views[-1][1][0]), np.uint16).reshape(60, 80) / 1000.0  # depth logged in mm
    quads = truth[23].depth_m.reshape(60, 2, 80, 2)  # half-size pixel u' is centred at u = 2 u' + 0.5
    sensor = np.where((quads > 0).all(axis=(1, 3)), quads.mean(axis=(1, 3)), 0.0)
    in_range = (sensor > 0) & (sensor < 3.9)  # the run integrates and renders up to --max-depth-m 4
    assert in_range.mean() > 0.5 and (rendered[in_range] > 0).mean() > 0.9
    both = in_range & (rendered > 0)
    assert np.median(np.abs(rendered[both] - sensor[both])) < 0.01  # a quarter voxel (4 cm)


def test_stop_mid_run_keeps_the_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C (Node.stop) on an endless source: the map built so far is flushed and saved."""
    from tools.capture import source_from_args
    from tools.node_builder import build_node, summarise

    args = run.build_parser().parse_args([
        "synthetic", "--poses", "gt", "--max-frames", "0", *SMALL, "--out", str(tmp_path), "--viewer", "none",
    ])
    built = build_node(args, source_from_args)
    timer = threading.Timer(2.0, built.node.stop)
    timer.start()
    try:
        built.node.run()
    finally:
        timer.cancel()
    summary = summarise(built, 2.0)
    assert summary["frames_integrated"] > 0
    assert (tmp_path / "mesh.ply").stat().st_size > 1000
    assert len(read_tum_trajectory(tmp_path / "trajectory.txt").stamps_s) == summary["frames_tracked"]


def test_config_file_values_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("poses: gt\nmode: lossless\nmax_frames: 5\nwidth: 96\nheight: 72\nvoxel_size_m: 0.05\n"
                      "viewer: none\n")
    code, summary = _run_json(capsys, ["--config", str(config), "--max-frames", "3", "--out", str(tmp_path / "o"),
                                       "--json"])
    assert code == 0 and summary["frames_in"] == 3  # the command line wins over the file
    assert "recording" not in summary["outputs"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("voxel_size: 0.02\n", "unknown key 'voxel_size'"),
        ("mode: fast\n", "mode must be one of"),
        ("voxel_size_m: [1, 2]\n", "single value"),
        ("json: yes please\n", "true or false"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert run.main(["--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_gt_poses_without_ground_truth_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 64, 3), 60 * i, np.uint8))
    code = run.main([str(folder), "--poses", "gt", "--depth", "gt", "--hfov-deg", "60", "--mode", "lossless",
                     "--out", str(tmp_path / "o"), "--viewer", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--depth gt needs a source that carries depth" in err


def test_monocular_model_without_weights_offline_says_what_to_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPTHSLAM_OFFLINE", "1")
    monkeypatch.setenv("DEPTHSLAM_CACHE_DIR", str(tmp_path / "cache"))
    code = run.main(["synthetic", "--depth", "small", "--out", str(tmp_path / "o"), "--viewer", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "depthslam run: error:" in err and ("fetch" in err or "download" in err or "offline" in err)


def test_keyframe_export_for_reconstruction_tools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """transforms.json (nerfstudio, OpenGL axes) and COLMAP text agree with the source's poses and intrinsics."""
    out = tmp_path / "o"
    code, summary = _run_json(capsys, ["synthetic", "--poses", "gt", "--mode", "lossless", "--max-frames", "40",
                                       *SMALL, "--out", str(out), "--viewer", "none", "--json"])
    assert code == 0 and summary["keyframes"] >= 2
    transforms = json.loads((out / "export" / "transforms.json").read_text())
    source = SyntheticSource(SyntheticConfig(width_px=160, height_px=120, num_frames=40))
    k = source.config.intrinsics()
    assert (transforms["w"], transforms["h"], transforms["fl_x"], transforms["cx"]) == (160, 120, k.fx, k.cx)
    assert len(transforms["frames"]) == summary["keyframes"]
    source.open()
    truth = {f.frame_id: f for f in iter(source.read, None)}
    for entry in transforms["frames"]:
        gt = truth[entry["depthslam_frame_id"]]
        T_gl = np.array(entry["transform_matrix"])
        assert np.allclose(T_gl @ np.diag([1.0, -1.0, -1.0, 1.0]), gt.T_W_C, atol=1e-9)
        import cv2

        image = cv2.cvtColor(cv2.imread(str(out / "export" / entry["file_path"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(image, gt.image)
    # COLMAP: world-to-camera; camera centre = -R^T t must equal the keyframe's position
    from stream.tum_format import quaternion_to_rotation

    lines = [ln for ln in (out / "export" / "colmap" / "images.txt").read_text().splitlines() if ln and ln[0] != "#"]
    assert len(lines) == summary["keyframes"]
    for line, entry in zip(lines, transforms["frames"], strict=True):
        f = line.split()
        qw, qx, qy, qz, tx, ty, tz = map(float, f[1:8])
        R = quaternion_to_rotation(np.array([qx, qy, qz, qw]))
        centre = -R.T @ np.array([tx, ty, tz])
        assert np.allclose(centre, truth[entry["depthslam_frame_id"]].T_W_C[:3, 3], atol=1e-6)
    cameras = (out / "export" / "colmap" / "cameras.txt").read_text().splitlines()[1].split()
    assert cameras[1] == "PINHOLE" and float(cameras[4]) == pytest.approx(k.fx)
    assert len((out / "export" / "colmap" / "points3D.txt").read_text().splitlines()) > 100


def test_realtime_mode_drops_stale_frames_and_maps_the_newest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 200 fps replay outruns the mapper: stages drop and count stale frames, every frame is accounted for,
    and the newest captured frame is the one that reaches the map last."""
    n = 80
    code, summary = _run_json(capsys, ["synthetic", "--poses", "gt", "--mode", "realtime", "--fps", "200",
                                       "--max-frames", str(n), *SMALL, "--out", str(tmp_path), "--viewer", "none",
                                       "--json"])
    assert code == 0
    assert summary["dropped"] > 0
    assert summary["frames_integrated"] + summary["frames_rejected"] + summary["dropped"] == n
    assert summary["last_frame_id_mapped"] == summary["last_frame_id_in"]
    stamps = read_tum_trajectory(tmp_path / "trajectory.txt").stamps_s
    assert len(stamps) == summary["frames_integrated"] and np.all(np.diff(stamps) > 0)


def test_default_run_tracks_the_synthetic_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded default end to end with the tracker (not ground-truth poses): ATE against the scene's truth."""
    code, summary = _run_json(capsys, ["--mode", "lossless", "--max-frames", "90", "--width", "320", "--height",
                                       "240", "--out", str(tmp_path), "--viewer", "none", "--json"])
    assert code == 0
    assert summary["frames_tracked"] == 90 and summary["frames_lost"] == 0 and summary["keyframes"] >= 3
    evaluation = summary["evaluation"]
    assert evaluation["matched_poses"] == 90
    assert evaluation["ate_se3_rmse_m"] < 0.01  # 1 cm over 3 s of hand-held-like motion (measured ~3 mm)
    assert abs(evaluation["sim3_scale"] - 1.0) < 0.02  # metric depth: no scale drift


def test_serving_the_viewer_to_the_network_needs_allow_remote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run.main(["--viewer", "serve", "--out", str(tmp_path)]) == 1
    assert "--allow-remote" in capsys.readouterr().err
