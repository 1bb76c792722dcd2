"""The capture stage: pacing on an injected clock, real-time rate on the real clock, lossless delivery, errors."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.capture import CaptureConfig, CaptureThread
from stream.clock import ManualClock
from stream.messages import ColorFrame, Message, Status
from stream.sources.base import SourceError
from stream.sources.synthetic import SyntheticConfig, SyntheticSource
from stream.sources.video import VideoFileSource
from stream.transport import DeliveryMode, Publisher, Subscriber, TransportConfig

FPS = 30.0
PERIOD_S = 1.0 / FPS


class RecordingPublisher:
    """Stands in for a Publisher: records (clock time, message); a slow consumer costs ``cost_s`` per frame."""

    def __init__(self, clock: ManualClock, cost_s: float = 0.0) -> None:
        self.clock, self.cost_s = clock, cost_s
        self.frames: list[tuple[int, ColorFrame]] = []
        self.status: list[Status] = []

    def publish(self, topic: str, message: Message, *, jpeg_quality: int | None = None) -> bool:
        if isinstance(message, Status):
            self.status.append(message)
            return True
        self.frames.append((self.clock.now_ns(), message))
        self.clock.advance_s(self.cost_s)
        return True


def _tiny_synthetic(n: int) -> SyntheticSource:
    return SyntheticSource(SyntheticConfig(width_px=32, height_px=24, fps=FPS, num_frames=n))


def test_pacing_fast_consumer_publishes_every_frame_on_schedule() -> None:
    clock = ManualClock(start_ns=10**12)
    pub = RecordingPublisher(clock, cost_s=0.004)
    stats = CaptureThread(_tiny_synthetic(45), pub, CaptureConfig(), clock).run_here()
    assert stats.published == 45 and stats.dropped_late == 0
    t0 = pub.frames[0][0]
    for t, frame in pub.frames:
        assert t - t0 == pytest.approx(frame.frame_id * PERIOD_S * 1e9, abs=1)  # exactly on its due time
    assert [s.state for s in pub.status] == ["running", "finished"]


def test_pacing_slow_consumer_drops_late_frames_without_drift() -> None:
    clock = ManualClock()
    pub = RecordingPublisher(clock, cost_s=0.05)  # consumer takes 50 ms, video runs at 33 ms
    n = 300
    stats = CaptureThread(_tiny_synthetic(n), pub, CaptureConfig(), clock).run_here()
    assert stats.published + stats.dropped_late == n
    # 10 s of video at 20 frames/s of consumer: ~200 published, ~100 dropped
    assert 190 <= stats.published <= 210
    t0 = pub.frames[0][0]
    ids = [f.frame_id for _, f in pub.frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for t, frame in pub.frames:
        lateness_s = (t - t0) / 1e9 - frame.frame_id * PERIOD_S
        assert -1e-9 <= lateness_s < PERIOD_S + 1e-9  # never early, never more than one period late
    # no drift: the last frame goes out when the video says it should
    assert (pub.frames[-1][0] - t0) / 1e9 == pytest.approx((n - 1) * PERIOD_S, abs=PERIOD_S)


def test_lossless_mode_never_drops_even_when_slow() -> None:
    clock = ManualClock()
    pub = RecordingPublisher(clock, cost_s=0.2)
    config = CaptureConfig(mode=DeliveryMode.LOSSLESS)
    stats = CaptureThread(_tiny_synthetic(30), pub, config, clock).run_here()
    assert stats.published == 30 and stats.dropped_late == 0
    assert [f.frame_id for _, f in pub.frames] == list(range(30))
    assert clock.sleeps_s == []  # lossless is not paced


def test_fps_override_and_max_frames_and_hfov() -> None:
    clock = ManualClock()
    pub = RecordingPublisher(clock)
    config = CaptureConfig(fps=10.0, max_frames=5, hfov_deg=90.0)
    source = SyntheticSource(SyntheticConfig(width_px=32, height_px=24, fps=FPS, num_frames=50))
    stats = CaptureThread(source, pub, config, clock).run_here()
    assert stats.published == 5
    assert clock.sleeps_s == pytest.approx([0.1] * 4)
    # synthetic frames carry their own intrinsics, which win over the field-of-view fallback
    assert pub.frames[0][1].intrinsics == source.config.intrinsics()


def _write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i % 256, np.uint8))
    writer.release()
    return path


def test_hfov_intrinsics_attached_to_frames_without_any(tmp_path: Path) -> None:
    clock = ManualClock()
    pub = RecordingPublisher(clock)
    source = VideoFileSource(_write_video(tmp_path / "v.avi", 3, FPS))
    CaptureThread(source, pub, CaptureConfig(hfov_deg=90.0), clock).run_here()
    k = pub.frames[0][1].intrinsics
    assert k is not None and (k.width_px, k.height_px) == (64, 48) and k.fx == pytest.approx(32.0)


def test_realtime_pacing_holds_wall_clock_rate(tmp_path: Path) -> None:
    """A 30 fps video replayed in real time over 3 s keeps its rate within 5 % (real clock, loose by design)."""
    n = 90
    source = VideoFileSource(_write_video(tmp_path / "v30.avi", n, FPS))
    with Publisher(f"inproc://pace-{uuid.uuid4().hex}", TransportConfig()) as pub:
        stats = CaptureThread(source, pub, CaptureConfig()).run_here()
    assert stats.published + stats.dropped_late == n
    assert stats.published >= n // 2
    elapsed_s = (stats.last_publish_ns - stats.first_publish_ns) / 1e9
    assert elapsed_s / ((n - 1) * PERIOD_S) == pytest.approx(1.0, abs=0.05)


def test_capture_thread_lossless_over_tcp_delivers_exact_frames() -> None:
    config = TransportConfig(mode=DeliveryMode.LOSSLESS)
    with Publisher("tcp://127.0.0.1:*", config) as pub, \
            Subscriber(pub.endpoint, ["frames", "status"], config) as sub:
        assert pub.wait_for_subscribers(2, timeout_s=5.0)
        capture = CaptureThread(
            SyntheticSource(SyntheticConfig(width_px=64, height_px=48, num_frames=20)), pub,
            CaptureConfig(mode=DeliveryMode.LOSSLESS),
        ).start()
        frames, states = [], []
        while len(frames) < 20 or "finished" not in states:
            item = sub.recv(timeout_s=10.0)
            assert item is not None
            if item.topic == "frames":
                frames.append(item.message)
            else:
                states.append(item.message.state)
        assert capture.join(5.0)
    reference = SyntheticSource(SyntheticConfig(width_px=64, height_px=48, num_frames=20))
    reference.open()
    for got in frames:
        assert got.same_as(reference.read())
    assert states == ["running", "finished"]


def test_source_error_is_reported_and_raised(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video" * 100)
    clock = ManualClock()
    pub = RecordingPublisher(clock)
    capture = CaptureThread(VideoFileSource(bad), pub, CaptureConfig(), clock)
    with pytest.raises(SourceError, match="cannot read video"):
        capture.run_here()
    assert pub.status[-1].state == "error" and "cannot read video" in pub.status[-1].text


def test_stop_ends_an_endless_source_quickly() -> None:
    with Publisher(f"inproc://stop-{uuid.uuid4().hex}", TransportConfig()) as pub:
        source = SyntheticSource(SyntheticConfig(width_px=32, height_px=24, num_frames=0))
        capture = CaptureThread(source, pub, CaptureConfig()).start()
        time.sleep(0.3)
        capture.stop()
        assert capture.join(5.0)
        assert capture.stats.published > 0 and capture.error is None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="jpeg_quality"):
        CaptureConfig(jpeg_quality=0)
    with pytest.raises(ValueError, match="fps"):
        CaptureConfig(fps=-1.0)
