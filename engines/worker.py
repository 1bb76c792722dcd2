"""The depth worker stage: ColorFrames in on topic ``frames``, DepthFrames out on topic ``depth``.

The same stage runs in a thread (``inproc://`` endpoints sharing one ZeroMQ context) or in its own
process (``tcp://``/``ipc://``, see ``depthslam depth``). Several workers can share the load: worker
``k`` of ``n`` (``shard_index``/``shard_count``) handles the frames with ``frame_id % n == k``; they then
publish into one bound subscriber (``pub_bind=False``), and the consumer puts the frames back in order
with :class:`ReorderBuffer`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import zmq

from engines.base import DepthEngine
from engines.errors import EngineInputError
from stream.messages import ColorFrame, DepthFrame
from stream.transport import DeliveryMode, Publisher, Subscriber, TransportConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthWorkerConfig:
    """Endpoints, topics and sharding of one depth worker."""

    sub_endpoint: str
    """Endpoint the colour frames are published on (the worker connects to it)."""
    pub_endpoint: str
    """Endpoint the depth frames go to (bound unless ``pub_bind`` is False)."""
    in_topic: str = "frames"
    """Topic of incoming :class:`ColorFrame` messages."""
    out_topic: str = "depth"
    """Topic of outgoing :class:`DepthFrame` messages."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """Delivery mode (real-time or lossless) and limits, for both sockets."""
    pub_bind: bool = True
    """Bind the depth publisher (one worker); False connects it to a bound subscriber (several workers)."""
    poll_s: float = 0.1
    """Longest wait for a frame before checking for stop, seconds."""
    lossless_wait_s: float = 10.0
    """Lossless mode: before the first depth frame, wait this long for a subscriber (else it would be lost)."""
    shard_index: int = 0
    """This worker handles frames with ``frame_id % shard_count == shard_index``."""
    shard_count: int = 1
    """Number of workers sharing the stream."""

    def __post_init__(self) -> None:
        if not self.in_topic or not self.out_topic:
            raise ValueError("DepthWorkerConfig topics must be non-empty")
        if not self.poll_s > 0:
            raise ValueError(f"DepthWorkerConfig.poll_s must be positive, got {self.poll_s}")
        if self.lossless_wait_s < 0:
            raise ValueError(f"DepthWorkerConfig.lossless_wait_s must be >= 0, got {self.lossless_wait_s}")
        if self.shard_count < 1 or not 0 <= self.shard_index < self.shard_count:
            raise ValueError(
                f"DepthWorkerConfig: need 0 <= shard_index < shard_count, got {self.shard_index}/{self.shard_count}"
            )


@dataclass
class DepthWorkerStats:
    """Counters of one worker (read them after :meth:`DepthWorker.stop`, or approximately while running)."""

    received: int = 0
    """Colour frames received."""
    published: int = 0
    """Depth frames published."""
    other_shard: int = 0
    """Frames left to the other workers."""
    rejected: int = 0
    """Frames the engine refused (bad input, e.g. no depth for passthrough) or non-colour messages."""
    send_failures: int = 0
    """Lossless publishes that timed out."""
    last_error: str = ""
    """Text of the last rejection."""


class DepthWorker:
    """Runs a :class:`DepthEngine` between a frame subscriber and a depth publisher, in its own thread."""

    def __init__(self, config: DepthWorkerConfig, engine: DepthEngine, *, context: zmq.Context | None = None) -> None:
        self.config = config
        self.engine = engine
        self.stats = DepthWorkerStats()
        self._context = context
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: Publisher | None = None
        self._subscriber: Subscriber | None = None
        self._failure: BaseException | None = None

    @property
    def pub_endpoint(self) -> str:
        """The depth publisher's actual endpoint (resolves ``tcp://127.0.0.1:*``); after :meth:`start`."""
        if self._publisher is None:
            raise RuntimeError("DepthWorker is not started")
        return self._publisher.endpoint

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the sockets (the publisher first, so subscribers can connect) and start the thread."""
        if self._thread is not None:
            raise RuntimeError("DepthWorker already started")
        cfg = self.config
        self._publisher = Publisher(cfg.pub_endpoint, cfg.transport, bind=cfg.pub_bind, context=self._context)
        try:
            self._subscriber = Subscriber(cfg.sub_endpoint, [cfg.in_topic], cfg.transport, context=self._context)
        except (zmq.ZMQError, ValueError):
            self._publisher.close()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"depth-worker-{self.engine.name}", daemon=True)
        self._thread.start()
        log.info("depth worker %s: %s -> %s (%s of %s)", self.engine.name, cfg.sub_endpoint, self.pub_endpoint,
                 cfg.shard_index, cfg.shard_count)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, close the sockets; re-raises a failure of the worker thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"depth worker did not stop within {timeout_s} s (inference still running?)")
        for sock in (self._subscriber, self._publisher):
            if sock is not None:
                sock.close()
        self._subscriber = self._publisher = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"depth worker {self.engine.name} failed: {failure}") from failure

    def __enter__(self) -> DepthWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def process(self, message: object) -> DepthFrame | None:
        """Depth for one received message, or None when it is not for this worker or is rejected."""
        if not isinstance(message, ColorFrame):
            self._reject(f"expected a ColorFrame on {self.config.in_topic!r}, got {type(message).__name__}")
            return None
        self.stats.received += 1
        if message.frame_id % self.config.shard_count != self.config.shard_index:
            self.stats.other_shard += 1
            return None
        try:
            return self.engine.infer(message)
        except EngineInputError as exc:
            self._reject(f"frame {message.frame_id}: {exc}")
            return None

    def _reject(self, text: str) -> None:
        self.stats.rejected += 1
        self.stats.last_error = text
        log.warning("depth worker %s: %s", self.engine.name, text)

    def _run(self) -> None:
        subscriber, publisher = self._subscriber, self._publisher
        if subscriber is None or publisher is None:
            raise RuntimeError("DepthWorker sockets are not open")
        must_wait = self.config.transport.mode is DeliveryMode.LOSSLESS and self.config.lossless_wait_s > 0
        try:
            while not self._stop.is_set():
                received = subscriber.recv(self.config.poll_s)
                if received is None:
                    continue
                depth = self.process(received.message)
                if depth is None:
                    continue
                if must_wait:
                    must_wait = False
                    if not publisher.wait_for_subscribers(1, self.config.lossless_wait_s):
                        log.warning("depth worker %s: no subscriber on %s after %.1f s; publishing anyway",
                                    self.engine.name, publisher.endpoint, self.config.lossless_wait_s)
                if publisher.publish(self.config.out_topic, depth):
                    self.stats.published += 1
                else:
                    self.stats.send_failures += 1
        except BaseException as exc:  # kept for stop() to re-raise in the owner's thread
            self._failure = exc
            raise


@dataclass
class ReorderStats:
    """Counters of a :class:`ReorderBuffer`."""

    released: int = 0
    """Frames handed on, in order."""
    late: int = 0
    """Frames that arrived after a newer frame had been released (dropped)."""
    forced: int = 0
    """Releases forced by a full buffer (a shard fell behind or dropped frames)."""


class ReorderBuffer:
    """Puts depth frames from ``shard_count`` sharded workers back into ``frame_id`` order.

    A frame is released once every shard has delivered a frame at least as new (so nothing older can
    still come), or when more than ``max_pending`` frames wait (a slow or dropping shard must not stall the
    stream). Frames older than the last released one are dropped and counted as late.
    """

    def __init__(self, shard_count: int, max_pending: int = 8) -> None:
        if shard_count < 1:
            raise ValueError(f"ReorderBuffer.shard_count must be >= 1, got {shard_count}")
        if max_pending < 1:
            raise ValueError(f"ReorderBuffer.max_pending must be >= 1, got {max_pending}")
        self.shard_count = shard_count
        self.max_pending = max_pending
        self.stats = ReorderStats()
        self._pending: dict[int, DepthFrame] = {}
        self._newest_by_shard: dict[int, int] = {}
        self._last_released: int | None = None

    def push(self, frame: DepthFrame) -> list[DepthFrame]:
        """Add one frame; returns the frames that can now be handed on, in increasing ``frame_id``."""
        fid = frame.frame_id
        if (self._last_released is not None and fid <= self._last_released) or fid in self._pending:
            self.stats.late += 1
            return []
        self._pending[fid] = frame
        shard = fid % self.shard_count
        self._newest_by_shard[shard] = max(fid, self._newest_by_shard.get(shard, fid))
        out: list[DepthFrame] = []
        while self._pending:
            oldest = min(self._pending)
            complete = len(self._newest_by_shard) == self.shard_count and all(
                newest >= oldest for newest in self._newest_by_shard.values()
            )
            if complete:
                out.append(self._pending.pop(oldest))
            elif len(self._pending) > self.max_pending:
                self.stats.forced += 1
                out.append(self._pending.pop(oldest))
            else:
                break
            self._last_released = oldest
        self.stats.released += len(out)
        return out

    def flush(self) -> list[DepthFrame]:
        """Release everything still waiting (end of stream), in order."""
        out = [self._pending.pop(fid) for fid in sorted(self._pending)]
        if out:
            self._last_released = out[-1].frame_id
        self.stats.released += len(out)
        return out
