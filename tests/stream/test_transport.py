"""ZeroMQ transport on real sockets: inproc, ipc and tcp loopback; real-time drops; lossless delivery; garbage."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream.messages import ColorFrame, DecodeLimits, Status
from stream.transport import (
    DeliveryMode,
    EndpointError,
    Publisher,
    Subscriber,
    TransportConfig,
    parse_endpoint,
)

REALTIME = TransportConfig(mode=DeliveryMode.REALTIME)
LOSSLESS = TransportConfig(mode=DeliveryMode.LOSSLESS)


def _frame(i: int, h: int = 480, w: int = 640) -> ColorFrame:
    image = np.full((h, w, 3), i % 256, np.uint8)
    image[0, 0] = (i >> 16) & 255, (i >> 8) & 255, i & 255
    return ColorFrame(i, i * 33_333_333, image)


@pytest.fixture(params=["inproc", "ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "inproc":
        return f"inproc://t-{uuid.uuid4().hex}"
    if request.param == "ipc":
        return f"ipc://{tmp_path}/frames.sock"
    return "tcp://127.0.0.1:*"


def _pair(endpoint: str, config: TransportConfig, topics=("frames",)) -> tuple[Publisher, Subscriber]:
    pub = Publisher(endpoint, config)
    sub = Subscriber(pub.endpoint, list(topics), config)
    return pub, sub


def _wait_joined(pub: Publisher, sub: Subscriber, topic: str = "frames") -> None:
    """PUB/SUB slow-joiner: publish probes until the subscriber sees one (bounded)."""
    if pub.config.mode is DeliveryMode.LOSSLESS:
        assert pub.wait_for_subscribers(1, timeout_s=5.0)
        return
    for _ in range(200):
        pub.publish(topic, Status("probe", 0, "probe"))
        if sub.recv(timeout_s=0.02) is not None:
            while sub.recv(timeout_s=0.02) is not None:
                pass
            sub.stats.received = 0
            sub.stats.last_seq.clear()
            return
    raise AssertionError("subscriber never joined")


def test_lossless_round_trip_640x480_all_transports(endpoint: str) -> None:
    pub, sub = _pair(endpoint, LOSSLESS)
    with pub, sub:
        _wait_joined(pub, sub)
        n = 60
        latencies = []

        def produce() -> None:
            for i in range(n):
                pub.publish("frames", _frame(i))

        t = threading.Thread(target=produce)
        t0 = time.perf_counter()
        t.start()
        got = []
        while len(got) < n:
            item = sub.recv(timeout_s=10.0)
            assert item is not None, f"lossless stream stalled after {len(got)} frames"
            latencies.append(time.perf_counter() - t0)
            got.append(item)
        t.join()
        assert [g.message.frame_id for g in got] == list(range(n))
        assert [g.seq for g in got] == list(range(n))
        assert all(g.message.same_as(_frame(i)) for i, g in enumerate(got))
        assert sub.stats.dropped == 0 and sub.stats.malformed == 0
        # a loose sanity bound only (real figures: depthslam bench transport)
        assert latencies[-1] < 60.0


def test_realtime_slow_subscriber_gets_latest_and_counts_drops(endpoint: str) -> None:
    pub, sub = _pair(endpoint, REALTIME)
    with pub, sub:
        _wait_joined(pub, sub)
        pub.publish("frames", _frame(0, 48, 64))
        first = sub.recv(timeout_s=5.0)
        assert first is not None and first.message.frame_id == 0
        n = 200
        for i in range(1, n):  # the publisher never blocks in real-time mode
            assert pub.publish("frames", _frame(i, 48, 64))
            if i % 20 == 0:
                time.sleep(0.002)
        time.sleep(0.3)  # the subscriber is "slow": it asks only now
        got = [first]
        while (item := sub.recv(timeout_s=0.3)) is not None:
            got.append(item)
        assert len(got) == 2, "a slow real-time subscriber gets only the newest message"
        newest = got[-1]
        assert newest.message.frame_id >= n - 1 - 2 * REALTIME.realtime_hwm
        # exact accounting: every sequence number from the first delivered one is received or dropped
        assert sub.stats.received + sub.stats.dropped == newest.seq - first.seq + 1
        assert sub.stats.dropped >= sub.stats.superseded > 0


def test_realtime_latest_wins_per_topic() -> None:
    pub, sub = _pair(f"inproc://topics-{uuid.uuid4().hex}", REALTIME, topics=("frames", "status"))
    with pub, sub:
        _wait_joined(pub, sub)
        pub.publish("status", Status("capture", 1, "running"))
        pub.publish("frames", _frame(1, 8, 8))
        pub.publish("frames", _frame(2, 8, 8))
        time.sleep(0.05)
        got = [sub.recv(timeout_s=0.5), sub.recv(timeout_s=0.5)]
        assert sub.recv(timeout_s=0.05) is None
        by_topic = {g.topic: g.message for g in got if g is not None}
        assert by_topic["status"].state == "running"  # not dropped by a newer frame
        assert by_topic["frames"].frame_id == 2
        assert sub.stats.superseded == 1  # (dropped counts from the first delivered message on, none yet)


def test_lossless_back_pressure_no_loss_with_slow_subscriber() -> None:
    config = TransportConfig(mode=DeliveryMode.LOSSLESS, lossless_hwm=4)
    pub, sub = _pair("tcp://127.0.0.1:*", config)
    with pub, sub:
        _wait_joined(pub, sub)
        n = 150
        done = threading.Event()

        def produce() -> None:
            for i in range(n):
                assert pub.publish("frames", _frame(i, 120, 160))
            done.set()

        t = threading.Thread(target=produce)
        t.start()
        got = []
        while len(got) < n:
            item = sub.recv(timeout_s=10.0)
            assert item is not None
            got.append(item.message.frame_id)
            if len(got) < 40:
                time.sleep(0.005)  # slow consumer at first
        t.join(10)
        assert done.is_set()
        assert got == list(range(n))
        assert sub.stats.dropped == 0
        assert pub.stats.blocked_s > 0.0  # the producer waited instead of dropping


def test_lossless_send_timeout_reports_false() -> None:
    config = TransportConfig(mode=DeliveryMode.LOSSLESS, lossless_hwm=1, send_timeout_s=0.2)
    pub, sub = _pair("tcp://127.0.0.1:*", config)
    with pub, sub:
        _wait_joined(pub, sub)
        results = []
        for i in range(200):  # nobody reads: the pipe fills, then a publish gives up after 0.2 s
            results.append(pub.publish("frames", _frame(i, 480, 640)))
            if not results[-1]:
                break
        assert results[0] and not results[-1]
        assert pub.stats.timeouts >= 1


def test_garbage_is_counted_and_dropped(endpoint: str) -> None:
    config = TransportConfig(mode=DeliveryMode.LOSSLESS, limits=DecodeLimits(max_array_bytes=1 << 20))
    pub, sub = _pair(endpoint, config)
    with pub, sub:
        _wait_joined(pub, sub)
        rng = np.random.default_rng(0)
        pub.send_raw(b"frames", rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())
        pub.send_raw(b"frames", b"")
        pub._sock.send_multipart([b"frames"])  # one frame only
        pub._sock.send_multipart([b"frames", b"a", b"b"])  # three frames
        pub.send_raw(b"frames", _frame(0, 1024, 1024).encode())  # 3 MiB > 1 MiB array limit
        pub.publish("frames", _frame(7, 8, 8))
        item = sub.recv(timeout_s=5.0)
        assert item is not None and item.message.frame_id == 7
        assert sub.stats.malformed == 5
        assert sub.stats.last_error


def test_exact_topic_filtering() -> None:
    pub, sub = _pair(f"inproc://filter-{uuid.uuid4().hex}", LOSSLESS, topics=("frames",))
    with pub, sub:
        _wait_joined(pub, sub)
        pub.publish("frames2", _frame(1, 8, 8))
        pub.publish("depth", _frame(2, 8, 8))
        pub.publish("frames", _frame(3, 8, 8))
        item = sub.recv(timeout_s=5.0)
        assert item is not None and item.topic == "frames" and item.message.frame_id == 3
        assert sub.recv(timeout_s=0.05) is None


def test_oversized_message_disconnects_tcp_peer_without_allocation() -> None:
    config = TransportConfig(mode=DeliveryMode.REALTIME, limits=DecodeLimits(max_message_bytes=10_000))
    sub = Subscriber("tcp://127.0.0.1:*", ["frames"], config, bind=True)
    port = sub._sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
    pub = Publisher(f"tcp://127.0.0.1:{port}", REALTIME, bind=False)
    with pub, sub:
        time.sleep(0.3)
        pub.send_raw(b"frames", b"\0" * 1_000_000)
        assert sub.recv(timeout_s=0.5) is None


def test_endpoint_policy() -> None:
    assert parse_endpoint("tcp://:5555", bind=True).url == "tcp://127.0.0.1:5555"
    assert parse_endpoint("tcp://localhost:5555", bind=True).host == "localhost"
    for bad in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.4:5555"):
        with pytest.raises(EndpointError, match="only loopback"):
            parse_endpoint(bad, bind=True)
    assert parse_endpoint("tcp://0.0.0.0:5555", bind=True, allow_remote=True).host == "0.0.0.0"
    assert parse_endpoint("tcp://10.0.0.2:5555", bind=False).port == 5555  # connecting anywhere is fine
    for bad in ("5555", "udp://x:1", "tcp://127.0.0.1", "tcp://127.0.0.1:70000", "inproc://"):
        with pytest.raises(EndpointError):
            parse_endpoint(bad, bind=True)
    with pytest.raises(EndpointError, match="only loopback"):
        Publisher("tcp://0.0.0.0:*")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="high-water"):
        TransportConfig(realtime_hwm=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        Subscriber("inproc://x", "frames")
