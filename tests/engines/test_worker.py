"""The depth worker stage on real (inproc) ZeroMQ sockets, sharding, and the reorder buffer."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from engines.base import PassThroughEngine
from engines.worker import DepthWorker, DepthWorkerConfig, ReorderBuffer
from stream.messages import ColorFrame, DepthFrame, DepthKind, Status
from stream.transport import DeliveryMode, Publisher, Subscriber, TransportConfig

LOSSLESS = TransportConfig(mode=DeliveryMode.LOSSLESS)


def _rgbd(i: int, with_depth: bool = True) -> ColorFrame:
    image = np.full((12, 16, 3), i, np.uint8)
    depth = np.full((12, 16), 0.5 + i, np.float32) if with_depth else None
    return ColorFrame(frame_id=i, stamp_ns=1000 * i, image=image, depth_m=depth, source="test")


def _endpoints() -> tuple[str, str]:
    tag = uuid.uuid4().hex
    return f"inproc://frames-{tag}", f"inproc://depth-{tag}"


def test_worker_forwards_depth_in_order_and_rejects_bad_frames() -> None:
    frames_ep, depth_ep = _endpoints()
    with Publisher(frames_ep, LOSSLESS) as frames:
        worker = DepthWorker(DepthWorkerConfig(frames_ep, depth_ep, transport=LOSSLESS), PassThroughEngine())
        worker.start()
        try:
            with Subscriber(worker.pub_endpoint, ["depth"], LOSSLESS) as depth:
                assert frames.wait_for_subscribers(1, timeout_s=5.0)
                for i in range(6):
                    frames.publish("frames", _rgbd(i, with_depth=i != 2))
                frames.publish("frames", Status("x", 0, "not a frame"))
                got = [depth.recv(timeout_s=5.0) for _ in range(5)]
                assert depth.recv(timeout_s=0.2) is None
        finally:
            worker.stop()
    assert all(g is not None and g.topic == "depth" for g in got)
    messages = [g.message for g in got if g is not None]
    assert [m.frame_id for m in messages] == [0, 1, 3, 4, 5]
    for m in messages:
        assert isinstance(m, DepthFrame) and m.kind is DepthKind.METRIC
        np.testing.assert_array_equal(m.depth, np.full((12, 16), 0.5 + m.frame_id, np.float32))
    s = worker.stats
    assert (s.received, s.published, s.rejected) == (6, 5, 2)
    assert "expected a ColorFrame" in s.last_error


def test_worker_in_realtime_mode() -> None:
    realtime = TransportConfig(mode=DeliveryMode.REALTIME)
    frames_ep, depth_ep = _endpoints()
    with Publisher(frames_ep, realtime) as frames, DepthWorker(
        DepthWorkerConfig(frames_ep, depth_ep, transport=realtime, poll_s=0.02), PassThroughEngine()
    ) as worker, Subscriber(worker.pub_endpoint, ["depth"], realtime) as depth:
        got = None
        for i in range(200):  # PUB/SUB joins asynchronously: keep publishing until depth comes out
            frames.publish("frames", _rgbd(i % 50))
            got = depth.recv(timeout_s=0.02)
            if got is not None:
                break
    assert got is not None and isinstance(got.message, DepthFrame)
    np.testing.assert_array_equal(got.message.depth, np.full((12, 16), 0.5 + got.message.frame_id, np.float32))
    assert worker.stats.published >= 1 and worker.stats.rejected == 0


def test_worker_runs_a_network_engine(tmp_path) -> None:
    pytest.importorskip("torch", reason="the network engine is built with PyTorch")
    from engines.config import Backend, EngineConfig, InputSizePolicy
    from engines.hub import HubConfig
    from engines.select import create_engine

    engine = create_engine(EngineConfig(model="test-tiny", backend=Backend.TORCH_CPU, random_weights=True,
                                        size=InputSizePolicy(target_px=28),
                                        hub=HubConfig(cache_dir=tmp_path, offline=True)), progress=None)
    frames_ep, depth_ep = _endpoints()
    with Publisher(frames_ep, LOSSLESS) as frames, DepthWorker(
        DepthWorkerConfig(frames_ep, depth_ep, transport=LOSSLESS), engine
    ) as worker, Subscriber(worker.pub_endpoint, ["depth"], LOSSLESS) as depth:
        assert frames.wait_for_subscribers(1, timeout_s=5.0)
        frames.publish("frames", _rgbd(7, with_depth=False))
        got = depth.recv(timeout_s=10.0)
    assert got is not None and isinstance(got.message, DepthFrame)
    assert got.message.frame_id == 7 and got.message.depth.shape == (12, 16)
    assert got.message.kind is DepthKind.INVERSE_RELATIVE and got.message.model.startswith("test-tiny")


def test_two_sharded_workers_and_reorder() -> None:
    frames_ep, depth_ep = _endpoints()
    with Publisher(frames_ep, LOSSLESS) as frames, Subscriber(depth_ep, ["depth"], LOSSLESS, bind=True) as depth:
        workers = [
            DepthWorker(DepthWorkerConfig(frames_ep, depth_ep, transport=LOSSLESS, pub_bind=False, shard_index=k,
                                          shard_count=2), PassThroughEngine())
            for k in range(2)
        ]
        for w in workers:
            w.start()
        try:
            assert frames.wait_for_subscribers(2, timeout_s=5.0)
            for i in range(8):
                frames.publish("frames", _rgbd(i))
            arrivals = [depth.recv(timeout_s=5.0) for _ in range(8)]
            deadline = time.monotonic() + 10.0  # each worker also sees (and skips) the other's frames
            while any(w.stats.received < 8 for w in workers) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            for w in workers:
                w.stop()
    reorder = ReorderBuffer(shard_count=2)
    ordered: list[DepthFrame] = []
    for item in arrivals:
        assert item is not None
        ordered += reorder.push(item.message)  # type: ignore[arg-type]
    ordered += reorder.flush()
    assert [f.frame_id for f in ordered] == list(range(8))
    assert [(w.stats.published, w.stats.other_shard) for w in workers] == [(4, 4), (4, 4)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_engine_failure_surfaces_on_stop() -> None:
    class Broken(PassThroughEngine):
        def infer(self, frame: ColorFrame) -> DepthFrame:
            raise MemoryError("out of device memory")

    frames_ep, depth_ep = _endpoints()
    with Publisher(frames_ep, LOSSLESS) as frames:
        worker = DepthWorker(DepthWorkerConfig(frames_ep, depth_ep, transport=LOSSLESS), Broken())
        worker.start()
        assert frames.wait_for_subscribers(1, timeout_s=5.0)
        frames.publish("frames", _rgbd(0))
        for _ in range(100):
            if not worker.running:
                break
            time.sleep(0.05)
        assert not worker.running
        with pytest.raises(RuntimeError, match="out of device memory"):
            worker.stop()


def _depth(fid: int) -> DepthFrame:
    return DepthFrame(frame_id=fid, stamp_ns=fid, depth=np.zeros((1, 1), np.float32), kind=DepthKind.METRIC,
                      intrinsics=None)


def test_reorder_buffer_rules() -> None:
    buf = ReorderBuffer(shard_count=2, max_pending=3)
    assert buf.push(_depth(1)) == []  # shard 0 has not reported yet: frame 0 may still come
    assert [f.frame_id for f in buf.push(_depth(0))] == [0]  # 1 waits: shard 0 has only reached 0
    assert [f.frame_id for f in buf.push(_depth(2))] == [1]
    assert buf.push(_depth(0)) == [] and buf.stats.late == 1  # older than what was released
    # shard 1 goes silent (drops): the buffer releases once more than max_pending frames wait
    for fid in (4, 6):
        assert buf.push(_depth(fid)) == []
    assert [f.frame_id for f in buf.push(_depth(8))] == [2]  # 2, 4, 6, 8 waiting > max_pending
    assert buf.stats.forced == 1
    assert [f.frame_id for f in buf.flush()] == [4, 6, 8]
    assert buf.stats.released == 6
    single = ReorderBuffer(shard_count=1)
    assert [f.frame_id for f in single.push(_depth(5))] == [5]
    with pytest.raises(ValueError, match="shard_count"):
        ReorderBuffer(0)
    with pytest.raises(ValueError, match="shard_index"):
        DepthWorkerConfig("inproc://a", "inproc://b", shard_index=2, shard_count=2)
