"""Node pieces: a slow sink never blocks the mapping stage, and loses no mesh update."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from fusion.mapper import MapStep
from stream.messages import DepthFrame, DepthKind, MeshBlock, PoseUpdate, TrackingState
from stream.node import ThreadedSink


class SlowSink:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.steps: list[int] = []
        self.meshes: list[int] = []
        self.closed = False

    def on_step(self, frame: DepthFrame, step: MapStep) -> None:
        self.release.wait(10.0)
        self.steps.append(frame.frame_id)

    def on_mesh(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> None:
        self.meshes.append(frame_id)

    def close(self) -> None:
        self.closed = True


def _frame(i: int) -> tuple[DepthFrame, MapStep]:
    frame = DepthFrame(i, i, np.ones((4, 4), np.float32), DepthKind.METRIC, None)
    pose = PoseUpdate(i, i, np.eye(4), TrackingState.TRACKING)
    return frame, MapStep(pose, True, (), 0, 0, {})


def test_threaded_sink_drops_steps_not_meshes() -> None:
    inner = SlowSink()
    sink = ThreadedSink(inner, max_pending=3)
    block = MeshBlock((0, 0, 0), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))
    for i in range(20):  # the inner sink is stuck: these calls must return at once
        sink.on_step(*_frame(i))
        sink.on_mesh([block], i, i)
    assert sink.dropped_steps >= 20 - 3 - 1
    inner.release.set()
    sink.close()
    assert inner.closed
    assert inner.meshes == list(range(20))  # every mesh update arrives, in order
    assert len(inner.steps) + sink.dropped_steps == 20
    assert inner.steps == sorted(inner.steps)
