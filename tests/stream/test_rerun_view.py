"""RerunView writes an .rrd ("save" mode) that is read back with rerun's own chunk reader and checked field by field.

No viewer is ever spawned; no network is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pytest

from stream.messages import Intrinsics, MeshBlock, TrackingState
from stream.rerun_view import RerunView, RerunViewConfig

rr = pytest.importorskip("rerun")

K = Intrinsics(width_px=32, height_px=24, fx=30.0, fy=31.0, cx=15.5, cy=11.5)
H, W = K.height_px, K.width_px
TOL = 1e-6


@pytest.fixture(autouse=True)
def _strict_rerun() -> Iterator[None]:
    """Make rerun raise on API misuse instead of logging a warning, so such misuse fails the test."""
    before = rr.strict_mode()
    rr.set_strict_mode(True)
    yield
    rr.set_strict_mode(before)


# ----------------------------------------------------------------------------------------------------
# reading an .rrd back
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One non-null cell of a component column: its frame index (None = static) and the cell's instances."""

    frame: int | None
    value: Any


class Recording:
    """All chunks of the first recording in an .rrd, with small query helpers."""

    def __init__(self, path: Path) -> None:
        from rerun.chunk import RrdReader

        self.chunks = [(c.entity_path, c.is_static, c.to_record_batch()) for c in RrdReader(path).stream()]

    def entities(self) -> set[str]:
        return {entity for entity, _, _ in self.chunks}

    def rows(self, entity: str, column: str, *, static: bool = False) -> list[Row]:
        """Non-null cells of ``column`` at ``entity`` (static ones or frame-indexed ones), sorted by frame."""
        out: list[Row] = []
        for ent, is_static, batch in self.chunks:
            if ent != entity or is_static != static or column not in batch.schema.names:
                continue
            values = batch.column(column)
            frames = None if static else batch.column("frame").to_pylist()
            for i in range(batch.num_rows):
                if values[i].is_valid:
                    out.append(Row(None if frames is None else frames[i], values[i].as_py()))
        return sorted(out, key=lambda r: -1 if r.frame is None else r.frame)

    def latest(self, entity: str, columns: list[str], frame: int) -> str | None:
        """Which of ``columns`` holds the newest data at or before ``frame`` (latest-at), or None."""
        best: tuple[int, str] | None = None
        for column in columns:
            for row in self.rows(entity, column):
                assert row.frame is not None
                if row.frame <= frame and (best is None or row.frame >= best[0]):
                    best = (row.frame, column)
        return None if best is None else best[1]


def _view_coordinates(value: Any) -> list[Any]:
    """How a ViewCoordinates value reads back from an .rrd cell."""
    return rr.components.ViewCoordinatesBatch(value).as_arrow_array().to_pylist()


def _mat3_from_column_major(values: list[float]) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(3, 3).T


# ----------------------------------------------------------------------------------------------------
# synthetic inputs
# ----------------------------------------------------------------------------------------------------


def _pose(i: int) -> np.ndarray:
    a = 0.1 * i
    c, s = np.cos(a), np.sin(a)
    T = np.eye(4)
    T[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]  # yaw about the camera's y axis
    T[:3, 3] = [0.1 * i + 0.25, -0.02 * i, 0.05 * i - 1.5]
    return T


def _image(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 40 + 20 * i
    img[..., 1] = 120
    img[..., 2] = 200 - 10 * i
    return img


def _depth(i: int) -> np.ndarray:
    depth = np.linspace(0.5, 4.0, H * W, dtype=np.float32).reshape(H, W) + np.float32(0.1 * i)
    depth[0, :4] = 0.0  # invalid pixels
    return depth


def _quad_block(key: tuple[int, int, int], n_quads: int = 1) -> MeshBlock:
    """``n_quads`` unit squares side by side: 4 vertices and 2 triangles each."""
    vertices, faces = [], []
    for q in range(n_quads):
        base = 4 * q
        x0 = float(key[0] + q)
        y, z = key[1], key[2]
        vertices += [[x0, y, z], [x0 + 1, y, z], [x0 + 1, y + 1, z], [x0, y + 1, z]]
        faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    v = np.asarray(vertices, np.float32)
    return MeshBlock(key, v, np.asarray(faces, np.int32), np.full((len(v), 3), 200, np.uint8))


def _empty_block(key: tuple[int, int, int]) -> MeshBlock:
    return MeshBlock(key, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))


