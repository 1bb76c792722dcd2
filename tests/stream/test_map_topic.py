"""Map topic (clone pattern) on real loopback sockets: late joiners, slow subscribers, gaps, garbage, removal."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream.clock import ManualClock
from stream.map_topic import (
    HEARTBEAT_TOPIC,
    MAP_TOPIC,
    POSE_TOPIC,
    MapClient,
    MapPublisher,
    MapSeqError,
    MapState,
    MapSyncError,
    MapTopicConfig,
    SyncPoint,
    heartbeat_message,
)
from stream.messages import MapUpdate, MeshBlock, PoseUpdate, TrackingState
from stream.transport import EndpointError, Publisher
from tools.map_client_example import read_ply, write_ply

REPO = Path(__file__).resolve().parents[2]
ANY = "tcp://127.0.0.1:*"


def _block(key: tuple[int, int, int], rng: np.random.Generator, n_vertices: int = 12) -> MeshBlock:
    """A random small mesh inside block ``key`` (0.1 m blocks): n vertices, 2n faces."""
    vertices = (np.asarray(key, np.float32) + rng.random((n_vertices, 3), np.float32)) * np.float32(0.1)
    faces = rng.integers(0, n_vertices, (2 * n_vertices, 3), dtype=np.int32)
    colors = rng.integers(0, 256, (n_vertices, 3), dtype=np.uint8)
    return MeshBlock(key, vertices, faces, colors)


def _empty(key: tuple[int, int, int]) -> MeshBlock:
    return MeshBlock(key, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))


def _random_update_blocks(rng: np.random.Generator, n_vertices: int = 12) -> list[MeshBlock]:
    """1..3 distinct blocks of a 4x4x2 grid."""
    keys = {(int(rng.integers(0, 4)), int(rng.integers(0, 4)), int(rng.integers(0, 2))) for _ in range(3)}
    return [_block(k, rng, n_vertices) for k in sorted(keys)]


def _pose(frame_id: int, keyframe: bool) -> PoseUpdate:
    T = np.eye(4)
    T[:3, 3] = (0.01 * frame_id, -0.02 * frame_id, 0.5)
    return PoseUpdate(frame_id, frame_id * 33_000_000, T, TrackingState.TRACKING, is_keyframe=keyframe)


def _wait(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ----------------------------------------------------------------------------------------------------
# MapState and config (no sockets)
# ----------------------------------------------------------------------------------------------------


def test_map_state_applies_in_order_merges_and_removes_blocks() -> None:
    rng = np.random.default_rng(0)
    a, b = _block((0, 0, 0), rng, 3), _block((1, 0, -1), rng, 4)
    state = MapState(voxel_size_m=0.01)
    state.apply(MapUpdate(1, 10, 1, (b, a), voxel_size_m=0.01))
    assert state.map_seq == 1 and state.block_count == 2
    with pytest.raises(MapSeqError, match="map_seq 3 does not follow the map's 1"):
        state.apply(MapUpdate(3, 30, 3, (a,)))
    mesh = state.merged_mesh()
    # ground truth: blocks in ascending key order ((0,0,0) before (1,0,-1)), faces of b offset by a's 3 vertices
    np.testing.assert_array_equal(mesh.vertices, np.concatenate([a.vertices, b.vertices]))
    np.testing.assert_array_equal(mesh.colors, np.concatenate([a.colors, b.colors]))
    np.testing.assert_array_equal(mesh.faces, np.concatenate([a.faces, b.faces + 3]))
    assert mesh.faces.dtype == np.int32 and mesh.vertices.dtype == np.float32 and mesh.colors.dtype == np.uint8

    state.apply(MapUpdate(2, 20, 2, (_empty((0, 0, 0)),)))  # removal
    assert set(state.blocks()) == {(1, 0, -1)}
    np.testing.assert_array_equal(state.merged_mesh().faces, b.faces)

    state.apply_pose(_pose(5, keyframe=True))
    state.apply_pose(_pose(6, keyframe=False))
    snap = state.snapshot()
    assert snap.is_snapshot and snap.map_seq == 2 and [blk.key for blk in snap.blocks] == [(1, 0, -1)]
    copy = MapState()
    copy.restore(MapUpdate.decode(snap.encode()), state.keyframes, state.latest_pose)
    assert copy.same_as(state) and state.same_as(copy)
    assert copy.merged_mesh().digest() == state.merged_mesh().digest()
    copy.apply_pose(_pose(7, keyframe=True))
    assert not copy.same_as(state)
    with pytest.raises(ValueError, match="is_snapshot=True"):
        copy.restore(MapUpdate(1, 0, 0, ()), [], None)


def test_config_and_endpoint_validation() -> None:
    with pytest.raises(ValueError, match="publisher_hwm"):
        MapTopicConfig(publisher_hwm=0)
    with pytest.raises(ValueError, match="snapshot_timeout_s"):
        MapTopicConfig(snapshot_timeout_s=float("nan"))
    with pytest.raises(ValueError, match="heartbeat_interval_s"):
        MapTopicConfig(heartbeat_interval_s=-1.0)
    with pytest.raises(EndpointError, match="only loopback"):
        MapPublisher(ANY, "tcp://0.0.0.0:*")
    with MapPublisher(ANY, ANY) as pub:
        with pytest.raises(ValueError, match="appears twice"):
            pub.publish_blocks([_block((0, 0, 0), np.random.default_rng(1))] * 2, 0, 0)
        with pytest.raises(TypeError, match=r"blocks\[0\] must be a MeshBlock"):
            pub.publish_blocks(["nope"], 0, 0)  # type: ignore[list-item]
        assert pub.state.map_seq == 0


def test_ply_round_trip_is_exact(tmp_path: Path) -> None:
    state = MapState()
    rng = np.random.default_rng(2)
    state.apply(MapUpdate(1, 0, 0, tuple(_block((i, 0, 0), rng, 5) for i in range(3))))
    write_ply(tmp_path / "m.ply", state.merged_mesh())
    assert read_ply(tmp_path / "m.ply").same_as(state.merged_mesh())


# ----------------------------------------------------------------------------------------------------
# (1) a late-joining subscriber process ends with the publisher's mesh
# ----------------------------------------------------------------------------------------------------


def test_subscriber_process_joining_mid_run_ends_with_identical_mesh(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ply = tmp_path / "client.ply"
    with MapPublisher(ANY, ANY, MapTopicConfig(heartbeat_interval_s=0.2), voxel_size_m=0.02) as pub:
        frame = 0

        def step() -> None:
            nonlocal frame
            frame += 1
            pub.publish_pose(_pose(frame, keyframe=frame % 5 == 0))
            # one update per step; now and then a block disappears
            removal = frame % 7 == 0
            blocks = [_empty(sorted(pub.state.blocks())[0])] if removal else _random_update_blocks(rng)
            pub.publish_blocks(blocks, frame, frame * 33_000_000)

        while pub.state.map_seq < 20:
            step()
        assert pub.state.map_seq == 20
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.map_client_example", "--updates", pub.updates_endpoint,
             "--snapshot", pub.snapshot_endpoint, "--out", str(ply), "--until-seq", "60", "--timeout-s", "20",
             "--events", "--json"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            first = proc.stdout.readline()  # the client's first "synced" event (or EOF if it failed)
            assert first, f"client exited early: {proc.stderr.read()}"
            joined = json.loads(first)
            while pub.state.map_seq < 60:
                step()
                time.sleep(0.005)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        final = json.loads(out.strip().splitlines()[-1])
        expected = pub.state.merged_mesh()
        # the process joined mid-run: its first snapshot was taken at update 20 (the publisher paused there)
        assert joined["event"] == "synced" and joined["snapshot_map_seqs"][0] == 20
        assert final["map_seq"] == pub.state.map_seq
        assert final["updates_applied"] > 0  # it followed live updates, not just one late snapshot
        received = read_ply(ply)
        np.testing.assert_array_equal(received.vertices, expected.vertices)
        np.testing.assert_array_equal(received.faces, expected.faces)
        np.testing.assert_array_equal(received.colors, expected.colors)
        assert final["digest"] == expected.digest()
        assert final["keyframes"] == len(pub.state.keyframes) == frame // 5
        assert final["blocks"] == pub.state.block_count


# ----------------------------------------------------------------------------------------------------
# (2) a slow subscriber never slows the publisher; it resyncs and ends consistent
# ----------------------------------------------------------------------------------------------------


def test_slow_subscriber_does_not_block_publisher_and_ends_consistent_after_resyncs() -> None:
    # small high-water marks and ~0.3 MB updates: the slow client's pipe and socket buffers fill quickly
    config = MapTopicConfig(publisher_hwm=2, client_hwm=2, heartbeat_interval_s=0.1)
    rng = np.random.default_rng(4)
    with MapPublisher(ANY, ANY, config) as pub, MapClient(pub.updates_endpoint, pub.snapshot_endpoint, config) as cli:
        assert cli.run_until(lambda s: cli.synced, timeout_s=10.0)
        publishing_done = threading.Event()
        consistent = threading.Event()
        progress_at_end: list[int] = []

        def slow_loop() -> None:
            while not consistent.is_set():
                cli.poll(0.0, max_messages=1)  # one message per 20 ms: far slower than the publisher
                if publishing_done.is_set() and cli.synced and cli.state.same_as(pub.state):
                    consistent.set()
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=slow_loop, daemon=True)
        thread.start()
        durations = []
        for i in range(200):
            blocks = [_block(k, rng, 8000) for k in [(i % 4, 0, 0), (i % 4, 1, 0)]]
            t0 = time.perf_counter()
            pub.publish_blocks(blocks, i, i)
            durations.append(time.perf_counter() - t0)
            if i % 20 == 0:
                pub.publish_pose(_pose(i, keyframe=True))
        progress_at_end.append(cli.stats.updates_applied + len(cli.stats.snapshot_map_seqs))
        publishing_done.set()
        thread.join(timeout=25.0)  # hang guard only: a publisher that waited would never have got here
        assert not thread.is_alive(), f"slow client never became consistent: {cli.stats}"
        print(f"publish_blocks: median {np.median(durations) * 1e3:.2f} ms, max {max(durations) * 1e3:.2f} ms; "
              f"client stats {cli.stats}")
        # the publisher finished all 200 while the client had handled only a few: it never waited for it
        assert pub.stats.updates == 200 and progress_at_end[0] < 100
        # ... because PUB dropped for the slow client, which noticed and resynced
        assert cli.transport_stats.dropped > 0
        assert cli.stats.resyncs > 0 and cli.stats.gaps > 0
        assert cli.state.same_as(pub.state)
        assert cli.state.merged_mesh().same_as(pub.state.merged_mesh())
        assert len(cli.state.keyframes) == 10


# ----------------------------------------------------------------------------------------------------
# (3) gap -> resync, with injected gaps
# ----------------------------------------------------------------------------------------------------


def test_injected_gaps_trigger_resync() -> None:
    """The client reads updates from a test-controlled publisher that skips messages; snapshots come from
    a MapPublisher holding the true map."""
    config = MapTopicConfig(heartbeat_interval_s=None, snapshot_timeout_s=2.0)
    rng = np.random.default_rng(5)
    with MapPublisher(ANY, ANY, config) as truth, Publisher(ANY, config.publisher_transport()) as wire, \
            MapClient(wire.endpoint, truth.snapshot_endpoint, config) as cli:
        assert cli.run_until(lambda s: cli.synced, timeout_s=10.0)
        assert cli.stats.snapshot_map_seqs == [0]
        # slow-joiner: send harmless heartbeats (at the client's own map_seq) until one arrives
        for _ in range(400):
            wire.publish(HEARTBEAT_TOPIC, heartbeat_message(truth.sync_point(), 0))
            if cli.poll(0.01) and cli.transport_stats.received:
                break
        assert cli.transport_stats.received > 0 and cli.stats.gaps == 0

        # map_seq gap: update 5 never reaches the client
        for i in range(1, 11):
            update = truth.publish_blocks(_random_update_blocks(rng), i, i)
            if i != 5:
                wire.publish(MAP_TOPIC, update)
        assert cli.run_until(lambda s: cli.synced and s.same_as(truth.state), timeout_s=10.0)
        assert cli.stats.gaps == 1 and cli.stats.resyncs == 1
        assert cli.stats.snapshot_map_seqs == [0, 10]
        assert cli.stats.updates_applied == 4  # 1..4 live; 6..10 were covered by the snapshot (stale)

        # pose gap: pose 1 of 0..2 is lost
        poses = [_pose(100 + k, keyframe=True) for k in range(3)]
        for k, pose in enumerate(poses):
            truth.publish_pose(pose)
            if k != 1:
                wire.send_raw(POSE_TOPIC.encode(), pose.encode(seq=k))
        assert cli.run_until(lambda s: cli.stats.resyncs == 2 and cli.synced, timeout_s=10.0)
        assert cli.state.same_as(truth.state) and len(cli.state.keyframes) == 3
        assert cli.stats.gaps == 2

        # tail loss: update 11 is lost and nothing follows it but a heartbeat
        truth.publish_blocks(_random_update_blocks(rng), 11, 11)
        wire.publish(HEARTBEAT_TOPIC, heartbeat_message(truth.sync_point(), 0))
        assert cli.run_until(lambda s: cli.stats.resyncs == 3 and cli.synced, timeout_s=10.0)
        assert cli.state.map_seq == 11 and cli.state.same_as(truth.state) and cli.stats.gaps == 3

        # a heartbeat from another publisher session (a restart) also resyncs
        point = truth.sync_point()
        wire.publish(HEARTBEAT_TOPIC, heartbeat_message(SyncPoint("restarted", point.map_seq, point.pose_seq), 0))
        assert cli.run_until(lambda s: cli.stats.resyncs == 4 and cli.synced, timeout_s=10.0)
        assert cli.stats.session_changes == 1 and cli.state.same_as(truth.state)


def test_heartbeats_follow_the_injected_clock() -> None:
    clock = ManualClock()
    with MapPublisher(ANY, ANY, MapTopicConfig(heartbeat_interval_s=1.0), clock=clock) as pub:
        assert _wait(lambda: pub.stats.heartbeats == 1)
        time.sleep(0.1)  # real time passes, the injected clock does not: no new heartbeat is due
        assert pub.stats.heartbeats == 1
        clock.advance_s(1.0)
        assert _wait(lambda: pub.stats.heartbeats == 2)


# ----------------------------------------------------------------------------------------------------
# (4) hostile snapshot requests and replies
# ----------------------------------------------------------------------------------------------------


def test_garbage_snapshot_requests_get_error_replies_and_service_keeps_working() -> None:
    config = MapTopicConfig(heartbeat_interval_s=None, max_request_bytes=64)
    ctx = zmq.Context.instance()
    with MapPublisher(ANY, ANY, config) as pub:
        pub.publish_blocks([_block((0, 0, 0), np.random.default_rng(6))], 1, 1)
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 5000)
        req.connect(pub.snapshot_endpoint)
        try:
            req.send(b"\x00\xffgarbage")
            reply = req.recv_multipart()
            assert reply[0] == b"error" and b"bad snapshot request" in reply[1]
            req.send_multipart([b"snapshot", b"extra"])
            assert req.recv_multipart()[0] == b"error"
            req.send(b"snapshot")
            reply = req.recv_multipart()
            assert reply[0] == b"snapshot" and len(reply) == 4  # header, map, no latest pose, no keyframes
            assert MapUpdate.decode(reply[2]).map_seq == 1
        finally:
            req.close()
        # an oversized request is cut off by ZeroMQ (no reply), and the service is still alive afterwards
        big = ctx.socket(zmq.REQ)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(pub.snapshot_endpoint)
        big.send(b"snapshot" * 100)
        assert big.poll(300, zmq.POLLIN) == 0
        big.close()
        assert pub.stats.bad_requests == 2 and pub.serving
        with MapClient(pub.updates_endpoint, pub.snapshot_endpoint, config) as cli:
            assert cli.run_until(lambda s: s.same_as(pub.state), timeout_s=10.0)


def test_client_rejects_malformed_snapshot_replies_and_gives_up_cleanly() -> None:
    config = MapTopicConfig(heartbeat_interval_s=None, snapshot_timeout_s=0.5, snapshot_attempts=3)
    ctx = zmq.Context.instance()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(ANY)
    endpoint = rep.getsockopt_string(zmq.LAST_ENDPOINT)
    replies = [[b"snapshot", b"\xc1garbage", b"", b""], [b"error", b"busy"], [b"nonsense"]]

    def serve() -> None:
        for reply in replies:
            if rep.poll(5000, zmq.POLLIN):
                rep.recv_multipart()
                rep.send_multipart(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with Publisher(ANY, config.publisher_transport()) as wire, MapClient(wire.endpoint, endpoint, config) as cli:
        with pytest.raises(MapSyncError, match="gave up after 3 snapshot requests"):
            cli.run_until(lambda s: cli.synced, timeout_s=10.0)
        assert cli.stats.bad_replies == 3 and cli.stats.snapshots == 0 and cli.state.map_seq == 0
    thread.join(timeout=5.0)
    rep.close()


# ----------------------------------------------------------------------------------------------------
# (5) block removal reaches subscribers
# ----------------------------------------------------------------------------------------------------


def test_block_removal_reaches_client() -> None:
    config = MapTopicConfig(heartbeat_interval_s=0.1)
    rng = np.random.default_rng(7)
    a, b, c = (_block(k, rng) for k in [(0, 0, 0), (0, 1, 0), (2, 0, 0)])
    with MapPublisher(ANY, ANY, config) as pub, MapClient(pub.updates_endpoint, pub.snapshot_endpoint, config) as cli:
        pub.publish_blocks([a, b, c], 1, 1)
        assert cli.run_until(lambda s: s.map_seq == 1 and cli.synced, timeout_s=10.0)
        assert set(cli.state.blocks()) == {a.key, b.key, c.key}
        pub.publish_blocks([_empty(b.key)], 2, 2)
        assert cli.run_until(lambda s: s.map_seq == 2, timeout_s=10.0)
        assert set(cli.state.blocks()) == {a.key, c.key}
        mesh = cli.state.merged_mesh()
        np.testing.assert_array_equal(mesh.vertices, np.concatenate([a.vertices, c.vertices]))
        np.testing.assert_array_equal(mesh.faces, np.concatenate([a.faces, c.faces + a.vertices.shape[0]]))
        assert cli.state.same_as(pub.state)
