"""The node: capture -> depth -> tracking + TSDF map -> Rerun view and map topic, wired over ZeroMQ.

:class:`Node` reads like the block diagram: each stage is an object with ``start()``/``stop()`` that talks
to the next one only through messages on an endpoint (``inproc://`` when all stages share this process).
The same stages run as their own processes (``depthslam capture``, ``depthslam depth``) by pointing the
endpoints at ``tcp://`` or ``ipc://``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fusion.mapper import Mapper, MapperInputError, MapStep
from stream.messages import DepthFrame, DepthKind, Intrinsics, MeshBlock, TrackingState
from stream.transport import DeliveryMode, Subscriber, TransportConfig

if TYPE_CHECKING:
    from stream.map_topic import MapPublisher
    from stream.rerun_view import RerunView

log = logging.getLogger(__name__)


class MapSink(Protocol):
    """Something that follows the map as it is built (Rerun view, map topic publisher)."""

    def on_step(self, frame: DepthFrame, step: MapStep) -> None:
        """Called in the mapping thread after every processed frame (pose, images)."""
        ...

    def on_mesh(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> None:
        """Called with the new meshes of changed blocks (after a frame, and once more when mapping stops)."""
        ...

    def close(self) -> None:
        ...


@dataclass
class StageTimes:
    """Recent per-frame durations of one stage, milliseconds (bounded)."""

    samples_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def add(self, ms: float) -> None:
        self.samples_ms.append(ms)

    def summary(self) -> dict[str, float]:
        if not self.samples_ms:
            return {"median_ms": 0.0, "p95_ms": 0.0, "count": 0}
        values = np.fromiter(self.samples_ms, float)
        return {"median_ms": float(np.median(values)), "p95_ms": float(np.percentile(values, 95)),
                "count": int(values.size)}


@dataclass
class MappingStats:
    """Counters of the mapping stage."""

    frames: int = 0
    """Depth frames processed."""
    tracked: int = 0
    """Frames with a trusted pose."""
    integrated: int = 0
    """Frames fused into the map."""
    lost: int = 0
    """Frames whose pose failed (never integrated)."""
    keyframes: int = 0
    rejected: int = 0
    """Frames the mapper could not use (bad input), with ``last_error``."""
    refused_blocks: int = 0
    """Blocks refused by the memory budget."""
    last_frame_id: int = -1
    last_error: str = ""
    received_ns: dict[int, int] = field(default_factory=dict)
    """``time.monotonic_ns()`` when each frame's depth arrived here, by ``frame_id`` (newest 100 000)."""
    mapped_ns: dict[int, int] = field(default_factory=dict)
    """``time.monotonic_ns()`` when each frame was applied to the map, by ``frame_id`` (newest 100 000)."""
    times: dict[str, StageTimes] = field(
        default_factory=lambda: {k: StageTimes() for k in ("track", "integrate", "mesh", "render")}
    )


