"""Video files (anything OpenCV's FFmpeg backend decodes: .mp4, .avi, .mkv, .mov, raw .mjpeg, ...).

``frame_id`` is the frame's index in the file and ``stamp_ns`` its position in the video
(``frame_id / fps``), so a clip started at an offset or read with a stride keeps the timeline of the
file. :meth:`VideoFileSource.skip` only ``grab()``s (demux, no colour conversion), which is what the
capture thread's real-time pacing needs to drop late frames cheaply.

This module also holds the two helpers every OpenCV-backed source shares (:class:`IntrinsicsFit`,
:func:`rgb_from_opencv`); the webcam and network-stream sources import them from here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError

log = logging.getLogger(__name__)

#: Largest relative difference of aspect ratios for which caller intrinsics are rescaled automatically.
ASPECT_TOLERANCE = 0.01

#: Frame rates outside (0, MAX_PLAUSIBLE_FPS] reported by a container are treated as unknown.
MAX_PLAUSIBLE_FPS = 1000.0

#: Frame counts at or above this are treated as unknown (some demuxers report garbage, e.g. raw MJPEG).
MAX_PLAUSIBLE_FRAME_COUNT = 2**31


# ----------------------------------------------------------------------------------------------------
# helpers shared by the OpenCV-backed sources
# ----------------------------------------------------------------------------------------------------


class IntrinsicsFit:
    """Attaches caller-given intrinsics to a source's frames, rescaled to the frame size when needed.

    Intrinsics for the frame size are used as they are; intrinsics for another resolution of the same
    aspect ratio (within :data:`ASPECT_TOLERANCE`) are rescaled with :meth:`Intrinsics.scaled`; any other
    size raises :class:`SourceError`, because attaching them would be a silent wrong result.
    """

    def __init__(self, intrinsics: Intrinsics | None, source_name: str) -> None:
        self.intrinsics = intrinsics
        self.source_name = source_name
        self._by_size: dict[tuple[int, int], Intrinsics] = {}

    def for_size(self, width_px: int, height_px: int) -> Intrinsics | None:
        """Intrinsics for a ``width_px`` x ``height_px`` frame, or ``None`` when the caller gave none."""
        k = self.intrinsics
        if k is None:
            return None
        key = (width_px, height_px)
        fitted = self._by_size.get(key)
        if fitted is not None:
            return fitted
        if (k.width_px, k.height_px) == key:
            fitted = k
        else:
            mismatch = abs(width_px * k.height_px - height_px * k.width_px) / (height_px * k.width_px)
            if mismatch > ASPECT_TOLERANCE:
                raise SourceError(
                    f"{self.source_name}: intrinsics are for {k.width_px}x{k.height_px} "
                    f"(aspect {k.width_px / k.height_px:.4f}) but the source delivers {width_px}x{height_px} "
                    f"(aspect {width_px / height_px:.4f}); give intrinsics calibrated for this resolution"
                )
            fitted = k.scaled(width_px, height_px)
            log.info(
                "%s: rescaled intrinsics from %dx%d to %dx%d",
                self.source_name, k.width_px, k.height_px, width_px, height_px,
            )
        self._by_size[key] = fitted
        return fitted


def rgb_from_opencv(image: np.ndarray, source_name: str) -> np.ndarray:
    """Convert an image as OpenCV delivers it (BGR, BGRA or grey, uint8) to (H, W, 3) uint8 RGB."""
    if image.dtype != np.uint8:
        raise SourceError(f"{source_name}: unsupported pixel type {image.dtype} (expected 8-bit images)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise SourceError(f"{source_name}: unsupported image layout {image.shape} (expected grey, BGR or BGRA)")


# ----------------------------------------------------------------------------------------------------
# video files
# ----------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class VideoConfig:
    """Which part of a video file to read."""

    start_offset_s: float | None = None
    """Start at this position in seconds (rounded to the nearest frame); exclusive with ``start_frame``."""
    start_frame: int | None = None
    """Start at this frame index (0-based); exclusive with ``start_offset_s``."""
    stride: int = 1
    """Deliver every ``stride``-th frame (>= 1); the frames in between are grabbed but never decoded."""
    max_frames: int | None = None
    """Stop after this many frames were delivered or skipped (``None``: until the end of the file)."""
    fallback_fps: float | None = None
    """Frame rate to assume when the container declares none (the container's own rate wins otherwise)."""
    intrinsics: Intrinsics | None = None
    """Camera intrinsics to attach to every frame (rescaled automatically for another size of the same aspect)."""

    def __post_init__(self) -> None:
        if self.start_offset_s is not None and self.start_frame is not None:
            raise ValueError("give either start_offset_s or start_frame, not both")
        if self.start_offset_s is not None and not (math.isfinite(self.start_offset_s) and self.start_offset_s >= 0):
            raise ValueError(f"start_offset_s must be a finite number >= 0, got {self.start_offset_s}")
        if self.start_frame is not None and (not _is_int(self.start_frame) or self.start_frame < 0):
            raise ValueError(f"start_frame must be an int >= 0, got {self.start_frame!r}")
        if not _is_int(self.stride) or self.stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {self.stride!r}")
        if self.max_frames is not None and (not _is_int(self.max_frames) or self.max_frames < 1):
            raise ValueError(f"max_frames must be an int >= 1, got {self.max_frames!r}")
        if self.fallback_fps is not None and not (math.isfinite(self.fallback_fps) and self.fallback_fps > 0):
            raise ValueError(f"fallback_fps must be a positive finite number, got {self.fallback_fps}")


@dataclass
class VideoStats:
    """Counters of one pass over a video file."""

    frames_read: int = 0
    """Frames decoded and returned by ``read``."""
    frames_skipped: int = 0
    """Frames passed over by ``skip`` (pacing drops; stride frames are not counted)."""
    read_failures: int = 0
    """Times the stream ended early because a frame could not be read before the declared frame count."""


class VideoFileSource:
    """Frames of a video file, in file order, as RGB :class:`ColorFrame`\\ s (``is_live`` is False)."""

    def __init__(self, path: str | Path, config: VideoConfig = VideoConfig()) -> None:
        self.path = Path(path)
        self.config = config
        self.name = f"video {self.path}"
        self.stats = VideoStats()
        self._intrinsics = IntrinsicsFit(config.intrinsics, self.name)
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self.frame_count: int | None = None
        """Frames the container declares (``None`` when it declares none or nonsense); known after ``open``."""
        self._index = -1  # index of the frame last grabbed
        self._pending = False  # frame ``_index`` is grabbed and not yet delivered or skipped
        self._consumed = 0  # frames delivered or skipped (for max_frames)
        self._ended = False

    # -- FrameSource properties ------------------------------------------------------------------
    @property
    def nominal_fps(self) -> float | None:
        """Rate of the delivered frames: the container's rate (or ``fallback_fps``) divided by the stride."""
        return None if self._fps is None else self._fps / self.config.stride

    @property
    def container_fps(self) -> float | None:
        """The file's own frame rate (or ``fallback_fps``), known after ``open``."""
        return self._fps

    @property
    def is_live(self) -> bool:
        return False

    # -- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the file, seek to the start frame and grab it; raises :class:`SourceError` on any problem."""
        self.close()
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name}: cannot read video (OpenCV could not open it: not a video, a truncated or "
                "corrupt container, or an unsupported codec)"
            )
        self._cap = cap
        self._ended = False
        self._consumed = 0
        self._fps = self._container_fps(cap)
        self.frame_count = self._declared_frame_count(cap)
        start = self._start_frame(self._fps)
        if self.frame_count is not None and start >= self.frame_count:
            self.close()
            raise SourceError(f"{self.name}: start frame {start} is beyond the end of the video "
                              f"({self.frame_count} frames)")
        self._seek(start)
        if not self._cap.grab():
            self.close()
            raise SourceError(f"{self.name}: cannot read video (no decodable frame at frame {start})")
        self._index = start
        self._pending = True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = False

    # -- frames ------------------------------------------------------------------------------------
    def read(self) -> ColorFrame | None:
        """The next frame (stride applied), or ``None`` at the end of the file or of ``max_frames``."""
        if not self._advance():
            return None
        assert self._cap is not None
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            self._end_early(f"frame {self._index} could not be decoded")
            return None
        image = rgb_from_opencv(bgr, self.name)
        self.stats.frames_read += 1
        height, width = image.shape[:2]
        return ColorFrame(
            frame_id=self._index, stamp_ns=self._stamp_ns(self._index), image=image,
            intrinsics=self._intrinsics.for_size(width, height), source=self.name,
        )

    def skip(self) -> bool:
        """Pass over the next frame without decoding it; False at the end."""
        if not self._advance():
            return False
        self.stats.frames_skipped += 1
        return True

    # -- internals ---------------------------------------------------------------------------------
    def _advance(self) -> bool:
        """Grab the next frame to deliver (``_index`` then names it); False at the end."""
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open() (or after close())")
        if self._ended or (self.config.max_frames is not None and self._consumed >= self.config.max_frames):
            return False
        if self._pending:
            self._pending = False
        else:
            for _ in range(self.config.stride):
                if not self._grab():
                    return False
        self._consumed += 1
        return True

    def _grab(self) -> bool:
        """Grab the frame after ``_index``; at a failure before the declared end, warn and count it."""
        assert self._cap is not None
        if self._cap.grab():
            self._index += 1
            return True
        if self.frame_count is not None and self._index + 1 < self.frame_count:
            self._end_early(f"frame {self._index + 1} could not be read")
        else:
            self._ended = True
        return False

    def _end_early(self, what: str) -> None:
        self.stats.read_failures += 1
        self._ended = True
        log.warning(
            "%s: %s although the container declares %s frames; ending the stream here (corrupt or truncated file)",
            self.name, what, self.frame_count if self.frame_count is not None else "more",
        )

    def _container_fps(self, cap: cv2.VideoCapture) -> float:
        fps = cap.get(cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS:
            return float(fps)
        if self.config.fallback_fps is not None:
            return self.config.fallback_fps
        self.close()
        raise SourceError(f"{self.name}: the video declares no frame rate; set VideoConfig.fallback_fps")

    @staticmethod
    def _declared_frame_count(cap: cv2.VideoCapture) -> int | None:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if math.isfinite(count) and 0 < count < MAX_PLAUSIBLE_FRAME_COUNT:
            return round(count)
        return None

    def _start_frame(self, fps: float) -> int:
        if self.config.start_frame is not None:
            return self.config.start_frame
        if self.config.start_offset_s is not None:
            return round(self.config.start_offset_s * fps)
        return 0

    def _seek(self, start: int) -> None:
        """Position so that the next grab returns frame ``start`` (``_index`` = ``start - 1``)."""
        assert self._cap is not None
        self._index = -1
        if start == 0:
            return
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, start) and round(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == start:
            self._index = start - 1
            return
        # The demuxer cannot seek exactly: reopen and walk forward without decoding.
        log.info("%s: cannot seek to frame %d exactly; grabbing forward", self.name, start)
        self._cap.release()
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY)
        while self._index + 1 < start:
            if not self._grab():
                self.close()
                raise SourceError(f"{self.name}: video ended at frame {self._index + 1}, before start frame {start}")

    def _stamp_ns(self, index: int) -> int:
        assert self._fps is not None
        return round(index * 1e9 / self._fps)
