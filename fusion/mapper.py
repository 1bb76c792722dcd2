"""The mapping stage's algorithm: depth frame -> pose -> TSDF integration -> meshes of the changed blocks
(and, when asked, a model view: the map raycast from the frame's pose).

No sockets here (``stream/node.py`` wires it). The tracker is injected; :class:`GroundTruthPoses` is the
tracker for sources that carry exact poses (synthetic scene, TUM with ground truth), used for mapping-only
runs and as the reference in tests.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fusion.camera import ImageUndistorter
from fusion.integrator import Integrator, IntegratorConfig
from fusion.meshing import MeshingConfig, TriangleMesh, blocks_affected_by, extract_mesh, mesh_blocks
from fusion.raycast import RaycastConfig, RaycastResult, raycast
from fusion.volume import TsdfVolume, VolumeConfig
from stream.messages import DepthFrame, DepthKind, Intrinsics, MeshBlock, PoseUpdate, TrackingState


class MapperInputError(ValueError):
    """A depth frame the mapper cannot use (e.g. no intrinsics, relative depth with ground-truth poses)."""


class TrackedFrame(Protocol):
    """What the mapper reads from a tracker's answer for one frame."""

    @property
    def pose(self) -> PoseUpdate:
        """The frame's pose and tracking state."""
        ...

    @property
    def depth_m(self) -> np.ndarray | None:
        """(H, W) float32 metric depth aligned to the map, to integrate; ``None`` when the pose is not trusted."""
        ...


@dataclass(frozen=True)
class GroundTruthTrack:
    """:class:`GroundTruthPoses`' answer for one frame."""

    pose: PoseUpdate
    depth_m: np.ndarray | None


class PoseTracker(Protocol):
    """What the mapper needs from a tracker."""

    def track(self, frame: DepthFrame) -> TrackedFrame:
        """Pose the frame (causal: uses only this and earlier frames)."""
        ...