STATES = [
    TrackingState.INITIALISING, TrackingState.TRACKING, TrackingState.TRACKING,
    TrackingState.LOST, TrackingState.RELOCALISED, TrackingState.TRACKING,
]
N_FRAMES = len(STATES)


@pytest.fixture(scope="module")
def session_rrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six frames, images every 2nd frame, two keyframes, two mesh blocks (one cleared at frame 4), one loss."""
    path = tmp_path_factory.mktemp("rerun") / "session.rrd"
    before = rr.strict_mode()
    rr.set_strict_mode(True)  # the autouse fixture is function-scoped and not active here
    config = RerunViewConfig(mode="save", rrd_path=path, image_every_n=2, jpeg_quality=95)
    try:
        _log_session(RerunView(config))
    finally:
        rr.set_strict_mode(before)
    return path


def _log_session(view: RerunView) -> None:
    with view:
        view.log_intrinsics(K)
        view.log_intrinsics(K)  # same intrinsics again: no second static row
        for i, state in enumerate(STATES):
            view.log_frame(100 + i, 1_000_000_000 + 33_000_000 * i, _pose(i), _image(i), _depth(i), state)
            if i in (0, 2):
                view.log_keyframe(100 + i, _pose(i))
            if i == 1:
                view.log_mesh_blocks([_quad_block((0, 0, 0)), _quad_block((1, -1, 2))])
            if i == 4:
                view.log_mesh_blocks([_quad_block((0, 0, 0), n_quads=3), _empty_block((1, -1, 2))])
        view.log_status("done")


# ----------------------------------------------------------------------------------------------------
# the recording
# ----------------------------------------------------------------------------------------------------


def test_entity_paths_exist(session_rrd: Path) -> None:
    entities = Recording(session_rrd).entities()
    for path in (
        "/world", "/world/camera", "/world/camera/image", "/world/camera/depth", "/world/trajectory/0",
        "/world/trajectory/1", "/world/keyframes", "/world/mesh/0_0_0", "/world/mesh/1_-1_2",
        "/log/tracking", "/log/status",
    ):
        assert path in entities, f"{path} missing from {sorted(entities)}"


def test_file_is_finalised_on_close(session_rrd: Path) -> None:
    """close() writes the footer: the manifest-based LazyStore (which refuses footer-less files) opens it."""
    from rerun.chunk import RrdReader

    store = RrdReader(session_rrd).store()
    assert len(store) == len(Recording(session_rrd).chunks)
    assert "/world/camera" in store.summary()


def test_pinhole_is_static_with_intrinsics(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    static = rec.rows("/world/camera", "Pinhole:image_from_camera", static=True)
    assert len(static) == 1
    assert rec.rows("/world/camera", "Pinhole:image_from_camera") == []  # never on a timeline
    m = _mat3_from_column_major(static[0].value[0])
    np.testing.assert_allclose(m, [[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1]], atol=TOL)
    (resolution,) = rec.rows("/world/camera", "Pinhole:resolution", static=True)
    assert resolution.value == [[float(W), float(H)]]
    (xyz,) = rec.rows("/world/camera", "Pinhole:camera_xyz", static=True)
    assert xyz.value == _view_coordinates(rr.ViewCoordinates.RDF)
    (up,) = rec.rows("/world", "ViewCoordinates:xyz", static=True)  # default world_up "-y"
    assert up.value == _view_coordinates(rr.ViewCoordinates.RIGHT_HAND_Y_DOWN)


def test_camera_transform_per_frame(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    translations = rec.rows("/world/camera", "Transform3D:translation")
    assert [r.frame for r in translations] == [100 + i for i in range(N_FRAMES)]
    last = _pose(N_FRAMES - 1)
    np.testing.assert_allclose(translations[-1].value[0], last[:3, 3], atol=TOL)
    mats = rec.rows("/world/camera", "Transform3D:mat3x3")
    assert len(mats) == N_FRAMES
    np.testing.assert_allclose(_mat3_from_column_major(mats[-1].value[0]), last[:3, :3], atol=TOL)
    relations = rec.rows("/world/camera", "Transform3D:relation")
    assert {r.value[0] for r in relations} == {rr.TransformRelation.ParentFromChild.value}
    stamp_ns = sorted(
        v for _, s, b in rec.chunks if not s and "Transform3D:translation" in b.schema.names
        for v in b.column("stamp").cast(pa.int64()).to_pylist()
    )
    assert stamp_ns == [1_000_000_000 + 33_000_000 * i for i in range(N_FRAMES)]


def test_images_every_second_frame(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    blobs = rec.rows("/world/camera/image", "EncodedImage:blob")
    assert [r.frame for r in blobs] == [100, 102, 104]
    media = rec.rows("/world/camera/image", "EncodedImage:media_type")
    assert {r.value[0] for r in media} == {"image/jpeg"}
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(blobs[-1].value[0]), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    assert decoded.shape == (H, W, 3)
    # JPEG at quality 95 on a flat image: within 3 grey levels per channel
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(axis=0), _image(4)[0, 0], atol=3.0)

    depth = rec.rows("/world/camera/depth", "DepthImage:buffer")
    assert [r.frame for r in depth] == [100, 102, 104]
    restored = np.frombuffer(bytes(depth[1].value[0]), np.float32).reshape(H, W)
    np.testing.assert_array_equal(restored, _depth(2))  # raw float32, bit exact, zeros kept
    assert {r.value[0] for r in rec.rows("/world/camera/depth", "DepthImage:meter")} == {1.0}


def test_trajectory_skips_lost_frame_and_restarts(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    piece0 = rec.rows("/world/trajectory/0", "LineStrips3D:strips")
    piece1 = rec.rows("/world/trajectory/1", "LineStrips3D:strips")
    assert [r.frame for r in piece0] == [100, 101, 102]  # frame 103 is LOST: not logged
    assert [r.frame for r in piece1] == [104, 105]
    np.testing.assert_allclose(piece0[-1].value[0], [_pose(i)[:3, 3] for i in range(3)], atol=TOL)
    np.testing.assert_allclose(piece1[-1].value[0], [_pose(i)[:3, 3] for i in (4, 5)], atol=TOL)


def test_keyframes_accumulate(session_rrd: Path) -> None:
    rows = Recording(session_rrd).rows("/world/keyframes", "Points3D:positions")
    assert [r.frame for r in rows] == [100, 102]
    np.testing.assert_allclose(rows[-1].value, [_pose(0)[:3, 3], _pose(2)[:3, 3]], atol=TOL)


def test_mesh_blocks_incremental_and_cleared(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    kept = rec.rows("/world/mesh/0_0_0", "Mesh3D:vertex_positions")
    assert [(r.frame, len(r.value)) for r in kept] == [(101, 4), (104, 12)]
    np.testing.assert_allclose(kept[-1].value, _quad_block((0, 0, 0), n_quads=3).vertices, atol=TOL)
    tris = rec.rows("/world/mesh/0_0_0", "Mesh3D:triangle_indices")
    assert len(tris[-1].value) == 6
    assert rec.rows("/world/mesh/0_0_0", "Clear:is_recursive") == []

    cleared = "/world/mesh/1_-1_2"
    assert [(r.frame, len(r.value)) for r in rec.rows(cleared, "Mesh3D:vertex_positions")] == [(101, 4)]
    assert [(r.frame, r.value) for r in rec.rows(cleared, "Clear:is_recursive")] == [(104, [False])]
    columns = ["Mesh3D:vertex_positions", "Clear:is_recursive"]
    assert rec.latest(cleared, columns, 103) == "Mesh3D:vertex_positions"
    assert rec.latest(cleared, columns, 104) == "Clear:is_recursive"


def test_tracking_state_and_status_logged(session_rrd: Path) -> None:
    rec = Recording(session_rrd)
    texts = [(r.frame, r.value[0]) for r in rec.rows("/log/tracking", "TextLog:text")]
    assert texts == [
        (100, "tracking: initialising"), (101, "tracking: tracking"), (103, "tracking: lost"),
        (104, "tracking: relocalised"), (105, "tracking: tracking"),
    ]
    levels = {r.frame: r.value[0] for r in rec.rows("/log/tracking", "TextLog:level")}
    assert levels[103] == "WARN" and levels[101] == "INFO"
    assert [(r.frame, r.value[0]) for r in rec.rows("/log/status", "TextLog:text")] == [(105, "done")]


# ----------------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------------


def _run_frames(path: Path, n: int, **config: Any) -> Recording:
    with RerunView(RerunViewConfig(mode="save", rrd_path=path, **config)) as view:
        view.log_intrinsics(K)
        for i in range(n):
            view.log_frame(i, i * 1000, _pose(i), _image(i), _depth(i), TrackingState.TRACKING)
    return Recording(path)


def test_image_every_n_and_raw_images(tmp_path: Path) -> None:
    # two views alive in one process at once: dedicated recording streams keep them apart
    every1 = _run_frames(tmp_path / "every1.rrd", 7, image_every_n=1, jpeg_quality=None)
    every3 = _run_frames(tmp_path / "every3.rrd", 7, image_every_n=3, jpeg_quality=None, log_depth=False)

    raw = every1.rows("/world/camera/image", "Image:buffer")
    assert [r.frame for r in raw] == list(range(7))
    np.testing.assert_array_equal(np.frombuffer(bytes(raw[5].value[0]), np.uint8).reshape(H, W, 3), _image(5))
    assert len(every1.rows("/world/camera/depth", "DepthImage:buffer")) == 7

    assert [r.frame for r in every3.rows("/world/camera/image", "Image:buffer")] == [0, 3, 6]
    assert "/world/camera/depth" not in every3.entities()
    assert len(every3.rows("/world/camera", "Transform3D:translation")) == 7  # poses still every frame


def test_log_images_off(tmp_path: Path) -> None:
    rec = _run_frames(tmp_path / "noimg.rrd", 3, log_images=False, log_depth=False)
    assert "/world/camera/image" not in rec.entities()
    assert "/world/camera/depth" not in rec.entities()
    assert len(rec.rows("/world/camera", "Transform3D:translation")) == 3


def test_trajectory_pieces_are_continuous(tmp_path: Path) -> None:
    rec = _run_frames(tmp_path / "traj.rrd", 7, log_images=False, log_depth=False, trajectory_piece_points=3)
    pieces = [rec.rows(f"/world/trajectory/{k}", "LineStrips3D:strips")[-1].value[0] for k in range(3)]
    assert [len(p) for p in pieces] == [3, 3, 3]
    joined = pieces[0] + pieces[1][1:] + pieces[2][1:]  # each piece starts at its predecessor's last point
    np.testing.assert_allclose(joined, [_pose(i)[:3, 3] for i in range(7)], atol=TOL)
    assert "/world/trajectory/3" not in rec.entities()


def test_world_up_z(tmp_path: Path) -> None:
    path = tmp_path / "z.rrd"
    RerunView(RerunViewConfig(rrd_path=path, world_up="+z")).close()
    (up,) = Recording(path).rows("/world", "ViewCoordinates:xyz", static=True)
    assert up.value == _view_coordinates(rr.ViewCoordinates.RIGHT_HAND_Z_UP)


def test_stamp_timeline_kinds(tmp_path: Path) -> None:
    for epoch, kind in ((False, pa.duration("ns")), (True, pa.timestamp("ns"))):
        path = tmp_path / f"epoch_{epoch}.rrd"
        with RerunView(RerunViewConfig(rrd_path=path, stamp_is_epoch=epoch)) as view:
            view.log_frame(7, 1_700_000_000_123_456_789, _pose(0), None, None, TrackingState.TRACKING)
        (batch,) = [b for e, s, b in Recording(path).chunks if e == "/world/camera" and not s]
        assert batch.column("stamp").type == kind
        assert batch.column("stamp").cast(pa.int64()).to_pylist() == [1_700_000_000_123_456_789]


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "viewer"}, "mode must be one of"),
        ({"mode": "connect"}, "connect_url is required"),
        ({"mode": "connect", "connect_url": "http://127.0.0.1:9876"}, "connect_url must start with"),
        ({"rrd_path": Path("out.txt")}, "must end in .rrd"),
        ({"rrd_path": "out.rrd"}, "must be a pathlib.Path"),
        ({"image_every_n": 0}, "image_every_n"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"world_up": "up"}, "world_up"),
        ({"spawn_port": 0}, "spawn_port"),
        ({"serve_grpc_port": 70000}, "serve_grpc_port"),
        ({"image_plane_distance_m": 0.0}, "image_plane_distance_m"),
        ({"trajectory_piece_points": 1}, "trajectory_piece_points"),
        ({"application_id": ""}, "application_id"),
        ({"flush_timeout_s": 0.0}, "flush_timeout_s"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RerunViewConfig(**kwargs)


def test_connect_config_accepts_grpc_url() -> None:
    config = RerunViewConfig(mode="connect", connect_url="rerun+http://127.0.0.1:9876/proxy")
    assert config.connect_url == "rerun+http://127.0.0.1:9876/proxy"


def test_missing_output_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        RerunView(RerunViewConfig(rrd_path=tmp_path / "missing" / "x.rrd"))


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    view = RerunView(RerunViewConfig(rrd_path=tmp_path / "bad.rrd"))
    view.log_intrinsics(K)
    ok = (0, 0, _pose(0), _image(0), _depth(0), TrackingState.TRACKING)

    skewed = _pose(1)
    skewed[0, 1] += 0.1
    with pytest.raises(ValueError, match="not a proper rotation"):
        view.log_frame(0, 0, skewed, None, None, TrackingState.TRACKING)
    with pytest.raises(ValueError, match="float64"):
        view.log_frame(0, 0, _pose(0).astype(np.float32), None, None, TrackingState.TRACKING)
    with pytest.raises(ValueError, match="last row"):
        bad = _pose(0)
        bad[3, 0] = 1.0
        view.log_frame(0, 0, bad, None, None, TrackingState.TRACKING)
    with pytest.raises(ValueError, match="uint8 RGB"):
        view.log_frame(*ok[:3], _image(0).astype(np.float32), None, TrackingState.TRACKING)
    with pytest.raises(ValueError, match="intrinsics are 32x24"):
        view.log_frame(*ok[:3], np.zeros((10, 10, 3), np.uint8), None, TrackingState.TRACKING)
    with pytest.raises(ValueError, match="float32 array in metres"):
        view.log_frame(*ok[:3], None, _depth(0).astype(np.float64), TrackingState.TRACKING)
    with pytest.raises(TypeError, match="TrackingState"):
        view.log_frame(*ok[:5], "tracking")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="frame_id must be an int"):
        view.log_frame(1.0, *ok[1:])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MeshBlock"):
        view.log_mesh_blocks([object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Intrinsics"):
        view.log_intrinsics((32, 24))  # type: ignore[arg-type]

    view.log_frame(*ok)
    view.close()
    view.close()  # idempotent
    assert view.closed
    with pytest.raises(RuntimeError, match="closed"):
        view.log_frame(*ok)
    with pytest.raises(RuntimeError, match="closed"):
        view.log_status("late")
    # the file is complete: exactly the one good frame was recorded
    assert len(Recording(tmp_path / "bad.rrd").rows("/world/camera", "Transform3D:translation")) == 1


def test_depth_as_millimetres(tmp_path: Path) -> None:
    """depth_as_mm logs uint16 millimetres with meter=1000: half the bytes, within 0.5 mm, invalid stays 0."""
    rec = _run_frames(tmp_path / "mm.rrd", 2, image_every_n=1, depth_as_mm=True)
    rows = rec.rows("/world/camera/depth", "DepthImage:buffer")
    assert len(rows) == 2
    mm = np.frombuffer(bytes(rows[1].value[0]), np.uint16).reshape(H, W)
    truth = _depth(1)
    np.testing.assert_allclose(mm / 1000.0, np.where(np.isfinite(truth) & (truth > 0), truth, 0.0), atol=5e-4)
    assert {r.value[0] for r in rec.rows("/world/camera/depth", "DepthImage:meter")} == {1000.0}


def _assert_received(path: Path, n_frames: int) -> None:
    """The .rrd another rerun process saved holds the camera of frames 0..n_frames-1 and the static pinhole."""
    rec = Recording(path)
    translations = rec.rows("/world/camera", "Transform3D:translation")
    assert [r.frame for r in translations] == list(range(n_frames))
    np.testing.assert_allclose(translations[-1].value[0], _pose(n_frames - 1)[:3, 3], atol=TOL)
    assert len(rec.rows("/world/camera", "Pinhole:image_from_camera", static=True)) == 1


def test_connect_mode_streams_to_a_running_rerun_on_loopback(tmp_path: Path) -> None:
    """--viewer connect: a real `rerun` process (headless: it saves what it receives) on 127.0.0.1 gets the frames."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    exe = shutil.which("rerun") or str(Path(sys.executable).with_name("rerun"))
    if not Path(exe).exists():
        pytest.skip("the rerun executable of rerun-sdk is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    received = tmp_path / "received.rrd"
    server = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", str(received)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        while "Listening for gRPC" not in server.stdout.readline():
            assert time.monotonic() < deadline and server.poll() is None, "rerun did not start"
        with RerunView(RerunViewConfig(mode="connect", connect_url=f"rerun+http://127.0.0.1:{port}/proxy")) as view:
            view.log_intrinsics(K)
            for i in range(5):
                view.log_frame(i, i * 1000, _pose(i), _image(i), _depth(i), TrackingState.TRACKING)
        time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(30)
    _assert_received(received, 5)


def test_model_view_images(tmp_path: Path) -> None:
    """The model view goes to model_view/{depth,color,normals} at the frame's time; normals as 127.5 (n + 1)."""
    h, w = 12, 16
    depth = np.full((h, w), 1.25, np.float32)
    depth[0, :] = 0.0  # no surface
    normals = np.zeros((h, w, 3), np.float32)
    normals[1:, :, 2] = -1.0  # facing the camera
    color = np.zeros((h, w, 3), np.uint8)
    color[..., 1] = 200
    path = tmp_path / "model.rrd"
    with RerunView(RerunViewConfig(mode="save", rrd_path=path, jpeg_quality=None)) as view:
        view.log_model_view(7, 7000, depth, normals, color)
        with pytest.raises(ValueError, match="normals_C"):
            view.log_model_view(8, 8000, depth, normals[:-1], color)
        with pytest.raises(ValueError, match="depth_m"):
            view.log_model_view(8, 8000, depth.astype(np.float64), normals, color)
    rec = Recording(path)
    rows = rec.rows("/model_view/depth", "DepthImage:buffer")
    assert [r.frame for r in rows] == [7]
    np.testing.assert_array_equal(np.frombuffer(bytes(rows[0].value[0]), np.float32).reshape(h, w), depth)
    got = rec.rows("/model_view/normals", "Image:buffer")
    rgb = np.frombuffer(bytes(got[0].value[0]), np.uint8).reshape(h, w, 3)
    assert np.all(rgb[0] == 0) and np.all(rgb[1:] == [128, 128, 0])
    col = rec.rows("/model_view/color", "Image:buffer")
    np.testing.assert_array_equal(np.frombuffer(bytes(col[0].value[0]), np.uint8).reshape(h, w, 3), color)


def _camera_frames(path: Path) -> set[int]:
    """Frames with a camera pose in an .rrd that another process may still be writing (empty until readable)."""
    import warnings

    if not path.exists() or path.stat().st_size == 0:
        return set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a file still being written has no footer yet
            return {r.frame for r in Recording(path).rows("/world/camera", "Transform3D:translation")}
    except ValueError:  # no complete recording in it yet
        return set()


def test_serve_mode_gives_a_late_viewer_everything_on_loopback(tmp_path: Path) -> None:
    """--viewer serve: a real `rerun` client (headless: it saves what it pulls) that joins after five frames
    gets those from the server's buffer and the three logged after it joined."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    exe = shutil.which("rerun") or str(Path(sys.executable).with_name("rerun"))
    if not Path(exe).exists():
        pytest.skip("the rerun executable of rerun-sdk is not installed")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    received = tmp_path / "pulled.rrd"
    view = RerunView(RerunViewConfig(mode="serve", serve_grpc_port=ports[0]))
    client = None
    try:
        view.log_intrinsics(K)
        for i in range(5):
            view.log_frame(i, i * 1000, _pose(i), _image(i), _depth(i), TrackingState.TRACKING)
        # the client also hosts its own server; keep that one on loopback and on a free port
        client = subprocess.Popen(
            [exe, f"rerun+http://127.0.0.1:{ports[0]}/proxy", "--bind", "127.0.0.1", "--port", str(ports[1]),
             "--save", str(received)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # joined: the buffered frames reach its file (polled: it saves no log line on connecting)
        deadline = time.monotonic() + 60
        while 4 not in _camera_frames(received):
            assert time.monotonic() < deadline and client.poll() is None, "the rerun client got no data"
            time.sleep(0.1)
        for i in range(5, 8):
            view.log_frame(i, i * 1000, _pose(i), _image(i), _depth(i), TrackingState.TRACKING)
        while 7 not in _camera_frames(received):
            assert time.monotonic() < deadline + 60 and client.poll() is None, "the rerun client missed frames"
            time.sleep(0.1)
        view.close()
    finally:
        if not view.closed:
            view.close()
        if client is not None:
            client.terminate()
            client.wait(30)
    _assert_received(received, 8)
