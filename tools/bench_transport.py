"""``depthslam bench transport``: one-way latency and throughput of 640x480 colour frames over ZeroMQ.

Side by side on the same socket types: a bare pyzmq + msgpack publish of the raw frame (the peer) and
depthslam's Publisher/Subscriber with its validated wire format, over ``inproc://``, ``ipc://`` and
``tcp://127.0.0.1``. Latency is measured one frame at a time (send, wait for arrival) so it is not queueing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import msgpack
import numpy as np
import zmq

from stream.messages import ColorFrame
from stream.transport import DeliveryMode, Publisher, Subscriber, TransportConfig


@dataclass(frozen=True)
class TransportFigures:
    """Figures for one transport."""

    transport: str
    ours_latency_median_ms: float
    ours_latency_p95_ms: float
    bare_latency_median_ms: float
    bare_latency_p95_ms: float
    ours_jpeg90_latency_median_ms: float
    ours_throughput_fps: float
    bare_throughput_fps: float
    overhead_ratio: float
    """ours / bare median latency."""


def _endpoint(kind: str, tmp: str) -> str:
    return {"inproc": f"inproc://bench-{uuid.uuid4().hex}", "ipc": f"ipc://{tmp}/{uuid.uuid4().hex}.sock",
            "tcp": "tcp://127.0.0.1:*"}[kind]


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _time_pairs(send: Callable[[int], None], recv: Callable[[], int], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        send(i)
        got = recv()
        out.append((time.perf_counter() - t0) * 1000.0)
        if got != i:
            raise RuntimeError(f"benchmark lost frame {i} (got {got})")
    return out


def _ours(kind: str, tmp: str, frame: ColorFrame, n: int, jpeg: int | None) -> tuple[list[float], float]:
    cfg = TransportConfig(mode=DeliveryMode.LOSSLESS)
    with Publisher(_endpoint(kind, tmp), cfg) as pub, Subscriber(pub.endpoint, ["frames"], cfg) as sub:
        if not pub.wait_for_subscribers(1, 5.0):
            raise RuntimeError("subscriber did not join")
        frames = [ColorFrame(i, i, frame.image) for i in range(n)]

        def recv() -> int:
            item = sub.recv(5.0)
            if item is None:
                raise RuntimeError("timed out")
            return item.message.frame_id

        lat = _time_pairs(lambda i: pub.publish("frames", frames[i], jpeg_quality=jpeg), recv, n)
        t0 = time.perf_counter()
        for i in range(n):
            pub.publish("frames", frames[i], jpeg_quality=jpeg)
            if i >= 8:
                recv()
        for _ in range(min(8, n)):
            recv()
        fps = n / (time.perf_counter() - t0)
    return lat, fps


def _bare(kind: str, tmp: str, frame: ColorFrame, n: int) -> tuple[list[float], float]:
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.bind(_endpoint(kind, tmp))
    sub.setsockopt(zmq.SUBSCRIBE, b"frames")
    sub.connect(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    pub.recv()  # subscription arrived
    raw = frame.image.tobytes()

    def send(i: int) -> None:
        pub.send_multipart([b"frames", msgpack.packb({"id": i, "shape": [480, 640, 3], "data": raw})])

    def recv() -> int:
        return msgpack.unpackb(sub.recv_multipart()[1])["id"]

    try:
        lat = _time_pairs(send, recv, n)
        t0 = time.perf_counter()
        for i in range(n):
            send(i)
            if i >= 8:
                recv()
        for _ in range(min(8, n)):
            recv()
        fps = n / (time.perf_counter() - t0)
    finally:
        pub.close(0)
        sub.close(0)
    return lat, fps


def run(transports: list[str], n: int) -> list[TransportFigures]:
    rng = np.random.default_rng(0)
    frame = ColorFrame(0, 0, rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in transports:
            bare, bare_fps = _bare(kind, tmp, frame, n)
            ours, ours_fps = _ours(kind, tmp, frame, n, None)
            jpeg, _ = _ours(kind, tmp, frame, max(10, n // 4), 90)
            results.append(TransportFigures(
                kind, statistics.median(ours), _p(ours, 95), statistics.median(bare), _p(bare, 95),
                statistics.median(jpeg), ours_fps, bare_fps, statistics.median(ours) / statistics.median(bare),
            ))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depthslam bench transport", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per measurement")
    parser.add_argument("--transports", default="inproc,ipc,tcp")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.transports.split(","), args.frames)
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=2))
        return 0
    print("640x480 RGB frame, one-way latency (send -> decoded at subscriber), ms")
    print(f"{'transport':<10}{'ours med':>10}{'ours p95':>10}{'bare med':>10}{'bare p95':>10}{'ratio':>8}"
          f"{'jpeg90':>9}{'ours fps':>10}{'bare fps':>10}")
    for f in figures:
        print(f"{f.transport:<10}{f.ours_latency_median_ms:>10.3f}{f.ours_latency_p95_ms:>10.3f}"
              f"{f.bare_latency_median_ms:>10.3f}{f.bare_latency_p95_ms:>10.3f}{f.overhead_ratio:>8.2f}"
              f"{f.ours_jpeg90_latency_median_ms:>9.2f}{f.ours_throughput_fps:>10.0f}{f.bare_throughput_fps:>10.0f}")
    return 0
