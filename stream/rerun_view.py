"""The live Rerun view of the node: camera, images, depth, trajectory, keyframes, the incremental map mesh and
the model view (the map rendered from the camera).

Entity layout (world frame = the tracker's world, poses ``T_W_C`` camera-to-world)::

    world                           ViewCoordinates (the world's up axis), static
    world/camera                    Pinhole (static) + Transform3D per frame (parent-from-child = T_W_C)
    world/camera/image              colour image (JPEG-encoded or raw RGB), every ``image_every_n``-th frame
    world/camera/depth              DepthImage in metres (0 = invalid), every ``image_every_n``-th frame
    world/trajectory/<piece>        LineStrips3D of the tracked camera positions (see ``trajectory_piece_points``)
    world/keyframes                 Points3D of all keyframe positions so far
    world/mesh/<kx>_<ky>_<kz>       Mesh3D of one map block; an emptied block is cleared
    log/tracking                    TextLog of the tracking state, whenever it changes
    log/status                      TextLog of free-form status lines

Timelines: ``frame`` (sequence, the capture ``frame_id``) and ``stamp`` (the capture ``stamp_ns``). Calls that carry no
frame of their own (mesh blocks, keyframes without a newer frame, status) are stamped with the most recent frame's time,
set explicitly on every call, so logging from several threads is consistent (Rerun's current time is thread-local).

Everything goes through a dedicated ``rerun.RecordingStream``, never the global one, so several views (tests, nodes)
in one process do not interfere. ``rerun`` is imported lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.messages import Intrinsics, MeshBlock, TrackingState

if TYPE_CHECKING:
    import rerun as rr

#: Accepted values of :attr:`RerunViewConfig.mode`.
MODES: frozenset[str] = frozenset({"save", "spawn", "connect", "serve"})

#: Accepted values of :attr:`RerunViewConfig.world_up`.
WORLD_UP_AXES: frozenset[str] = frozenset({"+x", "-x", "+y", "-y", "+z", "-z"})

#: URL schemes Rerun's gRPC client accepts.
_GRPC_SCHEMES: tuple[str, ...] = ("rerun://", "rerun+http://", "rerun+https://")

#: Largest deviation of ``R^T R`` from the identity (and of ``det R`` from 1) accepted in a pose.
_ROTATION_TOL = 1e-3


@dataclass(frozen=True)
class RerunViewConfig:
    """Where the Rerun view goes and what it logs."""

    mode: str = "save"
    """Sink: "save" (write an .rrd file to ``rrd_path``; the headless default), "spawn" (start a local viewer process
    and stream to it), "connect" (stream to a running viewer at ``connect_url``), "serve" (host a gRPC server on
    ``serve_grpc_port`` that remote viewers connect to; rerun 0.41 binds it on all interfaces). Rerun blocks for up to
    about 5 s when a "connect"/"spawn" viewer cannot be reached at start-up and again at close."""
    rrd_path: Path = Path("depthslam.rrd")
    """File written in "save" mode (parent directory must exist)."""
    connect_url: str | None = None
    """Viewer URL for "connect" mode, e.g. "rerun+http://127.0.0.1:9876/proxy" (required there)."""
    spawn_port: int = 9876
    """TCP port the spawned viewer listens on ("spawn" mode)."""
    serve_grpc_port: int = 9876
    """TCP port of the gRPC server in "serve" mode."""
    serve_web_viewer: bool = False
    """In "serve" mode, also host the web viewer over HTTP on ``web_port`` (no browser is opened)."""
    web_port: int = 9090
    """HTTP port of the web viewer ("serve" mode with ``serve_web_viewer``)."""
    server_memory_limit: str = "1GiB"
    """How much data the "serve" gRPC server buffers for late-joining viewers, e.g. "1GiB" or "25%"."""
    application_id: str = "depthslam"
    """Rerun application id: recordings are grouped by it in the viewer."""
    recording_id: str | None = None
    """Recording id; None = a fresh random one. Give several processes the same id to log into one recording."""
    log_depth: bool = True
    """Log the metric depth image under world/camera/depth."""
    depth_as_mm: bool = False
    """Log depth as uint16 millimetres (half the size of float32 metres; depths beyond 65.5 m become 0)."""
    log_images: bool = True
    """Log the colour image under world/camera/image."""
    image_every_n: int = 1
    """Log colour/depth images only on every n-th logged frame (the first one included) to bound file size; >= 1."""
    jpeg_quality: int | None = 80
    """JPEG quality 1..100 for colour images; None logs raw RGB (larger, lossless)."""
    world_up: str = "-y"
    """The world's up axis for the 3D view: one of +x, -x, +y, -y, +z, -z. The default suits a world anchored at the
    first camera (optical axes: y down); use "+z" for gravity-aligned worlds such as TUM's motion-capture frame."""
    image_plane_distance_m: float = 0.2
    """How far in front of the camera the image plane (frustum) is drawn, metres; > 0."""
    trajectory_piece_points: int = 256
    """The trajectory is split into pieces of at most this many points (world/trajectory/<piece>); each frame re-logs
    only the current piece, so the recording grows linearly with the trajectory rather than quadratically; >= 2."""
    flush_timeout_s: float = 10.0
    """How long :meth:`RerunView.close` waits for buffered data to reach the sink before it raises; > 0."""
    stamp_is_epoch: bool = False
    """True if ``stamp_ns`` counts from the Unix epoch (then "stamp" is a timestamp timeline); False logs it as a
    duration since the capture clock's origin (monotonic clocks, files starting at 0)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"RerunViewConfig.mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.mode == "connect":
            if not self.connect_url:
                raise ValueError('RerunViewConfig.connect_url is required in mode "connect"')
            if not self.connect_url.startswith(_GRPC_SCHEMES):
                raise ValueError(
                    f"RerunViewConfig.connect_url must start with one of {_GRPC_SCHEMES}, got {self.connect_url!r}"
                )
        if not isinstance(self.rrd_path, Path):
            raise ValueError(f"RerunViewConfig.rrd_path must be a pathlib.Path, got {type(self.rrd_path).__name__}")
        if self.mode == "save" and self.rrd_path.suffix != ".rrd":
            raise ValueError(f"RerunViewConfig.rrd_path must end in .rrd, got {str(self.rrd_path)!r}")
        for name in ("spawn_port", "serve_grpc_port", "web_port"):
            _check_int(name, getattr(self, name), 1, 65535, "a TCP port")
        if not self.application_id:
            raise ValueError("RerunViewConfig.application_id must not be empty")
        _check_int("image_every_n", self.image_every_n, 1, None)
        if self.jpeg_quality is not None:
            _check_int("jpeg_quality", self.jpeg_quality, 1, 100, "None or an int")
        if self.world_up not in WORLD_UP_AXES:
            raise ValueError(f"RerunViewConfig.world_up must be one of {sorted(WORLD_UP_AXES)}, got {self.world_up!r}")
        if not (np.isfinite(self.image_plane_distance_m) and self.image_plane_distance_m > 0):
            raise ValueError(
                f"RerunViewConfig.image_plane_distance_m must be positive and finite, got {self.image_plane_distance_m}"
            )
        _check_int("trajectory_piece_points", self.trajectory_piece_points, 2, None)
        if not (np.isfinite(self.flush_timeout_s) and self.flush_timeout_s > 0):
            raise ValueError(f"RerunViewConfig.flush_timeout_s must be positive and finite, got {self.flush_timeout_s}")


def _check_int(name: str, value: Any, lo: int, hi: int | None, what: str = "an int") -> None:
    """Raise a ValueError naming the RerunViewConfig field unless ``value`` is an int (not bool) in lo..hi."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bounds = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"RerunViewConfig.{name} must be {what} {bounds}, got {value!r}")


