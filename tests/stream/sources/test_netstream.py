"""Network streams against a real MJPEG server on loopback (mjpeg_server.py) and unreachable RTSP URLs.

Back-off waits go through a ManualClock, so the exact back-off sequence is asserted and no test sleeps
through it; socket timeouts are real but short (0.3 s).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg_server import (
    HEIGHT_PX,
    WIDTH_PX,
    Behaviour,
    MjpegServer,
    SilentTcpServer,
    closed_port,
    numbered_image,
    read_number,
    strip_rgb,
    write_numbered_video,
)

from stream.clock import ManualClock
from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.netstream import (
    MjpegStreamSource,
    RtspStreamSource,
    StreamConfig,
    StreamEvent,
    open_stream,
    redact_url,
)

FAST = StreamConfig(connect_timeout_s=2.0, read_timeout_s=2.0)
"""Timeouts for servers that answer; they only matter when a test goes wrong (then it fails, not hangs)."""

#: Largest mean absolute difference (grey levels) between a sent image and the received JPEG.
JPEG_TOLERANCE = 3.0


class Events:
    """Collects ``on_event`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, kind: str, text: str) -> None:
        self.calls.append((kind, text))

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


def read_frames(source: MjpegStreamSource | RtspStreamSource, n: int) -> list[ColorFrame]:
    frames = []
    for _ in range(n):
        frame = source.read()
        assert frame is not None
        frames.append(frame)
    return frames


def make_source(
    url: str, config: StreamConfig = FAST, events: Events | None = None,
) -> tuple[MjpegStreamSource, ManualClock]:
    clock = ManualClock()
    return MjpegStreamSource(url, config, clock=clock, on_event=events), clock


# ----------------------------------------------------------------------------------------------------
# MJPEG delivery
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [Behaviour(), Behaviour(content_length=False), Behaviour(content_length=False, thumbnail=True)],
    ids=["content-length", "scanned", "scanned-with-thumbnail"],
)
def test_frames_arrive_in_order_with_their_content(behaviour: Behaviour) -> None:
    events = Events()
    with MjpegServer([behaviour]) as server:
        source, clock = make_source(server.url, events=events)
        source.open()
        frames = read_frames(source, 10)
        source.close()
    assert [f.frame_id for f in frames] == list(range(10))
    assert [read_number(f.image) for f in frames] == list(range(10))
    for i, frame in enumerate(frames):
        assert frame.image.shape == (HEIGHT_PX, WIDTH_PX, 3) and frame.image.dtype == np.uint8
        diff = np.abs(frame.image.astype(np.int16) - numbered_image(i).astype(np.int16))
        assert diff.mean() < JPEG_TOLERANCE, f"frame {i} differs by {diff.mean():.2f} on average"
        r, g, b = strip_rgb(frame.image)
        assert r > 230 and g < 25 and b < 25, f"strip should be red in RGB, got {(r, g, b)}"
        assert frame.source == f"mjpeg stream {server.url}"
    assert source.stats.frames == 10 and source.stats.reconnects == 0 and source.stats.corrupt_frames == 0
    assert source.stats.connections == 1 and server.connections == 1
    assert events.kinds == ["connected"]
    assert clock.sleeps_s == []
    assert source.is_live is True and source.nominal_fps is None


def test_skip_receives_without_decoding() -> None:
    with MjpegServer() as server:
        source, _ = make_source(server.url)
        source.open()
        first = source.read()
        assert source.skip() is True
        second = source.read()
        source.close()
    assert first is not None and second is not None
    assert (first.frame_id, second.frame_id) == (0, 2)
    assert (read_number(first.image), read_number(second.image)) == (0, 2)
    assert source.stats.skipped == 1 and source.stats.frames == 2


def test_snapshot_url_is_polled() -> None:
    with MjpegServer([Behaviour(kind="snapshot")]) as server:
        source, _ = make_source(server.url)
        source.open()
        frames = read_frames(source, 3)
        source.close()
        assert server.connections == 3
    assert [read_number(f.image) for f in frames] == [0, 1, 2]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert source.stats.reconnects == 0


def test_intrinsics_are_scaled_to_the_stream() -> None:
    k = Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5)
    with MjpegServer() as server:
        source, _ = make_source(server.url, StreamConfig(read_timeout_s=2.0, intrinsics=k))
        source.open()
        frame = source.read()
        source.close()
    assert frame is not None and frame.intrinsics == k.scaled(WIDTH_PX, HEIGHT_PX)


def test_basic_auth_from_url_and_password_never_in_the_name() -> None:
    with MjpegServer() as server:
        url = server.url.replace("http://", "http://phone:s3cret@")
        source, _ = make_source(url)
        source.open()
        assert source.read() is not None
        source.close()
        assert server.authorizations == ["Basic " + base64.b64encode(b"phone:s3cret").decode()]
    assert "s3cret" not in source.name
    assert source.name == f"mjpeg stream http://phone:***@127.0.0.1:{server.port}/video"


# ----------------------------------------------------------------------------------------------------
# corrupt parts, drops, stalls, reconnects
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "scanned"])
def test_corrupt_parts_are_counted_and_skipped(content_length: bool) -> None:
    events = Events()
    behaviour = Behaviour(garbage=frozenset({3}), truncated=frozenset({5}), content_length=content_length)
    with MjpegServer([behaviour]) as server:
        source, _ = make_source(server.url, events=events)
        source.open()
        frames = read_frames(source, 6)
        source.close()
    assert [f.frame_id for f in frames] == [0, 1, 2, 4, 6, 7]
    assert [read_number(f.image) for f in frames] == [0, 1, 2, 4, 6, 7]
    assert source.stats.corrupt_frames == 2 and source.stats.reconnects == 0
    assert events.kinds == ["connected", "corrupt_frame", "corrupt_frame"]
    assert "frame 3" in events.calls[1][1] and "frame 5" in events.calls[2][1]


def test_dropped_connection_reconnects_and_frames_continue() -> None:
    events = Events()
    with MjpegServer([Behaviour(frames=3), Behaviour()]) as server:
        source, clock = make_source(server.url, events=events)
        source.open()
        frames = read_frames(source, 6)
        source.close()
        assert server.connections == 2
    assert [read_number(f.image) for f in frames] == list(range(6))
    assert [f.frame_id for f in frames] == list(range(6))
    assert source.stats.reconnects == 1 and source.stats.connections == 2
    assert clock.sleeps_s == [pytest.approx(0.1)]
    assert events.kinds == ["connected", "disconnected", "reconnecting", "connected"]
    assert "the server closed the stream" in events.calls[1][1]
    assert "reconnect attempt 1 in 0.1 s" in events.calls[2][1]


def test_stalled_stream_times_out_and_reconnects() -> None:
    events = Events()
    config = StreamConfig(connect_timeout_s=2.0, read_timeout_s=0.3)
    with MjpegServer([Behaviour(frames=3, then="stall"), Behaviour()]) as server:
        source, clock = make_source(server.url, config, events)
        source.open()
        frames = read_frames(source, 6)
        source.close()
    assert [read_number(f.image) for f in frames] == list(range(6))
    assert source.stats.reconnects == 1
    assert clock.sleeps_s == [pytest.approx(0.1)]
    assert events.kinds == ["connected", "disconnected", "reconnecting", "connected"]
    assert "read timeout" in events.calls[1][1]


def test_backoff_restarts_after_a_frame() -> None:
    with MjpegServer([Behaviour(frames=2), Behaviour(frames=2), Behaviour()]) as server:
        source, clock = make_source(server.url)
        source.open()
        frames = read_frames(source, 5)
        source.close()
    assert [read_number(f.image) for f in frames] == list(range(5))
    assert clock.sleeps_s == [pytest.approx(0.1), pytest.approx(0.1)]
    assert source.stats.reconnects == 2


def test_backoff_grows_while_reconnects_fail_then_recovers() -> None:
    behaviours = [Behaviour(frames=2), Behaviour(status=503), Behaviour(status=503), Behaviour()]
    events = Events()
    with MjpegServer(behaviours) as server:
        source, clock = make_source(server.url, events=events)
        source.open()
        frames = read_frames(source, 4)
        source.close()
    assert [read_number(f.image) for f in frames] == [0, 1, 2, 3]
    assert clock.sleeps_s == pytest.approx([0.1, 0.2, 0.4])
    assert source.stats.reconnects == 3 and source.stats.connections == 2
    assert events.kinds.count("reconnecting") == 3
    assert any("HTTP 503" in text for kind, text in events.calls if kind == "disconnected")


def test_http_404_gives_up_after_max_reconnects_with_exact_backoff() -> None:
    events = Events()
    config = StreamConfig(read_timeout_s=2.0, max_reconnects=4, backoff_max_s=0.5)
    with MjpegServer([Behaviour(status=404)]) as server:
        source, clock = make_source(server.url, config, events)
        with pytest.raises(SourceError) as info:
            source.open()
        assert server.connections == 5  # the first attempt and four reconnects
    message = str(info.value)
    assert message.startswith(f"mjpeg stream {server.url}: giving up after 4 reconnect attempt(s)")
    assert "HTTP 404 Not Found" in message
    assert clock.sleeps_s == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert source.stats.reconnects == 4 and source.stats.connections == 0
    assert events.kinds == ["disconnected"] + ["reconnecting", "disconnected"] * 4 + ["failed"]
    assert events.calls[-1][1] == message


def test_connection_refused_gives_up_after_max_reconnects() -> None:
    url = f"http://127.0.0.1:{closed_port()}/video"
    source, clock = make_source(url, StreamConfig(connect_timeout_s=2.0, max_reconnects=3))
    with pytest.raises(SourceError, match=r"giving up after 3 reconnect attempt\(s\).*[Cc]onnection refused"):
        source.open()
    assert clock.sleeps_s == pytest.approx([0.1, 0.2, 0.4])


def test_max_reconnects_zero_fails_on_the_first_error() -> None:
    source, clock = make_source(f"http://127.0.0.1:{closed_port()}/", StreamConfig(max_reconnects=0))
    with pytest.raises(SourceError, match="giving up after 0 reconnect"):
        source.open()
    assert clock.sleeps_s == []


def test_not_an_mjpeg_stream() -> None:
    with MjpegServer([Behaviour(kind="html")]) as server:
        source, _ = make_source(server.url, StreamConfig(read_timeout_s=2.0, max_reconnects=1))
        with pytest.raises(SourceError, match="not an MJPEG stream or JPEG snapshot: Content-Type 'text/html'"):
            source.open()


def test_a_drop_after_which_the_server_is_gone_raises_from_read() -> None:
    with MjpegServer([Behaviour(frames=2), Behaviour(status=404)]) as server:
        source, clock = make_source(server.url, StreamConfig(read_timeout_s=2.0, max_reconnects=2))
        source.open()
        frames = read_frames(source, 2)
        with pytest.raises(SourceError, match=r"giving up after 2 reconnect.*HTTP 404"):
            source.read()
    assert [read_number(f.image) for f in frames] == [0, 1]
    assert clock.sleeps_s == pytest.approx([0.1, 0.2])


def test_close_from_another_thread_interrupts_a_blocked_read() -> None:
    config = StreamConfig(connect_timeout_s=2.0, read_timeout_s=30.0)
    with MjpegServer([Behaviour(frames=1, then="stall")]) as server:
        source, _ = make_source(server.url, config)
        source.open()
        assert source.read() is not None
        results: list[ColorFrame | None] = []
        reader = threading.Thread(target=lambda: results.append(source.read()))
        reader.start()
        assert server.wait_stalled(5.0)
        source.close()
        reader.join(timeout=10.0)
        assert not reader.is_alive(), "read() must return once the source is closed"
    assert results == [None]
    assert source.read() is None and source.skip() is False
    source.close()  # idempotent


def test_read_before_open() -> None:
    source, _ = make_source("http://127.0.0.1:9/video")
    with pytest.raises(SourceError, match="read before open"):
        source.read()


# ----------------------------------------------------------------------------------------------------
# RTSP
# ----------------------------------------------------------------------------------------------------


def test_rtsp_refused_fails_with_a_clear_error() -> None:
    clock = ManualClock()
    url = f"rtsp://127.0.0.1:{closed_port()}/x"
    source = RtspStreamSource(url, StreamConfig(connect_timeout_s=1.0, max_reconnects=1), clock=clock)
    with pytest.raises(SourceError, match=r"rtsp stream rtsp://127\.0\.0\.1:\d+/x: giving up after 1 .*cannot open"):
        source.open()
    assert clock.sleeps_s == pytest.approx([0.1])


def test_rtsp_unresponsive_server_times_out_instead_of_hanging() -> None:
    with SilentTcpServer() as silent:
        source = RtspStreamSource(
            f"rtsp://127.0.0.1:{silent.port}/x", StreamConfig(connect_timeout_s=0.5, max_reconnects=0),
            clock=ManualClock(),
        )
        with pytest.raises(SourceError, match=r"no answer within 0\.5 s"):
            source.open()


def test_rtsp_reconnects_when_the_stream_ends(tmp_path: Path) -> None:
    clip = write_numbered_video(tmp_path / "stream.avi", "MJPG", 4, 25.0)
    captures: list[cv2.VideoCapture] = []

    def factory(url: str) -> cv2.VideoCapture:
        assert url == "rtsp://cam.local/live"
        captures.append(cv2.VideoCapture(str(clip)))
        return captures[-1]

    events = Events()
    clock = ManualClock()
    source = RtspStreamSource("rtsp://cam.local/live", clock=clock, on_event=events, capture_factory=factory)
    source.open()
    assert source.nominal_fps == pytest.approx(25.0)
    frames = read_frames(source, 6)
    source.close()
    assert [read_number(f.image) for f in frames] == [0, 1, 2, 3, 0, 1]
    assert [f.frame_id for f in frames] == list(range(6))
    r, g, b = strip_rgb(frames[0].image)
    assert r > 230 and g < 25 and b < 25
    assert clock.sleeps_s == [pytest.approx(0.1)]
    assert events.kinds == ["connected", "disconnected", "reconnecting", "connected"]
    assert source.stats.reconnects == 1
    assert not any(cap.isOpened() for cap in captures), "every capture must be released"


# ----------------------------------------------------------------------------------------------------
# helpers and configuration
# ----------------------------------------------------------------------------------------------------


def test_open_stream_picks_the_protocol() -> None:
    assert isinstance(open_stream("http://phone:8080/video"), MjpegStreamSource)
    assert isinstance(open_stream("https://phone/video"), MjpegStreamSource)
    assert isinstance(open_stream("rtsp://cam/live"), RtspStreamSource)
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        open_stream("ftp://cam/live")
    with pytest.raises(SourceError, match="URL has no host"):
        MjpegStreamSource("http:///video")


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pw@10.0.0.2:554/s") == "rtsp://admin:***@10.0.0.2:554/s"
    assert redact_url("http://phone:8080/video") == "http://phone:8080/video"


def test_backoff_delays() -> None:
    config = StreamConfig(backoff_initial_s=0.1, backoff_factor=2.0, backoff_max_s=1.0)
    assert [config.backoff_delay_s(i) for i in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connect_timeout_s": 0.0}, "connect_timeout_s"),
        ({"read_timeout_s": float("inf")}, "read_timeout_s"),
        ({"backoff_initial_s": -0.1}, "backoff_initial_s"),
        ({"backoff_initial_s": 10.0, "backoff_max_s": 5.0}, "backoff_initial_s"),
        ({"backoff_factor": 0.5}, "backoff_factor"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"max_reconnects": 2.0}, "max_reconnects"),
        ({"max_frame_bytes": 10}, "max_frame_bytes"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamConfig(**kwargs)  # type: ignore[arg-type]


def test_stream_event_kinds_are_plain_strings() -> None:
    assert [e.value for e in StreamEvent] == ["connected", "disconnected", "reconnecting", "corrupt_frame", "failed"]
