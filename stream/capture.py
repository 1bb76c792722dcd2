"""The capture stage: a thread that reads a :class:`FrameSource` and publishes its frames.

Replayable sources (video files, image folders, TUM folders, the synthetic scene) are paced at their
native frame rate in real-time mode: frame ``i`` is due at ``t0 + i / fps`` on the injected clock, a frame
more than one period late is skipped (``source.skip()``, counted in ``dropped_late``) so the stream never
drifts behind the clock. In lossless mode nothing is paced or dropped: the lossless publisher's
back-pressure sets the rate. Live sources (cameras, phone streams) pace themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field

from stream.clock import Clock, MonotonicClock, wall_clock_ns
from stream.messages import ColorFrame, Intrinsics, Status
from stream.sources.base import FrameSource, SourceError
from stream.transport import DeliveryMode, Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """Settings of the capture stage."""

    topic: str = "frames"
    """Topic the frames are published on."""
    status_topic: str = "status"
    """Topic for :class:`Status` messages (start, reconnects, end, errors)."""
    mode: DeliveryMode = DeliveryMode.REALTIME
    """Real-time: pace replayable sources and drop late frames. Lossless: every frame, as fast as consumed."""
    fps: float | None = None
    """Override of the source's native frame rate for pacing (``None``: the source's own)."""
    max_frames: int | None = None
    """Stop after publishing this many frames (``None``: until the source ends or ``stop()``)."""
    jpeg_quality: int | None = None
    """Send colour as JPEG with this quality (1..100); ``None`` sends raw RGB bytes."""
    hfov_deg: float | None = None
    """Attach intrinsics from this horizontal field of view to frames that carry none."""
    wait_subscribers: int = 0
    """Lossless mode: wait for this many subscriptions before the first frame (nothing lost to late joiners)."""
    wait_timeout_s: float = 30.0
    """Longest wait for those subscribers; then the capture fails with a clear error."""

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.hfov_deg is not None and not 0 < self.hfov_deg < 180:
            raise ValueError(f"hfov_deg must be in (0, 180), got {self.hfov_deg}")


@dataclass
class CaptureStats:
    """Counters of one capture run."""

    published: int = 0
    """Frames published."""
    dropped_late: int = 0
    """Real-time replay: frames skipped because they were more than one period late."""
    first_publish_ns: int | None = None
    """Clock time of the first publish."""
    last_publish_ns: int | None = None
    """Clock time of the last publish."""
    last_frame_id: int | None = None
    """``frame_id`` of the last published frame."""
    publish_ns: dict[int, int] = field(default_factory=dict)
    """Clock time of each publish by ``frame_id`` (the newest 100 000), for end-to-end latency in one process."""


class CaptureThread:
    """Runs ``source`` in a thread and publishes each frame as a :class:`ColorFrame` on ``config.topic``."""

    def __init__(
        self, source: FrameSource, publisher: Publisher, config: CaptureConfig = CaptureConfig(),
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.config = config
        self.clock = clock or MonotonicClock()
        self.stats = CaptureStats()
        self.error: SourceError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture:{source.name}", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to finish after the current frame; the source is closed by the thread.

        A live source is also closed here, which unblocks a ``read()`` waiting on a camera or a stream
        that is reconnecting.
        """
        self._stop.set()
        if self.source.is_live:
            self.source.close()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread; True when it has finished."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_frame_id(self) -> int | None:
        """``frame_id`` of the last published frame (``None`` before the first)."""
        return self.stats.last_frame_id

    def run_here(self) -> CaptureStats:
        """Run the capture loop in the calling thread (command-line use and deterministic tests)."""
        self._run()
        if self.error is not None:
            raise self.error
        return self.stats

    def report(self, state: str, text: str) -> None:
        """Publish a :class:`Status` for this stage (sources call it for reconnects and similar events)."""
        counters = {"published": self.stats.published, "dropped_late": self.stats.dropped_late}
        self.publisher.publish(self.config.status_topic, Status("capture", wall_clock_ns(), state, text, counters))

    # -- loop --------------------------------------------------------------------------------------
    def _paced_fps(self) -> float | None:
        if self.config.mode is not DeliveryMode.REALTIME or self.source.is_live:
            return None
        fps = self.config.fps or self.source.nominal_fps
        if fps is None:
            raise SourceError(f"{self.source.name}: frame rate unknown; give one for real-time replay (--fps)")
        return fps

    def _run(self) -> None:
        try:
            if self.config.wait_subscribers:
                if self.config.mode is not DeliveryMode.LOSSLESS:
                    raise SourceError("waiting for subscribers needs lossless mode")
                if not self.publisher.wait_for_subscribers(self.config.wait_subscribers, self.config.wait_timeout_s):
                    raise SourceError(f"no subscriber joined within {self.config.wait_timeout_s} s")
            self.source.open()
            self.report("running", f"capturing from {self.source.name}")
            self._loop(self._paced_fps())
            self.report("finished", f"{self.stats.published} frames published, {self.stats.dropped_late} dropped late")
        except SourceError as exc:
            self.error = exc
            log.error("capture failed: %s", exc)
            self.report("error", str(exc))
        finally:
            self.source.close()

    def _loop(self, fps: float | None) -> None:
        period_ns = None if fps is None else 1e9 / fps
        t0_ns: int | None = None
        index = 0  # frames consumed from the source (published + skipped)
        while not self._stop.is_set():
            if self.config.max_frames is not None and self.stats.published >= self.config.max_frames:
                return
            if period_ns is not None and t0_ns is None:
                # the clock starts when the first frame is ready (opening and warm-up are not "late")
                frame = self.source.read()
                if frame is None:
                    return
                t0_ns = self.clock.now_ns()
                index = 1
                self._publish(frame)
                continue
            if period_ns is not None:
                now = self.clock.now_ns()
                due = t0_ns + index * period_ns
                if now >= due + period_ns:
                    if not self.source.skip():
                        return
                    self.stats.dropped_late += 1
                    index += 1
                    continue
                if now < due:
                    self.clock.sleep_s((due - now) / 1e9)
            frame = self.source.read()
            if frame is None:
                return
            index += 1
            self._publish(frame)

    def _publish(self, frame: ColorFrame) -> None:
        if frame.intrinsics is None and self.config.hfov_deg is not None:
            h, w = frame.image.shape[:2]
            frame = dataclasses.replace(frame, intrinsics=Intrinsics.from_hfov(w, h, self.config.hfov_deg))
        if not self.publisher.publish(self.config.topic, frame, jpeg_quality=self.config.jpeg_quality):
            log.warning("frame %d not sent: lossless publish timed out", frame.frame_id)
            return
        now = self.clock.now_ns()
        if self.stats.first_publish_ns is None:
            self.stats.first_publish_ns = now
        self.stats.last_publish_ns = now
        self.stats.last_frame_id = frame.frame_id
        self.stats.publish_ns[frame.frame_id] = now
        if len(self.stats.publish_ns) > 100_000:
            del self.stats.publish_ns[next(iter(self.stats.publish_ns))]
        self.stats.published += 1
