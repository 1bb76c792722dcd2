"""Capture sources. :func:`open_source` turns what a user types into the right source.

SOURCE spellings: ``synthetic`` (the built-in scene, also the default), a webcam index (``0``), a stream URL
(``http://phone:8080/video``, ``rtsp://...``), a TUM RGB-D folder (has ``rgb.txt``), an image folder, or a
video file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from stream.clock import Clock
from stream.messages import Intrinsics
from stream.sources.base import FrameSource, SourceError

__all__ = ["FrameSource", "SourceError", "SourceOptions", "open_source", "source_kind"]


@dataclass(frozen=True)
class SourceOptions:
    """Options for :func:`open_source`; each applies to some source kinds only (others raise)."""

    intrinsics: Intrinsics | None = None
    """Camera intrinsics to attach (scaled to the image when the aspect ratio matches)."""
    fps: float | None = None
    """Image folders: the frame rate to assign; synthetic: the rendering rate."""
    stride: int | None = None
    """Video files and image folders: deliver every n-th frame."""
    start_offset_s: float | None = None
    """Video files: start this many seconds in."""
    max_frames: int | None = None
    """Synthetic: number of frames (0 = endless); video files: stop after this many source frames."""
    width_px: int | None = None
    """Webcam: requested width; synthetic: rendered width."""
    height_px: int | None = None
    """Webcam: requested height; synthetic: rendered height."""
    depth_scale: float | None = None
    """TUM folders: depth PNG units per metre (overrides camera.txt)."""


_APPLIES = {
    "synthetic": {"fps", "max_frames", "width_px", "height_px"},
    "webcam": {"intrinsics", "fps", "width_px", "height_px"},
    "stream": {"intrinsics"},
    "tum": {"intrinsics", "depth_scale"},
    "images": {"intrinsics", "fps", "stride"},
    "video": {"intrinsics", "stride", "start_offset_s", "max_frames"},
}


def source_kind(spec: str | None) -> str:
    """Which kind of source ``spec`` names; raises :class:`SourceError` for something that does not exist."""
    if spec is None or spec == "synthetic":
        return "synthetic"
    if spec.isdigit():
        return "webcam"
    if "://" in spec:
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "tum" if (path / "rgb.txt").is_file() else "images"
    if path.is_file():
        return "video"
    raise SourceError(
        f"source {spec!r}: no such file or folder (expected 'synthetic', a camera index like 0, a stream URL, "
        "a video file, an image folder or a TUM RGB-D folder)"
    )


def open_source(
    spec: str | None, options: SourceOptions = SourceOptions(), *, clock: Clock | None = None
) -> FrameSource:
    """Build (not open) the source named by ``spec``. Options that do not apply to it are errors."""
    kind = source_kind(spec)
    given = {f.name for f in dataclasses.fields(options) if getattr(options, f.name) is not None}
    extra = given - _APPLIES[kind]
    if extra:
        raise SourceError(f"source {spec or 'synthetic'!r} ({kind}): option(s) {sorted(extra)} do not apply to it")
    o = options
    if kind == "synthetic":
        from stream.sources.synthetic import SyntheticConfig, SyntheticSource

        base = SyntheticConfig()
        return SyntheticSource(SyntheticConfig(
            width_px=o.width_px or base.width_px, height_px=o.height_px or base.height_px, fps=o.fps or base.fps,
            num_frames=base.num_frames if o.max_frames is None else o.max_frames,
        ))
    if kind == "webcam":
        from stream.sources.webcam import WebcamConfig, WebcamSource

        return WebcamSource(int(spec), WebcamConfig(
            width_px=o.width_px, height_px=o.height_px, fps=o.fps, intrinsics=o.intrinsics
        ))
    if kind == "stream":
        from stream.sources.netstream import StreamConfig, open_stream

        return open_stream(spec, StreamConfig(intrinsics=o.intrinsics), clock=clock)
    if kind == "tum":
        from stream.sources.tum import TumConfig, TumSource

        return TumSource(spec, TumConfig(depth_scale=o.depth_scale, intrinsics=o.intrinsics))
    if kind == "images":
        from stream.sources.images import ImageFolderConfig, ImageFolderSource

        return ImageFolderSource(spec, ImageFolderConfig(
            fps=o.fps or 30.0, stride=o.stride or 1, intrinsics=o.intrinsics
        ))
    from stream.sources.video import VideoConfig, VideoFileSource

    return VideoFileSource(spec, VideoConfig(
        start_offset_s=o.start_offset_s, stride=o.stride or 1, max_frames=o.max_frames, intrinsics=o.intrinsics
    ))