@dataclass(frozen=True)
class Keyframe:
    """A keyframe kept for export: its pose, image and intrinsics."""

    frame_id: int
    stamp_ns: int
    T_W_C: np.ndarray
    """(4, 4) float64 camera-to-world."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    intrinsics: Intrinsics


class MappingStage:
    """Subscribes to depth frames, runs the :class:`Mapper`, feeds the sinks; owns the map and trajectory."""

    def __init__(
        self, mapper: Mapper, depth_endpoint: str, transport: TransportConfig, sinks: Sequence[MapSink] = (),
        *, topic: str = "depth", max_rejected: int = 10,
    ) -> None:
        self.mapper = mapper
        self.sinks = list(sinks)
        self.stats = MappingStats()
        self.trajectory: list[tuple[int, np.ndarray]] = []
        """(stamp_ns, T_W_C) of every frame with a trusted pose, in order."""
        self.ground_truth: list[tuple[int, np.ndarray]] = []
        """(stamp_ns, T_W_C) of every processed frame whose source carried a ground-truth pose."""
        self.keyframes: list[Keyframe] = []
        """Every keyframe with its image, for export to reconstruction tools."""
        self.failure: MapperInputError | None = None
        self._max_rejected = max_rejected
        self._subscriber = Subscriber(depth_endpoint, [topic], transport)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mapping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current frame; meshes of blocks changed since the last re-meshing go to the sinks."""
        self._stop.set()
        self._thread.join()
        self._subscriber.close()
        with self._lock:
            blocks = self.mapper.flush_meshes()
            if blocks:
                stamp = self.trajectory[-1][0] if self.trajectory else 0
                for sink in self.sinks:
                    sink.on_mesh(blocks, self.stats.last_frame_id, stamp)

    @property
    def dropped(self) -> int:
        """Depth frames published but never mapped (real-time mode keeps only the newest)."""
        return self._subscriber.stats.dropped

    @property
    def lock(self) -> threading.Lock:
        """Held while a frame is being applied: take it to read the map consistently from another thread."""
        return self._lock

    def _run(self) -> None:
        while not self._stop.is_set():
            received = self._subscriber.recv(0.05)
            if received is None:
                continue
            if not isinstance(received.message, DepthFrame):
                self.stats.rejected += 1
                self.stats.last_error = f"expected a DepthFrame, got {type(received.message).__name__}"
                continue
            arrived = time.monotonic_ns()
            with self._lock:
                self._apply(received.message)
            _remember(self.stats.received_ns, received.message.frame_id, arrived)
            _remember(self.stats.mapped_ns, received.message.frame_id, time.monotonic_ns())

    def _apply(self, frame: DepthFrame) -> None:
        s = self.stats
        try:
            step = self.mapper.process(frame)
        except MapperInputError as exc:
            s.rejected += 1
            s.last_error = str(exc)
            log.warning("mapping: %s", exc)
            if s.rejected >= self._max_rejected and s.integrated == 0:
                self.failure = exc
            return
        s.frames += 1
        s.last_frame_id = frame.frame_id
        if frame.T_W_C_gt is not None:
            self.ground_truth.append((frame.stamp_ns, frame.T_W_C_gt))
        for name, ms in step.timings_ms.items():
            s.times[name].add(ms)
        s.refused_blocks += step.refused_block_count
        if step.pose.state in (TrackingState.TRACKING, TrackingState.RELOCALISED):
            s.tracked += 1
            self.trajectory.append((frame.stamp_ns, step.pose.T_W_C))
        elif step.pose.state is TrackingState.LOST:
            s.lost += 1
        s.integrated += int(step.integrated)
        if step.pose.is_keyframe and frame.image is not None and frame.intrinsics is not None:
            s.keyframes += 1
            self.keyframes.append(Keyframe(frame.frame_id, frame.stamp_ns, step.pose.T_W_C, frame.image,
                                           frame.intrinsics))
        for sink in self.sinks:
            sink.on_step(frame, step)
            if step.blocks:
                sink.on_mesh(step.blocks, frame.frame_id, frame.stamp_ns)


def _remember(table: dict[int, int], key: int, value: int, limit: int = 100_000) -> None:
    table[key] = value
    if len(table) > limit:
        del table[next(iter(table))]


def latency_summary(start_ns: dict[int, int], end_ns: dict[int, int]) -> dict[str, float]:
    """Median/p95 of ``end - start`` (ms) over the frame ids present in both tables (same clock)."""
    times = StageTimes()
    for frame_id, t_end in end_ns.items():
        t_start = start_ns.get(frame_id)
        if t_start is not None:
            times.add((t_end - t_start) / 1e6)
    return times.summary()


@dataclass(frozen=True)
class Endpoints:
    """Where the stages meet; ``inproc://`` names are made unique per node."""

    frames: str
    depth: str

    @staticmethod
    def in_process() -> Endpoints:
        tag = uuid.uuid4().hex[:8]
        return Endpoints(f"inproc://frames-{tag}", f"inproc://depth-{tag}")


