"""Local cameras through OpenCV ``VideoCapture`` (V4L2 on Linux, AVFoundation on macOS, MSMF on Windows).

The requested resolution, frame rate and pixel format are hints: drivers pick the nearest mode they
support, so after :meth:`WebcamSource.open` :attr:`WebcamSource.actual` holds what the camera really
delivers (and a warning is logged when it differs from the request).

An absent camera index fails in :meth:`open` at once (OpenCV's backends check the device node and
return without waiting). A camera that stops delivering makes ``read`` raise :class:`SourceError`
after ``max_read_failures`` consecutive failed grabs; each grab waits at most the backend's own
timeout (OpenCV's V4L2 backend gives up on a silent camera after about 10 s).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from stream.clock import wall_clock_ns
from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.video import IntrinsicsFit, rgb_from_opencv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebcamConfig:
    """What to ask of a local camera."""

    width_px: int | None = None
    """Requested frame width in pixels (``None``: the driver's default)."""
    height_px: int | None = None
    """Requested frame height in pixels (``None``: the driver's default)."""
    fps: float | None = None
    """Requested frame rate (``None``: the driver's default)."""
    fourcc: str | None = None
    """Requested pixel format as a four-character code, e.g. ``"MJPG"`` (many USB cameras need it for
    high resolutions at full rate); ``None``: the driver's default."""
    backend: int = cv2.CAP_ANY
    """OpenCV capture backend (``cv2.CAP_ANY``, ``cv2.CAP_V4L2``, ...) used by the default capture factory."""
    max_read_failures: int = 3
    """Consecutive failed grabs after which ``read``/``skip`` raise :class:`SourceError` (camera gone)."""
    intrinsics: Intrinsics | None = None
    """Camera intrinsics to attach to every frame (rescaled automatically for another size of the same aspect)."""

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {self.fps}")
        if self.fourcc is not None and (len(self.fourcc) != 4 or not self.fourcc.isascii()):
            raise ValueError(f"fourcc must be four ASCII characters, got {self.fourcc!r}")
        if (isinstance(self.max_read_failures, bool) or not isinstance(self.max_read_failures, int)
                or self.max_read_failures < 1):
            raise ValueError(f"max_read_failures must be an int >= 1, got {self.max_read_failures!r}")


@dataclass(frozen=True)
class CameraMode:
    """What an opened camera reports it delivers."""

    width_px: int
    """Frame width in pixels."""
    height_px: int
    """Frame height in pixels."""
    fps: float | None
    """Frame rate the driver reports (``None`` when it reports none)."""


@dataclass
class WebcamStats:
    """Counters of one capture session."""

    frames_read: int = 0
    """Frames decoded and returned by ``read``."""
    frames_skipped: int = 0
    """Frames grabbed and dropped by ``skip``."""
    read_failures: int = 0
    """Failed grabs or decodes (all of them, not only consecutive ones)."""


def _default_factory(backend: int) -> Callable[[int], cv2.VideoCapture]:
    def open_camera(index: int) -> cv2.VideoCapture:
        return cv2.VideoCapture(index, backend)

    return open_camera


class WebcamSource:
    """A local camera by OpenCV index, as RGB :class:`ColorFrame`\\ s stamped with the wall clock at grab time.

    ``capture_factory`` opens the capture for an index (default: ``cv2.VideoCapture(index, config.backend)``);
    tests inject one that opens a video file so the real code path runs without a camera.
    ``stamp_clock`` gives ``stamp_ns`` for each grabbed frame (default: wall clock, ns since the epoch).
    """

    def __init__(
        self, index: int, config: WebcamConfig = WebcamConfig(), *,
        capture_factory: Callable[[int], cv2.VideoCapture] | None = None,
        stamp_clock: Callable[[], int] = wall_clock_ns,
    ) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"camera index must be an int >= 0, got {index!r}")
        self.index = index
        self.config = config
        self.name = f"camera {index}"
        self.stats = WebcamStats()
        self.actual: CameraMode | None = None
        """The mode the camera reports after ``open`` (``None`` before)."""
        self._factory = capture_factory or _default_factory(config.backend)
        self._stamp_clock = stamp_clock
        self._intrinsics = IntrinsicsFit(config.intrinsics, self.name)
        self._cap: cv2.VideoCapture | None = None
        self._next_id = 0
        self._consecutive_failures = 0

    @property
    def nominal_fps(self) -> float | None:
        """The frame rate the camera reports (``None`` before ``open`` or when it reports none)."""
        return None if self.actual is None else self.actual.fps

    @property
    def is_live(self) -> bool:
        return True

    def open(self) -> None:
        """Open the camera and apply the requested mode; raises :class:`SourceError` when it is absent."""
        self.close()
        cap = self._factory(self.index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name}: cannot open the camera (no such device, or it is busy or not permitted)"
            )
        self._cap = cap
        self._next_id = 0
        cfg = self.config
        requests = [
            (cv2.CAP_PROP_FOURCC, None if cfg.fourcc is None else cv2.VideoWriter_fourcc(*cfg.fourcc)),
            (cv2.CAP_PROP_FRAME_WIDTH, cfg.width_px),
            (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height_px),
            (cv2.CAP_PROP_FPS, cfg.fps),
        ]
        for prop, value in requests:
            if value is not None and not cap.set(prop, float(value)):
                log.info("%s: the backend ignored the request to set property %d to %s", self.name, prop, value)
        self.actual = self._reported_mode(cap)
        self._warn_if_not_as_requested(self.actual)
        log.info("%s: opened (%s backend), %dx%d at %s fps", self.name, cap.getBackendName(),
                 self.actual.width_px, self.actual.height_px, self.actual.fps)

    def read(self) -> ColorFrame | None:
        """The next frame (blocks until the camera delivers); :class:`SourceError` when the camera is gone."""
        while True:
            cap = self._grab()
            frame_id, stamp_ns = self._next_id - 1, self._stamp_clock()
            ok, bgr = cap.retrieve()
            if ok and bgr is not None:
                break
            self._count_failure(f"frame {frame_id} could not be decoded")
        image = rgb_from_opencv(bgr, self.name)
        self.stats.frames_read += 1
        self._consecutive_failures = 0
        height, width = image.shape[:2]
        return ColorFrame(
            frame_id=frame_id, stamp_ns=stamp_ns, image=image,
            intrinsics=self._intrinsics.for_size(width, height), source=self.name,
        )

    def skip(self) -> bool:
        """Grab one frame and drop it without decoding."""
        self._grab()
        self._consecutive_failures = 0
        self.stats.frames_skipped += 1
        return True

    def close(self) -> None:
        """Release the camera; safe to call twice."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._consecutive_failures = 0

    # -- internals ---------------------------------------------------------------------------------
    def _grab(self) -> cv2.VideoCapture:
        """Grab the next frame (failures count towards ``max_read_failures``); returns the capture."""
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open() (or after close())")
        while not self._cap.grab():
            self._count_failure("no frame from the camera")
        self._next_id += 1
        return self._cap

    def _count_failure(self, what: str) -> None:
        self.stats.read_failures += 1
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.config.max_read_failures:
            raise SourceError(
                f"{self.name}: {what} ({self._consecutive_failures} failures in a row; "
                "camera disconnected or stalled?)"
            )
        log.warning("%s: %s; retrying", self.name, what)

    @staticmethod
    def _reported_mode(cap: cv2.VideoCapture) -> CameraMode:
        fps = cap.get(cv2.CAP_PROP_FPS)
        return CameraMode(
            width_px=round(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height_px=round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(fps) if math.isfinite(fps) and fps > 0 else None,
        )

    def _warn_if_not_as_requested(self, mode: CameraMode) -> None:
        cfg = self.config
        size_differs = (cfg.width_px is not None and cfg.width_px != mode.width_px) or (
            cfg.height_px is not None and cfg.height_px != mode.height_px
        )
        fps_differs = cfg.fps is not None and (mode.fps is None or abs(mode.fps - cfg.fps) > 0.01 * cfg.fps)
        if size_differs or fps_differs:
            log.warning(
                "%s: asked for %sx%s at %s fps, the camera delivers %dx%d at %s fps", self.name,
                cfg.width_px or "default", cfg.height_px or "default", cfg.fps or "default",
                mode.width_px, mode.height_px, mode.fps if mode.fps is not None else "unknown",
            )