class GroundTruthPoses:
    """A 'tracker' that returns the pose the source carries (``DepthFrame.T_W_C_gt``) and metric depth as is.

    Keyframes are chosen by motion since the last keyframe, as a tracker would.
    """

    def __init__(self, keyframe_translation_m: float = 0.15, keyframe_rotation_deg: float = 15.0) -> None:
        self.keyframe_translation_m = keyframe_translation_m
        self.keyframe_rotation_deg = keyframe_rotation_deg
        self._last_keyframe: np.ndarray | None = None

    def _is_keyframe(self, T_W_C: np.ndarray) -> bool:
        if self._last_keyframe is None:
            return True
        delta = np.linalg.inv(self._last_keyframe) @ T_W_C
        angle = np.degrees(np.arccos(np.clip((np.trace(delta[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))
        return bool(np.linalg.norm(delta[:3, 3]) > self.keyframe_translation_m or angle > self.keyframe_rotation_deg)

    def track(self, frame: DepthFrame) -> GroundTruthTrack:
        if frame.T_W_C_gt is None:
            raise MapperInputError(f"frame {frame.frame_id}: --poses gt needs a source with ground-truth poses")
        if frame.kind is not DepthKind.METRIC:
            raise MapperInputError(
                f"frame {frame.frame_id}: ground-truth poses need metric depth, got {frame.kind.value} "
                "(use the tracker, which aligns relative depth)"
            )
        keyframe = self._is_keyframe(frame.T_W_C_gt)
        if keyframe:
            self._last_keyframe = frame.T_W_C_gt
        pose = PoseUpdate(frame.frame_id, frame.stamp_ns, frame.T_W_C_gt.copy(), TrackingState.TRACKING,
                          is_keyframe=keyframe)
        return GroundTruthTrack(pose, frame.depth)


class PoseSource(enum.StrEnum):
    """Where the mapper's poses come from."""

    TRACKER = "tracker"
    """The keyframe tracker (monocular or sensor depth)."""
    GT = "gt"
    """The source's ground-truth poses (mapping only)."""


@dataclass(frozen=True)
class MapperConfig:
    """Settings of the mapping stage."""

    volume: VolumeConfig = field(default_factory=VolumeConfig)
    """Voxel size and memory budget of the TSDF map."""
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    """Truncation, depth range and weight cap of integration."""
    meshing: MeshingConfig = field(default_factory=MeshingConfig)
    """Marching-cubes settings."""
    mesh_every_n: int = 1
    """Re-mesh the changed blocks every n-th integrated frame (1 = every frame)."""
    render_every_n: int = 0
    """Raycast the map from the frame's pose after every n-th integrated frame (0 = never): a model view (depth,
    normals, colour) for viewers, e.g. to see what the map holds from where the camera is."""
    render_scale: float = 0.5
    """Size of the model view relative to the frame, in (0, 1] (0.5: a quarter of the pixels and of the time)."""
    raycast: RaycastConfig = field(default_factory=RaycastConfig)
    """Depth range and refinement of the model view."""

    def __post_init__(self) -> None:
        if self.mesh_every_n < 1:
            raise ValueError(f"mesh_every_n must be >= 1, got {self.mesh_every_n}")
        if isinstance(self.render_every_n, bool) or not isinstance(self.render_every_n, int) or self.render_every_n < 0:
            raise ValueError(f"render_every_n must be an int >= 0, got {self.render_every_n!r}")
        if not (isinstance(self.render_scale, int | float) and 0.0 < self.render_scale <= 1.0):
            raise ValueError(f"render_scale must be in (0, 1], got {self.render_scale!r}")


@dataclass(frozen=True)
class ModelView:
    """The map rendered from a frame's pose."""

    images: RaycastResult
    """Depth (metres, 0 = no surface), camera-frame normals and colour."""
    intrinsics: Intrinsics
    """Pinhole of the rendered images (the frame's, scaled to their size)."""
    T_W_C: np.ndarray
    """(4, 4) float64 pose it was rendered from."""


@dataclass(frozen=True)
class MapStep:
    """What processing one frame did to the map."""

    pose: PoseUpdate
    """The frame's pose and tracking state."""
    integrated: bool
    """True when the frame was fused (its pose was trusted and its depth usable)."""
    blocks: tuple[MeshBlock, ...]
    """Meshes of every block whose surface may have changed (empty unless re-meshed this frame)."""
    new_block_count: int
    """Blocks allocated by this frame."""
    refused_block_count: int
    """Blocks this frame needed but the memory budget refused (the existing map is intact)."""
    timings_ms: dict[str, float]
    """Milliseconds per step that ran for this frame: track, integrate, mesh (only when re-meshed), render (only
    when a model view was made)."""
    model_view: ModelView | None = None
    """The map raycast from this frame's pose (every ``render_every_n``-th integrated frame), else None."""


class Mapper:
    """Owns the TSDF map; ``process(depth_frame)`` tracks, integrates and re-meshes the touched blocks."""

    def __init__(self, config: MapperConfig, tracker: PoseTracker) -> None:
        self.config = config
        self.tracker = tracker
        self.volume = TsdfVolume(config.volume)
        self.integrator = Integrator(config.integrator)
        self._undistorter = ImageUndistorter()
        self._pending_keys: list[np.ndarray] = []
        self._integrated = 0

    def process(self, frame: DepthFrame) -> MapStep:
        if frame.intrinsics is None:
            raise MapperInputError(f"frame {frame.frame_id}: no intrinsics (give --intrinsics or --hfov-deg)")
        t0 = time.perf_counter()
        tracked = self.tracker.track(frame)
        t1 = time.perf_counter()
        timings = {"track": (t1 - t0) * 1e3}
        trusted = tracked.pose.state in (TrackingState.TRACKING, TrackingState.RELOCALISED)
        if tracked.depth_m is None or not trusted:
            return MapStep(tracked.pose, False, (), 0, 0, timings)
        # the map is pinhole: frames of a camera with lens distortion are resampled first
        frame_px = self._undistorter.undistort(tracked.depth_m, frame.image, frame.intrinsics)
        try:
            result = self.integrator.integrate(
                frame_px.depth_m, frame_px.image, tracked.pose.T_W_C, frame_px.intrinsics, self.volume
            )
        except (TypeError, ValueError) as exc:  # malformed frame, rejected before the map is touched
            raise MapperInputError(f"frame {frame.frame_id}: {exc}") from exc
        t2 = time.perf_counter()
        timings["integrate"] = (t2 - t1) * 1e3
        self._integrated += 1
        self._pending_keys.append(result.touched_keys)
        blocks: tuple[MeshBlock, ...] = ()
        if self._integrated % self.config.mesh_every_n == 0:
            blocks = self.flush_meshes()
            timings["mesh"] = (time.perf_counter() - t2) * 1e3
        view = None
        every = self.config.render_every_n
        if every and self._integrated % every == 0:
            t3 = time.perf_counter()
            view = self.render(tracked.pose.T_W_C, frame.intrinsics)
            timings["render"] = (time.perf_counter() - t3) * 1e3
        return MapStep(tracked.pose, True, blocks, result.new_block_count, result.refused_block_count, timings, view)

    def render(self, T_W_C: np.ndarray, intrinsics: Intrinsics) -> ModelView:
        """The map raycast from ``T_W_C`` (4, 4) with ``intrinsics`` scaled by ``render_scale`` (pinhole only)."""
        scale = self.config.render_scale
        k = intrinsics.scaled(max(1, round(intrinsics.width_px * scale)), max(1, round(intrinsics.height_px * scale)))
        if k.distortion:
            k = Intrinsics(k.width_px, k.height_px, k.fx, k.fy, k.cx, k.cy)
        images = raycast(self.volume, T_W_C, k, self.config.raycast)
        return ModelView(images, k, np.array(T_W_C, np.float64))

    def flush_meshes(self) -> tuple[MeshBlock, ...]:
        """Meshes of all blocks touched since the last flush (and their neighbours, so seams close)."""
        if not self._pending_keys:
            return ()
        touched = np.unique(np.concatenate(self._pending_keys), axis=0)
        self._pending_keys.clear()
        keys = blocks_affected_by(self.volume, touched)
        return mesh_blocks(self.volume, keys, self.config.meshing).to_messages()

    def mesh(self) -> TriangleMesh:
        """The whole map as one mesh (for export)."""
        return extract_mesh(self.volume, self.config.meshing)