class Node:
    """capture -> depth worker -> mapping (tracker + TSDF) -> sinks, as threads in this process.

    The stages are built by the caller (see ``tools/run.py``) and handed in; the node only wires and
    runs them. ``run()`` returns when the source ends, ``stop()`` is called (Ctrl-C) or the mapping stage
    fails; the map built so far is never discarded.
    """

    def __init__(
        self, *, capture: Callable[[str], object], depth: Callable[[str, str], object], mapper: Mapper,
        sinks: Sequence[MapSink], mode: DeliveryMode, endpoints: Endpoints | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints.in_process()
        transport = TransportConfig(mode=mode)
        self.mode = mode
        # downstream first, so every subscriber is connected before its publisher sends
        self.mapping = MappingStage(mapper, self.endpoints.depth, transport, sinks)
        self.depth = depth(self.endpoints.frames, self.endpoints.depth)
        self.capture = capture(self.endpoints.frames)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the node to finish: capture stops, frames already in flight are still mapped."""
        self._stop.set()

    def run(self, *, drain_timeout_s: float = 30.0, progress: Callable[[Node], None] | None = None) -> None:
        self.mapping.start()
        self.depth.start()
        self.capture.start()
        try:
            while self.capture.running and not self._stop.is_set() and self.mapping.failure is None:
                time.sleep(0.1)
                if progress is not None:
                    progress(self)
            self.capture.stop()
            self.capture.join(10.0)
            self._drain(drain_timeout_s, progress)
        finally:
            self.capture.stop()
            self.depth.stop()
            self.mapping.stop()

    def accounted(self) -> int:
        """Captured frames whose fate is known: mapped, rejected by the mapper, or rejected by the depth stage."""
        m = self.mapping.stats
        return m.frames + m.rejected + self.depth.stats.rejected

    def _drain(self, timeout_s: float, progress: Callable[[Node], None] | None) -> None:
        """Wait until every captured frame is accounted for (lossless) or the last one was mapped (real-time),
        or until the pipeline makes no progress for ``timeout_s``."""
        captured, last_id = self.capture.stats.published, self.capture.last_frame_id
        if last_id is None:
            return
        if self.mode is DeliveryMode.REALTIME:
            timeout_s = min(timeout_s, 5.0)

        def done() -> bool:
            if self.mode is DeliveryMode.LOSSLESS:
                return self.accounted() >= captured
            return self.mapping.stats.last_frame_id >= last_id

        seen, idle_since = self.accounted(), time.monotonic()
        while self.mapping.failure is None and not done():
            time.sleep(0.05)
            now_seen = self.accounted()
            if now_seen != seen:
                seen, idle_since = now_seen, time.monotonic()
            elif time.monotonic() - idle_since > timeout_s:
                log.warning("pipeline idle for %.0f s before the last frame arrived; stopping", timeout_s)
                return
            if progress is not None:
                progress(self)

    @property
    def failure(self) -> str | None:
        """Why the run failed, if it did: a capture error, a mapper error, or no frame reaching the map."""
        if self.capture.error is not None:
            return str(self.capture.error)
        if self.mapping.failure is not None:
            return str(self.mapping.failure)
        if self.mapping.stats.frames == 0 and self.depth.stats.rejected:
            return f"no frame reached the map; the depth stage rejected them: {self.depth.stats.last_error}"
        if self.mapping.stats.frames == 0 and self.mapping.stats.rejected:
            return f"no frame reached the map: {self.mapping.stats.last_error}"
        return None


def write_outputs(out_dir: Path, mapping: MappingStage) -> dict[str, str]:
    """Write mesh.ply, cloud.ply, trajectory.txt (+ groundtruth.txt when the source had it) and the map file;
    returns {name: path}."""
    from fusion.mapio import export_point_cloud_ply, save_map, write_mesh_ply
    from stream.tum_format import write_tum_trajectory

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"mesh": out_dir / "mesh.ply", "cloud": out_dir / "cloud.ply", "trajectory": out_dir / "trajectory.txt",
             "map": out_dir / "map.npz"}
    with mapping.lock:
        write_mesh_ply(paths["mesh"], mapping.mapper.mesh())
        export_point_cloud_ply(paths["cloud"], mapping.mapper.volume)
        stamps = np.array([s for s, _ in mapping.trajectory], np.float64) / 1e9
        poses = np.array([T for _, T in mapping.trajectory]).reshape(-1, 4, 4)
        write_tum_trajectory(paths["trajectory"], stamps, poses)
        if mapping.ground_truth:
            paths["groundtruth"] = out_dir / "groundtruth.txt"
            gt_stamps = np.array([s for s, _ in mapping.ground_truth], np.float64) / 1e9
            write_tum_trajectory(paths["groundtruth"], gt_stamps, np.array([T for _, T in mapping.ground_truth]))
        save_map(paths["map"], mapping.mapper.volume)
    return {k: str(v) for k, v in paths.items()}


class RerunSink:
    """Logs every mapped frame to a :class:`stream.rerun_view.RerunView` (intrinsics once, meshes incrementally).

    Changed mesh blocks are collected and logged every ``mesh_every_n`` frames (latest mesh per block), which
    bounds the recording's size: most blocks in view change on every frame.
    """

    def __init__(self, view: RerunView, mesh_every_n: int = 15) -> None:
        if mesh_every_n < 1:
            raise ValueError(f"mesh_every_n must be >= 1, got {mesh_every_n}")
        self.view = view
        self.mesh_every_n = mesh_every_n
        self._intrinsics_logged = False
        self._pending: dict[tuple[int, int, int], MeshBlock] = {}
        self._frames = 0

    def on_step(self, frame: DepthFrame, step: MapStep) -> None:
        if not self._intrinsics_logged and frame.intrinsics is not None:
            self.view.log_intrinsics(frame.intrinsics)
            self._intrinsics_logged = True
        depth = frame.depth if frame.kind is DepthKind.METRIC else None
        self.view.log_frame(frame.frame_id, frame.stamp_ns, step.pose.T_W_C, frame.image, depth, step.pose.state)
        if step.pose.is_keyframe:
            self.view.log_keyframe(frame.frame_id, step.pose.T_W_C)
        if step.model_view is not None:
            img = step.model_view.images
            self.view.log_model_view(frame.frame_id, frame.stamp_ns, img.depth_m, img.normals_C, img.color)
        self._frames += 1
        if self._frames % self.mesh_every_n == 0:
            self._flush_meshes()

    def on_mesh(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> None:
        for block in blocks:
            self._pending[block.key] = block

    def _flush_meshes(self) -> None:
        if self._pending:
            self.view.log_mesh_blocks(list(self._pending.values()))
            self._pending.clear()

    def close(self) -> None:
        self._flush_meshes()
        self.view.close()


class ThreadedSink:
    """Runs a slow sink (e.g. the Rerun view) in its own thread so it never slows the mapping stage.

    Per-frame updates are dropped (and counted in ``dropped_steps``) when ``max_pending`` are waiting
    (``None``: never, for lossless runs); mesh updates are never dropped (they carry map state).
    """

    def __init__(self, inner: MapSink, max_pending: int | None = 8) -> None:
        import queue

        self.inner = inner
        self.dropped_steps = 0
        self._queue: queue.Queue[tuple[str, tuple[object, ...]] | None] = queue.Queue()
        self._pending_steps = 0
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self._thread.start()

    def on_step(self, frame: DepthFrame, step: MapStep) -> None:
        with self._lock:
            if self._max_pending is not None and self._pending_steps >= self._max_pending:
                self.dropped_steps += 1
                return
            self._pending_steps += 1
        self._queue.put(("step", (frame, step)))

    def on_mesh(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> None:
        self._queue.put(("mesh", (blocks, frame_id, stamp_ns)))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, payload = item
            if kind == "step":
                with self._lock:
                    self._pending_steps -= 1
                self.inner.on_step(*payload)  # type: ignore[arg-type]
            else:
                self.inner.on_mesh(*payload)  # type: ignore[arg-type]

    def close(self) -> None:
        """Deliver everything queued, then close the inner sink."""
        self._queue.put(None)
        self._thread.join()
        self.inner.close()


class MapTopicSink:
    """Publishes poses and changed mesh blocks on the map topic (late joiners get snapshots)."""

    def __init__(self, publisher: MapPublisher) -> None:
        self.publisher = publisher

    def on_step(self, frame: DepthFrame, step: MapStep) -> None:
        self.publisher.publish_pose(step.pose)

    def on_mesh(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> None:
        self.publisher.publish_blocks(blocks, frame_id, stamp_ns)

    def close(self) -> None:
        self.publisher.close()