def mesh_entity_path(key: tuple[int, int, int]) -> str:
    """The entity path of a map block's mesh, e.g. ``world/mesh/1_-2_0``."""
    return f"world/mesh/{key[0]}_{key[1]}_{key[2]}"


def check_pose(T_W_C: np.ndarray, name: str = "T_W_C") -> np.ndarray:
    """Validate a camera-to-world pose: (4, 4) float64, finite, rigid (orthonormal rotation, det +1, last row 0 0 0 1).

    Returns the pose unchanged; raises ValueError/TypeError naming the problem.
    """
    if not isinstance(T_W_C, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(T_W_C).__name__}")
    if T_W_C.shape != (4, 4) or T_W_C.dtype != np.float64:
        raise ValueError(f"{name} must be a (4, 4) float64 array, got {T_W_C.shape} {T_W_C.dtype}")
    if not np.all(np.isfinite(T_W_C)):
        raise ValueError(f"{name} has non-finite entries")
    if not np.array_equal(T_W_C[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {T_W_C[3].tolist()}")
    R = T_W_C[:3, :3]
    ortho_err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    det = float(np.linalg.det(R))
    if ortho_err > _ROTATION_TOL or abs(det - 1.0) > _ROTATION_TOL:
        raise ValueError(
            f"{name} rotation is not a proper rotation (max |R^T R - I| = {ortho_err:.2e}, det = {det:.6f})"
        )
    return T_W_C


class RerunView:
    """Logs the node's state to Rerun through its own recording stream (see the module docstring for the layout).

    Thread-safe: every public method holds one lock. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, config: RerunViewConfig) -> None:
        import rerun as rr  # lazily: only the view needs it

        self.config = config
        self._rr = rr
        self._lock = threading.Lock()
        self._closed = False
        self._intrinsics: Intrinsics | None = None
        self._frames_logged = 0
        self._last_frame_id: int | None = None
        self._last_stamp_ns = 0
        self._last_state: TrackingState | None = None
        self._piece_index = 0
        self._piece_points: list[np.ndarray] = []  # (3,) float64 each, the current trajectory piece
        self._keyframe_positions: list[np.ndarray] = []
        self.url: str | None = None
        """The gRPC URL viewers connect to ("serve" mode) or the one this view streams to ("connect"/"spawn")."""

        if config.mode == "save" and not config.rrd_path.parent.is_dir():
            raise ValueError(f"RerunViewConfig.rrd_path: directory {str(config.rrd_path.parent)!r} does not exist")
        rec = rr.RecordingStream(config.application_id, recording_id=config.recording_id)
        if config.mode == "save":
            rec.save(config.rrd_path)
        elif config.mode == "spawn":
            rec.spawn(port=config.spawn_port, connect=True)
            self.url = f"rerun+http://127.0.0.1:{config.spawn_port}/proxy"
        elif config.mode == "connect":
            rec.connect_grpc(config.connect_url)
            self.url = config.connect_url
        else:  # "serve"
            self.url = rec.serve_grpc(
                grpc_port=config.serve_grpc_port, server_memory_limit=config.server_memory_limit
            )
            if config.serve_web_viewer:
                rr.serve_web_viewer(web_port=config.web_port, open_browser=False, connect_to=self.url)
        self._rec: rr.RecordingStream = rec
        up = {
            "+x": rr.ViewCoordinates.RIGHT_HAND_X_UP, "-x": rr.ViewCoordinates.RIGHT_HAND_X_DOWN,
            "+y": rr.ViewCoordinates.RIGHT_HAND_Y_UP, "-y": rr.ViewCoordinates.RIGHT_HAND_Y_DOWN,
            "+z": rr.ViewCoordinates.RIGHT_HAND_Z_UP, "-z": rr.ViewCoordinates.RIGHT_HAND_Z_DOWN,
        }[config.world_up]
        rec.log("world", up, static=True)

    # ------------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------------

    def __enter__(self) -> RerunView:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Flush everything and close the sink; in "save" mode the .rrd file is complete afterwards. Idempotent.

        Raises rerun's RuntimeError when the data could not be delivered within ``flush_timeout_s`` (e.g. no viewer
        at ``connect_url``); the sink is closed all the same.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._rec.flush(timeout_sec=self.config.flush_timeout_s)
            finally:  # close the sink even when the flush failed (e.g. the viewer went away)
                self._rec.disconnect()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("RerunView is closed")

    def _set_time(self, frame_id: int, stamp_ns: int) -> None:
        self._rec.set_time("frame", sequence=frame_id)
        if self.config.stamp_is_epoch:
            self._rec.set_time("stamp", timestamp=np.datetime64(stamp_ns, "ns"))
        else:
            self._rec.set_time("stamp", duration=np.timedelta64(stamp_ns, "ns"))

    def _set_last_time(self) -> None:
        """Stamp the next logs with the most recent frame's time (or none before the first frame)."""
        if self._last_frame_id is None:
            self._rec.reset_time()
        else:
            self._set_time(self._last_frame_id, self._last_stamp_ns)

    # ------------------------------------------------------------------------------------------------
    # logging
    # ------------------------------------------------------------------------------------------------

    def log_intrinsics(self, intrinsics: Intrinsics) -> None:
        """Log the camera's pinhole (static, at world/camera, image plane ``width_px`` x ``height_px``, RDF axes).

        Logging the same intrinsics again is a no-op; different intrinsics replace the static pinhole.
        Distortion is not drawn (Rerun's pinhole has none); images should be undistorted upstream.
        """
        if not isinstance(intrinsics, Intrinsics):
            raise TypeError(f"intrinsics must be stream.messages.Intrinsics, got {type(intrinsics).__name__}")
        rr = self._rr
        with self._lock:
            self._check_open()
            if intrinsics == self._intrinsics:
                return
            self._rec.log(
                "world/camera",
                rr.Pinhole(
                    focal_length=[intrinsics.fx, intrinsics.fy],
                    principal_point=[intrinsics.cx, intrinsics.cy],
                    width=intrinsics.width_px,
                    height=intrinsics.height_px,
                    camera_xyz=rr.ViewCoordinates.RDF,
                    image_plane_distance=self.config.image_plane_distance_m,
                ),
                static=True,
            )
            self._intrinsics = intrinsics

    def _depth_archetype(self, depth_m: np.ndarray) -> object:
        rr = self._rr
        if not self.config.depth_as_mm:
            return rr.DepthImage(depth_m, meter=1.0)
        mm = np.nan_to_num(depth_m * 1000.0, nan=0.0, posinf=0.0, neginf=0.0)
        mm[(mm < 0) | (mm > 65535)] = 0
        return rr.DepthImage(np.round(mm).astype(np.uint16), meter=1000.0)

    def log_frame(
        self,
        frame_id: int,
        stamp_ns: int,
        T_W_C: np.ndarray,
        image: np.ndarray | None,
        depth_m: np.ndarray | None,
        state: TrackingState,
    ) -> None:
        """Log one tracked frame.

        Args:
            frame_id: capture frame id (the "frame" timeline).
            stamp_ns: capture time, nanoseconds (the "stamp" timeline).
            T_W_C: (4, 4) float64 camera-to-world pose; logged as the parent-from-child transform of world/camera.
            image: (H, W, 3) uint8 RGB colour image or None.
            depth_m: (H, W) float32 depth in metres (0 = invalid) or None.
            state: the tracker's state; positions of LOST frames are left out of the trajectory, which restarts
                as a new piece after a loss.
        """
        if isinstance(frame_id, bool) or not isinstance(frame_id, int | np.integer):
            raise TypeError(f"frame_id must be an int, got {type(frame_id).__name__}")
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int | np.integer):
            raise TypeError(f"stamp_ns must be an int, got {type(stamp_ns).__name__}")
        check_pose(T_W_C)
        if not isinstance(state, TrackingState):
            raise TypeError(f"state must be a TrackingState, got {state!r}")
        rr = self._rr
        with self._lock:
            self._check_open()
            self._check_image(image, depth_m)
            rec = self._rec
            frame_id, stamp_ns = int(frame_id), int(stamp_ns)
            self._set_time(frame_id, stamp_ns)
            self._last_frame_id, self._last_stamp_ns = frame_id, stamp_ns
            rec.log(
                "world/camera",
                rr.Transform3D(
                    translation=T_W_C[:3, 3],
                    mat3x3=T_W_C[:3, :3],
                    relation=rr.TransformRelation.ParentFromChild,
                ),
            )
            if self._frames_logged % self.config.image_every_n == 0:
                if image is not None and self.config.log_images:
                    rec.log("world/camera/image", self._colour_archetype(image))
                if depth_m is not None and self.config.log_depth:
                    rec.log("world/camera/depth", self._depth_archetype(depth_m))
            self._frames_logged += 1
            self._log_trajectory(T_W_C[:3, 3].copy(), state)
            if state != self._last_state:
                level = "WARN" if state == TrackingState.LOST else "INFO"
                rec.log("log/tracking", rr.TextLog(f"tracking: {state.value}", level=level))
                self._last_state = state

    def log_model_view(
        self, frame_id: int, stamp_ns: int, depth_m: np.ndarray, normals_C: np.ndarray, color: np.ndarray
    ) -> None:
        """Log the map rendered from the camera (a raycast) as 2D images under model_view/: depth, colour and
        normals (camera frame, shown as RGB = 127.5 * (n + 1); black where there is no surface).

        Args:
            frame_id: the frame whose pose it was rendered from ("frame" timeline).
            stamp_ns: that frame's capture time.
            depth_m: (h, w) float32 metres, 0 = no surface.
            normals_C: (h, w, 3) float32 unit normals in the camera frame, 0 where no surface.
            color: (h, w, 3) uint8 RGB.
        """
        if not isinstance(depth_m, np.ndarray) or depth_m.dtype != np.float32 or depth_m.ndim != 2:
            raise ValueError(f"depth_m must be an (h, w) float32 array in metres, got {_describe(depth_m)}")
        shape3 = (*depth_m.shape, 3)
        if not isinstance(normals_C, np.ndarray) or normals_C.dtype != np.float32 or normals_C.shape != shape3:
            raise ValueError(f"normals_C must be a {shape3} float32 array, got {_describe(normals_C)}")
        if not isinstance(color, np.ndarray) or color.dtype != np.uint8 or color.shape != shape3:
            raise ValueError(f"color must be a {shape3} uint8 array, got {_describe(color)}")
        rr = self._rr
        normals_rgb = np.where(
            (depth_m > 0)[..., None], np.clip(np.round(127.5 * (normals_C + 1.0)), 0, 255), 0
        ).astype(np.uint8)
        with self._lock:
            self._check_open()
            self._set_time(int(frame_id), int(stamp_ns))
            self._rec.log("model_view/depth", self._depth_archetype(depth_m))
            self._rec.log("model_view/color", self._colour_archetype(color))
            self._rec.log("model_view/normals", rr.Image(normals_rgb, color_model="RGB"))

    def log_keyframe(self, frame_id: int, T_W_C: np.ndarray) -> None:
        """Add a keyframe: all keyframe positions so far are logged as points at world/keyframes at ``frame_id``.

        The "stamp" timeline is set only when ``frame_id`` is the latest logged frame (else only its id is known).
        """
        if isinstance(frame_id, bool) or not isinstance(frame_id, int | np.integer):
            raise TypeError(f"frame_id must be an int, got {type(frame_id).__name__}")
        check_pose(T_W_C)
        rr = self._rr
        with self._lock:
            self._check_open()
            self._keyframe_positions.append(T_W_C[:3, 3].copy())
            if int(frame_id) == self._last_frame_id:
                self._set_last_time()
            else:
                self._rec.reset_time()
                self._rec.set_time("frame", sequence=int(frame_id))
            self._rec.log("world/keyframes", rr.Points3D(np.stack(self._keyframe_positions)))

    def log_mesh_blocks(self, blocks: Sequence[MeshBlock]) -> None:
        """Log changed map blocks, each at its own entity (:func:`mesh_entity_path`) at the latest frame's time.

        A block with vertices replaces that block's mesh; a block without vertices clears it. Blocks not passed
        keep their last mesh, so a caller passes only the blocks that changed.
        """
        for i, block in enumerate(blocks):
            if not isinstance(block, MeshBlock):
                raise TypeError(f"blocks[{i}] must be a stream.messages.MeshBlock, got {type(block).__name__}")
            if not np.all(np.isfinite(block.vertices)):
                raise ValueError(f"blocks[{i}] (key {block.key}) has non-finite vertices")
        rr = self._rr
        with self._lock:
            self._check_open()
            self._set_last_time()
            for block in blocks:
                path = mesh_entity_path(block.key)
                if block.vertices.shape[0] == 0:
                    self._rec.log(path, rr.Clear(recursive=False))
                else:
                    self._rec.log(
                        path,
                        rr.Mesh3D(
                            vertex_positions=block.vertices,
                            triangle_indices=block.faces.astype(np.uint32),
                            vertex_colors=block.colors,
                        ),
                    )

    def log_status(self, text: str) -> None:
        """Log a free-form status line (TextLog at log/status) at the latest frame's time."""
        if not isinstance(text, str):
            raise TypeError(f"status text must be a str, got {type(text).__name__}")
        with self._lock:
            self._check_open()
            self._set_last_time()
            self._rec.log("log/status", self._rr.TextLog(text, level="INFO"))

    # ------------------------------------------------------------------------------------------------
    # helpers (called with the lock held)
    # ------------------------------------------------------------------------------------------------

    def _check_image(self, image: np.ndarray | None, depth_m: np.ndarray | None) -> None:
        k = self._intrinsics
        if image is not None:
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {_describe(image)}")
            if k is not None and image.shape[:2] != (k.height_px, k.width_px):
                raise ValueError(
                    f"image is {image.shape[1]}x{image.shape[0]} but the intrinsics are {k.width_px}x{k.height_px}"
                )
        if depth_m is not None:
            if not isinstance(depth_m, np.ndarray) or depth_m.dtype != np.float32 or depth_m.ndim != 2:
                raise ValueError(f"depth_m must be an (H, W) float32 array in metres, got {_describe(depth_m)}")
            if k is not None and depth_m.shape != (k.height_px, k.width_px):
                raise ValueError(
                    f"depth_m is {depth_m.shape[1]}x{depth_m.shape[0]} but the intrinsics are "
                    f"{k.width_px}x{k.height_px}"
                )
            if image is not None and image.shape[:2] != depth_m.shape:
                raise ValueError(f"image {image.shape[:2]} and depth_m {depth_m.shape} differ in size")

    def _colour_archetype(self, image: np.ndarray) -> rr.Image | rr.EncodedImage:
        rr = self._rr
        raw = rr.Image(image, color_model="RGB")
        if self.config.jpeg_quality is None:
            return raw
        return raw.compress(jpeg_quality=self.config.jpeg_quality)

    def _log_trajectory(self, position: np.ndarray, state: TrackingState) -> None:
        rr = self._rr
        if state == TrackingState.LOST:
            if self._piece_points:  # the next tracked position starts a new, unconnected piece
                self._piece_index += 1
                self._piece_points = []
            return
        if len(self._piece_points) >= self.config.trajectory_piece_points:
            # the full piece stays as logged; the new one starts at its last point so the line is continuous
            self._piece_index += 1
            self._piece_points = [self._piece_points[-1]]
        self._piece_points.append(position)
        self._rec.log(f"world/trajectory/{self._piece_index}", rr.LineStrips3D([np.stack(self._piece_points)]))


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} dtype {value.dtype}"
    return type(value).__name__
