"""The map topic for other processes: ZeroMQ's "clone" pattern over :mod:`stream.transport`.

One owner (:class:`MapPublisher`) holds the map as a :class:`MapState` and publishes every change on the
updates endpoint; a snapshot service on a second endpoint answers with the whole map. A late joiner
(:class:`MapClient`) subscribes to the updates first and buffers them, asks for a snapshot, applies the
buffered updates newer than the snapshot, then goes live. The publisher never waits for anyone (PUB drops
for a subscriber whose pipe is full); a client that fell behind sees a gap in ``map_seq`` and resyncs.

Wire protocol (all payloads are :mod:`stream.messages` messages, validated on receipt):

* updates endpoint (PUB, real-time mode, large high-water mark), topics
    - ``"map"``: :class:`~stream.messages.MapUpdate` with ``map_seq`` 1, 2, 3, ... (no gaps);
    - ``"pose"``: :class:`~stream.messages.PoseUpdate`; the transport's per-topic envelope ``seq`` (0, 1, 2, ...)
      numbers them, so lost poses are detected too;
    - ``"heartbeat.map"``: a :class:`~stream.messages.Status` (``stage="map"``, ``state="alive"``,
      ``text=<session id>``, ``counters={"map_seq": S, "pose_seq": P}``) sent periodically, so a client
      whose *last* updates were dropped still notices (``S`` ahead of its map) and so a restarted
      publisher (new session id) is noticed.
* snapshot endpoint (REP): request ``[b"snapshot"]``; reply
  ``[b"snapshot", header, map, latest_pose, keyframe_0, keyframe_1, ...]`` where ``header`` is a Status
  (``state="snapshot"``, same text/counters as a heartbeat: the ``map_seq`` and ``pose_seq`` the snapshot is
  consistent with), ``map`` a MapUpdate with ``is_snapshot=True``, ``latest_pose`` a PoseUpdate or empty
  bytes, then the keyframe poses sorted by ``frame_id``. ``P`` is the envelope ``seq`` of the first pose *not*
  contained in the snapshot. Any other request gets ``[b"error", <utf-8 text>]``.

Blocks: the map is the union of the latest :class:`~stream.messages.MeshBlock` per block key; a block with
zero vertices removes the key.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from stream.clock import Clock, MonotonicClock
from stream.messages import (
    DEFAULT_LIMITS,
    DecodeLimits,
    MapUpdate,
    MeshBlock,
    PoseUpdate,
    Status,
    WireError,
    decode,
)
from stream.transport import (
    DeliveryMode,
    Publisher,
    Received,
    Subscriber,
    SubscriberStats,
    TransportConfig,
    parse_endpoint,
)

log = logging.getLogger(__name__)

MAP_TOPIC = "map"
"""Topic of :class:`MapUpdate` messages."""
POSE_TOPIC = "pose"
"""Topic of :class:`PoseUpdate` messages."""
HEARTBEAT_TOPIC = "heartbeat.map"
"""Topic of the publisher's heartbeat (a :class:`Status`); it does not share the ``"map"`` prefix, so plain
``"map"`` subscribers never receive it."""

SNAPSHOT_REQUEST = b"snapshot"
"""The one valid snapshot request (a single frame)."""
REPLY_SNAPSHOT = b"snapshot"
REPLY_ERROR = b"error"

_SYNC_WAIT_S = 0.005
"""While a snapshot is pending, the client waits on the updates socket at most this long between checks."""

BlockKey = tuple[int, int, int]


class MapSeqError(ValueError):
    """An update does not follow the map's sequence number (a gap or a repeat)."""


class MapSyncError(RuntimeError):
    """A client could not get a snapshot from the snapshot service."""


@dataclass(frozen=True)
class MapTopicConfig:
    """Settings of the map topic, shared by :class:`MapPublisher` and :class:`MapClient`."""

    allow_remote: bool = False
    """Allow binding the updates and snapshot endpoints to non-loopback interfaces."""
    publisher_hwm: int = 1000
    """Updates queued per subscriber before the publisher drops messages for that subscriber (it never waits)."""
    client_hwm: int = 1000
    """Client receive high-water mark (messages)."""
    heartbeat_interval_s: float | None = 0.5
    """Seconds between heartbeats (how quickly a client notices that its last updates were dropped);
    ``None``: no automatic heartbeats (call :meth:`MapPublisher.publish_heartbeat`)."""
    snapshot_timeout_s: float = 2.0
    """Client: seconds to wait for one snapshot reply before asking again."""
    snapshot_attempts: int = 10
    """Client: snapshot requests per synchronisation before :meth:`MapClient.poll` raises :class:`MapSyncError`."""
    max_buffered_messages: int = 10_000
    """Client: messages buffered while a snapshot is pending; older ones are dropped (and resynced later)."""
    max_request_bytes: int = 1024
    """Snapshot service: larger request frames make ZeroMQ disconnect the peer before reading them."""
    limits: DecodeLimits = DEFAULT_LIMITS
    """Decoding limits for every received payload (updates, snapshots)."""

    def __post_init__(self) -> None:
        for name in ("publisher_hwm", "client_hwm", "snapshot_attempts", "max_buffered_messages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MapTopicConfig.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.max_request_bytes, bool) or not isinstance(self.max_request_bytes, int) \
                or self.max_request_bytes < 16:
            raise ValueError(f"MapTopicConfig.max_request_bytes must be an int >= 16, got {self.max_request_bytes!r}")
        if self.heartbeat_interval_s is not None and not (
            math.isfinite(self.heartbeat_interval_s) and self.heartbeat_interval_s > 0
        ):
            raise ValueError(f"MapTopicConfig.heartbeat_interval_s must be positive or None, "
                             f"got {self.heartbeat_interval_s!r}")
        if not (math.isfinite(self.snapshot_timeout_s) and self.snapshot_timeout_s > 0):
            raise ValueError(f"MapTopicConfig.snapshot_timeout_s must be positive, got {self.snapshot_timeout_s!r}")

    def publisher_transport(self) -> TransportConfig:
        """Real-time PUB with a large high-water mark: a slow subscriber never slows the pipeline."""
        return TransportConfig(mode=DeliveryMode.REALTIME, realtime_hwm=self.publisher_hwm,
                               allow_remote=self.allow_remote, limits=self.limits)

    def client_transport(self) -> TransportConfig:
        """Lossless SUB (direct, in-order reads) so that gaps in the sequence numbers are visible."""
        return TransportConfig(mode=DeliveryMode.LOSSLESS, lossless_hwm=self.client_hwm,
                               allow_remote=self.allow_remote, limits=self.limits)


# ----------------------------------------------------------------------------------------------------
# the map as plain data
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MergedMesh:
    """All blocks of a map as one triangle mesh, blocks in ascending key order (shared vertices not merged).

    vertices: (N, 3) float32 metres in world; faces: (M, 3) int32 indices into vertices; colors: (N, 3) uint8 RGB.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

    def digest(self) -> str:
        """SHA-256 (hex) of the dtypes, shapes and bytes of the three arrays: equal digests = identical meshes."""
        h = hashlib.sha256()
        for array in (self.vertices, self.faces, self.colors):
            h.update(f"{array.dtype.str}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()

    def same_as(self, other: MergedMesh) -> bool:
        """Exact equality of the three arrays (dtype, shape and values)."""
        return all(
            a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
            for a, b in ((self.vertices, other.vertices), (self.faces, other.faces), (self.colors, other.colors))
        )


def _same_pose(a: PoseUpdate | None, b: PoseUpdate | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (
        a.frame_id == b.frame_id and a.stamp_ns == b.stamp_ns and a.state == b.state
        and a.is_keyframe == b.is_keyframe and a.depth_scale == b.depth_scale
        and bool(np.array_equal(a.T_W_C, b.T_W_C))
    )


@dataclass(frozen=True, eq=False)
class _MapContent:
    """An immutable view of a :class:`MapState` (blocks sorted by key, keyframes by frame id)."""

    map_seq: int
    stamp_ns: int
    frame_id: int
    voxel_size_m: float
    blocks: tuple[MeshBlock, ...]
    keyframes: tuple[PoseUpdate, ...]
    latest_pose: PoseUpdate | None


class MapState:
    """The map as seen by one process: the latest mesh block per key, ``map_seq``, poses. Thread-safe.

    ``map_seq`` is the sequence number of the last update applied (0 for an empty, new map); updates must
    be applied in order without gaps (:class:`MapSeqError` otherwise). Keyframes are the latest keyframe
    :class:`PoseUpdate` per ``frame_id``; ``latest_pose`` is the last pose applied, keyframe or not.
    """

    def __init__(self, voxel_size_m: float = 0.0) -> None:
        if not (math.isfinite(voxel_size_m) and voxel_size_m >= 0):
            raise ValueError(f"voxel_size_m must be finite and >= 0, got {voxel_size_m!r}")
        self._lock = threading.RLock()
        self._blocks: dict[BlockKey, MeshBlock] = {}
        self._map_seq = 0
        self._stamp_ns = 0
        self._frame_id = 0
        self._voxel_size_m = float(voxel_size_m)
        self._keyframes: dict[int, PoseUpdate] = {}
        self._latest_pose: PoseUpdate | None = None

    # -- reading ------------------------------------------------------------------------------------
    @property
    def map_seq(self) -> int:
        """Sequence number of the last update applied (0: none)."""
        with self._lock:
            return self._map_seq

    @property
    def voxel_size_m(self) -> float:
        with self._lock:
            return self._voxel_size_m

    @property
    def block_count(self) -> int:
        with self._lock:
            return len(self._blocks)

    def blocks(self) -> dict[BlockKey, MeshBlock]:
        """A copy of the block table (key -> latest non-empty MeshBlock)."""
        with self._lock:
            return dict(self._blocks)

    @property
    def keyframes(self) -> list[PoseUpdate]:
        """Keyframe poses sorted by ``frame_id`` (a copy)."""
        with self._lock:
            return [self._keyframes[k] for k in sorted(self._keyframes)]

    @property
    def latest_pose(self) -> PoseUpdate | None:
        with self._lock:
            return self._latest_pose

    def _content(self) -> _MapContent:
        with self._lock:
            return _MapContent(
                self._map_seq, self._stamp_ns, self._frame_id, self._voxel_size_m,
                tuple(self._blocks[k] for k in sorted(self._blocks)),
                tuple(self._keyframes[k] for k in sorted(self._keyframes)), self._latest_pose,
            )

    def snapshot(self) -> MapUpdate:
        """The whole map as one MapUpdate (``is_snapshot=True``, the current ``map_seq``, blocks by key)."""
        c = self._content()
        return MapUpdate(map_seq=c.map_seq, stamp_ns=c.stamp_ns, frame_id=c.frame_id, blocks=c.blocks,
                         is_snapshot=True, voxel_size_m=c.voxel_size_m)

    def merged_mesh(self) -> MergedMesh:
        """All blocks concatenated in ascending key order; face indices offset into the merged vertex array."""
        blocks = self._content().blocks
        if not blocks:
            return MergedMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))
        counts = np.array([b.vertices.shape[0] for b in blocks], np.int64)
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        if int(counts.sum()) > np.iinfo(np.int32).max:
            raise ValueError(f"merged mesh has {int(counts.sum())} vertices, more than int32 face indices can address")
        faces = np.concatenate([b.faces + np.int32(o) for b, o in zip(blocks, offsets, strict=True)]).astype(np.int32)
        return MergedMesh(
            np.concatenate([b.vertices for b in blocks]), faces, np.concatenate([b.colors for b in blocks])
        )

    def same_as(self, other: MapState) -> bool:
        """Same ``map_seq``, voxel size, blocks (exact arrays), keyframes and latest pose."""
        a, b = self._content(), other._content()
        return (
            a.map_seq == b.map_seq and a.voxel_size_m == b.voxel_size_m
            and len(a.blocks) == len(b.blocks) and all(x.same_as(y) for x, y in zip(a.blocks, b.blocks, strict=True))
            and len(a.keyframes) == len(b.keyframes)
            and all(_same_pose(x, y) for x, y in zip(a.keyframes, b.keyframes, strict=True))
            and _same_pose(a.latest_pose, b.latest_pose)
        )

    # -- writing ------------------------------------------------------------------------------------
    def apply(self, update: MapUpdate) -> None:
        """Apply one update (``map_seq`` must be the current one + 1) or replace the mesh with a snapshot.

        A block with zero vertices removes its key. Poses are untouched (see :meth:`restore`).
        """
        if not isinstance(update, MapUpdate):
            raise TypeError(f"apply() takes a MapUpdate, got {type(update).__name__}")
        with self._lock:
            if update.is_snapshot:
                self._blocks = {}
            elif update.map_seq != self._map_seq + 1:
                raise MapSeqError(f"update map_seq {update.map_seq} does not follow the map's {self._map_seq}")
            for block in update.blocks:
                if block.vertices.shape[0] == 0:
                    self._blocks.pop(block.key, None)
                else:
                    self._blocks[block.key] = block
            self._map_seq = update.map_seq
            self._stamp_ns, self._frame_id = update.stamp_ns, update.frame_id
            if update.is_snapshot or update.voxel_size_m > 0:
                self._voxel_size_m = update.voxel_size_m

    def apply_pose(self, pose: PoseUpdate) -> None:
        """Record ``pose`` as the latest pose and, if it is a keyframe, as the keyframe of its ``frame_id``."""
        if not isinstance(pose, PoseUpdate):
            raise TypeError(f"apply_pose() takes a PoseUpdate, got {type(pose).__name__}")
        with self._lock:
            self._latest_pose = pose
            if pose.is_keyframe:
                self._keyframes[pose.frame_id] = pose

    def restore(self, snapshot: MapUpdate, keyframes: Iterable[PoseUpdate], latest_pose: PoseUpdate | None) -> None:
        """Replace everything (mesh and poses) at once, e.g. with what the snapshot service sent."""
        if not isinstance(snapshot, MapUpdate) or not snapshot.is_snapshot:
            raise ValueError("restore() needs a MapUpdate with is_snapshot=True")
        kfs = list(keyframes)
        for pose in kfs:
            if not isinstance(pose, PoseUpdate) or not pose.is_keyframe:
                raise ValueError("restore(): every keyframe must be a PoseUpdate with is_keyframe=True")
        if latest_pose is not None and not isinstance(latest_pose, PoseUpdate):
            raise TypeError(f"restore(): latest_pose must be a PoseUpdate or None, got {type(latest_pose).__name__}")
        with self._lock:
            self.apply(snapshot)
            self._keyframes = {p.frame_id: p for p in kfs}
            self._latest_pose = latest_pose


# ----------------------------------------------------------------------------------------------------
# sync points (heartbeat and snapshot header)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncPoint:
    """Where the publisher stands: its session id, the last ``map_seq`` and the number of poses published."""

    session: str
    map_seq: int
    pose_seq: int
    """Envelope ``seq`` of the next pose to be published (= poses published so far)."""

    def to_status(self, state: str, stamp_ns: int) -> Status:
        return Status("map", stamp_ns, state, self.session, {"map_seq": self.map_seq, "pose_seq": self.pose_seq})

    @staticmethod
    def from_status(message: object, state: str) -> SyncPoint:
        """Validate a heartbeat/snapshot header; raises WireError naming the problem."""
        if not isinstance(message, Status) or message.stage != "map" or message.state != state:
            raise WireError(f"expected a Status(stage='map', state={state!r}), got {message!r:.120}")
        values = []
        for name in ("map_seq", "pose_seq"):
            value = message.counters.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise WireError(f"map {state}: counter {name!r} must be an int >= 0, got {value!r}")
            values.append(value)
        if not message.text:
            raise WireError(f"map {state}: empty session id")
        return SyncPoint(message.text, values[0], values[1])


def heartbeat_message(point: SyncPoint, stamp_ns: int) -> Status:
    """The heartbeat a publisher at ``point`` sends on :data:`HEARTBEAT_TOPIC`."""
    return point.to_status("alive", stamp_ns)


# ----------------------------------------------------------------------------------------------------
# publisher + snapshot service
# ----------------------------------------------------------------------------------------------------


@dataclass
class MapPublisherStats:
    """Counters of one map publisher."""

    updates: int = 0
    """Map updates published."""
    poses: int = 0
    """Poses published."""
    heartbeats: int = 0
    snapshots_served: int = 0
    bad_requests: int = 0
    """Malformed snapshot requests answered with an error reply."""
    replies_dropped: int = 0
    """Replies ZeroMQ could not hand to the requester (it went away)."""
    last_error: str = ""
    """Text of the last bad request."""


class MapPublisher:
    """The one owner of the published map: publishes updates and poses, serves snapshots in its own thread.

    ``publish_blocks``/``publish_pose`` may be called from one thread (the pipeline's); they never wait for
    subscribers. ``updates_endpoint``/``snapshot_endpoint`` hold the bound addresses (``tcp://127.0.0.1:*``
    picks a free port). ``state`` is the published map: read it freely, change it only through ``publish_*``.
    """

    def __init__(
        self, updates_endpoint: str, snapshot_endpoint: str, config: MapTopicConfig = MapTopicConfig(), *,
        voxel_size_m: float = 0.0, clock: Clock | None = None, context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.stats = MapPublisherStats()
        self.state = MapState(voxel_size_m)
        self.session_id = uuid.uuid4().hex
        """Random id of this publisher's lifetime: a client that sees another one resyncs."""
        self._clock: Clock = clock or MonotonicClock()
        self._lock = threading.Lock()
        self._pose_seq = 0
        snapshot = parse_endpoint(snapshot_endpoint, bind=True, allow_remote=config.allow_remote)
        self._publisher = Publisher(updates_endpoint, config.publisher_transport(), context=context)
        self.updates_endpoint = self._publisher.endpoint
        ctx = context or zmq.Context.instance()
        self._rep = ctx.socket(zmq.REP)
        self._rep.setsockopt(zmq.LINGER, 0)
        self._rep.setsockopt(zmq.MAXMSGSIZE, config.max_request_bytes)
        try:
            self._rep.bind(snapshot.url)
        except zmq.ZMQError:
            self._rep.close()
            self._publisher.close()
            raise
        self.snapshot_endpoint = (
            self._rep.getsockopt_string(zmq.LAST_ENDPOINT) if snapshot.scheme == "tcp" else snapshot.url
        )
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="map-snapshots", daemon=True)
        self._thread.start()

    # -- publishing ---------------------------------------------------------------------------------
    def publish_blocks(self, blocks: Sequence[MeshBlock], frame_id: int, stamp_ns: int) -> MapUpdate:
        """Publish the blocks that changed (zero vertices = removed) as the next update; returns it."""
        items = tuple(blocks)
        keys: set[BlockKey] = set()
        for i, block in enumerate(items):
            if not isinstance(block, MeshBlock):
                raise TypeError(f"blocks[{i}] must be a MeshBlock, got {type(block).__name__}")
            if block.key in keys:
                raise ValueError(f"blocks[{i}]: block key {block.key} appears twice in one update")
            keys.add(block.key)
        for name, value in (("frame_id", frame_id), ("stamp_ns", stamp_ns)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        self._check_open()
        with self._lock:
            update = MapUpdate(map_seq=self.state.map_seq + 1, stamp_ns=stamp_ns, frame_id=frame_id,
                               blocks=items, voxel_size_m=self.state.voxel_size_m)
            self.state.apply(update)
            self._publisher.publish(MAP_TOPIC, update)
            self.stats.updates += 1
        return update

    def publish_pose(self, pose: PoseUpdate) -> None:
        """Publish a tracker pose (keyframes are kept for snapshots)."""
        if not isinstance(pose, PoseUpdate):
            raise TypeError(f"publish_pose() takes a PoseUpdate, got {type(pose).__name__}")
        self._check_open()
        with self._lock:
            self.state.apply_pose(pose)
            self._publisher.publish(POSE_TOPIC, pose)
            self._pose_seq += 1
            self.stats.poses += 1

    def sync_point(self) -> SyncPoint:
        with self._lock:
            return SyncPoint(self.session_id, self.state.map_seq, self._pose_seq)

    def publish_heartbeat(self) -> None:
        """Send a heartbeat now (the service thread also sends them every ``heartbeat_interval_s``)."""
        self._check_open()
        with self._lock:
            point = SyncPoint(self.session_id, self.state.map_seq, self._pose_seq)
            self._publisher.publish(HEARTBEAT_TOPIC, heartbeat_message(point, self._clock.now_ns()))
            self.stats.heartbeats += 1

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MapPublisher is closed")

    # -- snapshot service ---------------------------------------------------------------------------
    def _serve(self) -> None:
        interval_ns = None if self.config.heartbeat_interval_s is None else int(self.config.heartbeat_interval_s * 1e9)
        next_beat_ns = self._clock.now_ns()
        try:
            while not self._stop.is_set():
                if interval_ns is not None and self._clock.now_ns() >= next_beat_ns:
                    self.publish_heartbeat()
                    next_beat_ns = self._clock.now_ns() + interval_ns
                if not self._rep.poll(20, zmq.POLLIN):
                    continue
                request = self._rep.recv_multipart(zmq.NOBLOCK)
                reply = self._answer(request)
                try:
                    self._rep.send_multipart(reply, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    self.stats.replies_dropped += 1
        finally:
            self._rep.close()

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) != 1 or request[0] != SNAPSHOT_REQUEST:
            text = (f"bad snapshot request: expected one frame {SNAPSHOT_REQUEST!r}, got {len(request)} frame(s) "
                    f"starting {request[0][:32]!r}" if request else "bad snapshot request: no frames")
            self.stats.bad_requests += 1
            self.stats.last_error = text
            log.warning("%s", text)
            return [REPLY_ERROR, text.encode()]
        with self._lock:  # a consistent cut: no update or pose is published while we copy
            point = SyncPoint(self.session_id, self.state.map_seq, self._pose_seq)
            snapshot = self.state.snapshot()
            keyframes = self.state.keyframes
            latest = self.state.latest_pose
        header = point.to_status("snapshot", self._clock.now_ns())
        self.stats.snapshots_served += 1
        return [
            REPLY_SNAPSHOT, header.encode(), snapshot.encode(seq=snapshot.map_seq),
            b"" if latest is None else latest.encode(), *(kf.encode() for kf in keyframes),
        ]

    @property
    def serving(self) -> bool:
        """True while the snapshot/heartbeat thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._thread.join()
        self._closed = True
        self._publisher.close()

    def __enter__(self) -> MapPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------
# client
# ----------------------------------------------------------------------------------------------------


@dataclass
class MapClientStats:
    """Counters of one map client."""

    updates_applied: int = 0
    """Live map updates applied (snapshots not counted)."""
    poses_applied: int = 0
    snapshots: int = 0
    """Snapshots applied (the first synchronisation included)."""
    resyncs: int = 0
    """Synchronisations after the first one (a gap, a heartbeat ahead of the map, a new publisher session)."""
    gaps: int = 0
    """Gaps found in ``map_seq`` or pose numbers, or heartbeats ahead of the map."""
    session_changes: int = 0
    """Heartbeats from another publisher session (the publisher restarted)."""
    stale: int = 0
    """Messages ignored because the map already contained them."""
    snapshot_requests: int = 0
    snapshot_timeouts: int = 0
    bad_replies: int = 0
    """Snapshot replies that were errors or malformed."""
    unexpected: int = 0
    """Valid messages of the wrong type for their topic (or bad heartbeats), ignored."""
    buffer_overflows: int = 0
    """Messages dropped from the buffer while a snapshot was pending."""
    last_error: str = ""
    snapshot_map_seqs: list[int] = field(default_factory=list)
    """``map_seq`` of every snapshot applied, in order."""


@dataclass(frozen=True)
class _Snapshot:
    point: SyncPoint
    update: MapUpdate
    latest_pose: PoseUpdate | None
    keyframes: tuple[PoseUpdate, ...]


class MapClient:
    """Keeps a :class:`MapState` in sync with a :class:`MapPublisher` in another thread or process.

    Drive it with :meth:`poll` (or :meth:`run_until`) from one thread; :attr:`state` may be read from any.
    """

    def __init__(
        self, updates_endpoint: str, snapshot_endpoint: str, config: MapTopicConfig = MapTopicConfig(), *,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.stats = MapClientStats()
        self._state = MapState()
        self._ctx = context or zmq.Context.instance()
        self._snapshot_url = parse_endpoint(snapshot_endpoint, bind=False, allow_remote=config.allow_remote).url
        # clone pattern: subscribe to the updates first, then ask for the snapshot
        self._sub = Subscriber(updates_endpoint, [MAP_TOPIC, POSE_TOPIC, HEARTBEAT_TOPIC],
                               config.client_transport(), context=context)
        self._buffer: collections.deque[Received] = collections.deque()
        self._req: zmq.Socket | None = None
        self._req_deadline = 0.0
        self._attempts = 0
        self._session: str | None = None
        self._next_pose_seq = 0
        self._syncing = False
        self._closed = False
        self._start_sync()

    @property
    def state(self) -> MapState:
        return self._state

    @property
    def synced(self) -> bool:
        """True when live: a snapshot was applied and no gap has been seen since."""
        return not self._syncing

    @property
    def transport_stats(self) -> SubscriberStats:
        """The underlying Subscriber's counters (received, dropped, malformed)."""
        return self._sub.stats

    # -- driving ------------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0, *, max_messages: int = 1000) -> int:
        """Process available messages (at most ``max_messages``) and a pending snapshot reply.

        Waits up to ``timeout_s`` for the first event; returns the number of messages and snapshots
        processed. Raises :class:`MapSyncError` after ``snapshot_attempts`` failed snapshot requests (timeouts
        or bad replies); calling it again starts a new round of requests.
        """
        if self._closed:
            raise RuntimeError("MapClient is closed")
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        deadline = time.monotonic() + timeout_s
        handled = 0
        while True:
            while handled < max_messages:
                item = self._sub.recv(timeout_s=0.0)
                if item is None:
                    break
                self._handle(item)
                handled += 1
            handled += self._service_snapshot()
            remaining = deadline - time.monotonic()
            if handled or remaining <= 0:
                return handled
            item = self._sub.recv(timeout_s=min(remaining, _SYNC_WAIT_S) if self._syncing else remaining)
            if item is not None:
                self._handle(item)
                handled += 1

    def run_until(self, predicate: Callable[[MapState], bool], timeout_s: float) -> bool:
        """Poll until ``predicate(state)`` holds (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self._state):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(min(remaining, 0.05))
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._req is not None:
            self._req.close()
            self._req = None
        self._sub.close()

    def __enter__(self) -> MapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- messages -----------------------------------------------------------------------------------
    def _handle(self, item: Received) -> None:
        if self._syncing:
            self._buffer_item(item)
            return
        if item.topic == MAP_TOPIC:
            self._handle_update(item)
        elif item.topic == POSE_TOPIC:
            self._handle_pose(item)
        else:
            self._handle_heartbeat(item)

    def _buffer_item(self, item: Received) -> None:
        if len(self._buffer) >= self.config.max_buffered_messages:
            self._buffer.popleft()  # the loss shows up as a gap once the snapshot is applied
            self.stats.buffer_overflows += 1
        self._buffer.append(item)

    def _handle_update(self, item: Received) -> None:
        update = item.message
        if not isinstance(update, MapUpdate) or update.is_snapshot:
            self._unexpected(f"topic {MAP_TOPIC!r} carried {update!r:.80} (want a MapUpdate that is no snapshot)")
            return
        current = self._state.map_seq
        if update.map_seq <= current:
            self.stats.stale += 1
        elif update.map_seq == current + 1:
            self._state.apply(update)
            self.stats.updates_applied += 1
        else:
            log.info("map_seq gap: have %d, got %d; resyncing", current, update.map_seq)
            self.stats.gaps += 1
            self._start_sync()
            self._buffer_item(item)

    def _handle_pose(self, item: Received) -> None:
        pose = item.message
        if not isinstance(pose, PoseUpdate):
            self._unexpected(f"topic {POSE_TOPIC!r} carried {pose!r:.80} (want a PoseUpdate)")
            return
        if item.seq < self._next_pose_seq:
            self.stats.stale += 1
        elif item.seq == self._next_pose_seq:
            self._state.apply_pose(pose)
            self._next_pose_seq += 1
            self.stats.poses_applied += 1
        else:
            log.info("pose gap: expected pose %d, got %d; resyncing", self._next_pose_seq, item.seq)
            self.stats.gaps += 1
            self._start_sync()
            self._buffer_item(item)

    def _handle_heartbeat(self, item: Received) -> None:
        try:
            point = SyncPoint.from_status(item.message, "alive")
        except WireError as exc:
            self._unexpected(str(exc))
            return
        if point.session != self._session:
            log.info("map publisher session changed (%s -> %s); resyncing", self._session, point.session)
            self.stats.session_changes += 1
            self._start_sync()
        elif point.map_seq > self._state.map_seq or point.pose_seq > self._next_pose_seq:
            log.info("heartbeat at map_seq %d, pose %d is ahead of map_seq %d, pose %d; resyncing",
                     point.map_seq, point.pose_seq, self._state.map_seq, self._next_pose_seq)
            self.stats.gaps += 1
            self._start_sync()

    def _unexpected(self, text: str) -> None:
        self.stats.unexpected += 1
        self.stats.last_error = text
        log.warning("map client ignored a message: %s", text)

    # -- snapshots ----------------------------------------------------------------------------------
    def _start_sync(self) -> None:
        if self._syncing:
            return
        self._syncing = True
        if self.stats.snapshots > 0:
            self.stats.resyncs += 1
        self._attempts = 0
        self._send_request()

    def _send_request(self) -> None:
        if self._req is not None:
            self._req.close()  # lazy pirate: a REQ socket that got no answer cannot send again
        self._req = self._ctx.socket(zmq.REQ)
        self._req.setsockopt(zmq.LINGER, 0)
        self._req.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes + 4096)
        self._req.connect(self._snapshot_url)
        self._req.send(SNAPSHOT_REQUEST)
        self._attempts += 1
        self.stats.snapshot_requests += 1
        self._req_deadline = time.monotonic() + self.config.snapshot_timeout_s

    def _service_snapshot(self) -> int:
        if not self._syncing:
            return 0
        if self._req is None:  # an earlier round gave up (MapSyncError): start a new round of requests
            self._attempts = 0
            self._send_request()
            return 0
        if not self._req.poll(0, zmq.POLLIN):
            if time.monotonic() < self._req_deadline:
                return 0
            self.stats.snapshot_timeouts += 1
            self._retry(f"no snapshot reply from {self._snapshot_url} within {self.config.snapshot_timeout_s} s")
            return 0
        parts = self._req.recv_multipart()
        self._req.close()
        self._req = None
        try:
            snap = self._parse_reply(parts)
        except WireError as exc:
            self.stats.bad_replies += 1
            self.stats.last_error = str(exc)
            log.warning("bad snapshot reply: %s", exc)
            self._retry(str(exc))
            return 0
        self._apply_snapshot(snap)
        return 1

    def _retry(self, reason: str) -> None:
        if self._attempts >= self.config.snapshot_attempts:
            if self._req is not None:
                self._req.close()
                self._req = None
            raise MapSyncError(f"gave up after {self._attempts} snapshot requests: {reason}")
        self._send_request()

    def _parse_reply(self, parts: list[bytes]) -> _Snapshot:
        if parts and parts[0] == REPLY_ERROR:
            text = parts[1][:500].decode("utf-8", "replace") if len(parts) > 1 else ""
            raise WireError(f"snapshot service answered with an error: {text}")
        if len(parts) < 4 or parts[0] != REPLY_SNAPSHOT:
            raise WireError(f"snapshot reply must be [b'snapshot', header, map, latest_pose, keyframes...], "
                            f"got {len(parts)} frame(s)")
        limits = self.config.limits
        point = SyncPoint.from_status(decode(parts[1], limits).message, "snapshot")
        update = decode(parts[2], limits).message
        if not isinstance(update, MapUpdate) or not update.is_snapshot or update.map_seq != point.map_seq:
            raise WireError(f"snapshot reply: frame 2 must be a MapUpdate with is_snapshot and map_seq "
                            f"{point.map_seq}, got {update!r:.120}")
        latest = None if parts[3] == b"" else decode(parts[3], limits).message
        if latest is not None and not isinstance(latest, PoseUpdate):
            raise WireError(f"snapshot reply: frame 3 must be a PoseUpdate or empty, got {latest!r:.80}")
        keyframes = []
        for i, payload in enumerate(parts[4:], start=4):
            kf = decode(payload, limits).message
            if not isinstance(kf, PoseUpdate) or not kf.is_keyframe:
                raise WireError(f"snapshot reply: frame {i} must be a keyframe PoseUpdate, got {kf!r:.80}")
            keyframes.append(kf)
        return _Snapshot(point, update, latest, tuple(keyframes))

    def _apply_snapshot(self, snap: _Snapshot) -> None:
        self._state.restore(snap.update, snap.keyframes, snap.latest_pose)
        self._session = snap.point.session
        self._next_pose_seq = snap.point.pose_seq
        self.stats.snapshots += 1
        self.stats.snapshot_map_seqs.append(snap.point.map_seq)
        self._syncing = False
        buffered = list(self._buffer)
        self._buffer.clear()
        for item in buffered:  # updates newer than the snapshot apply; older ones are stale; a gap resyncs
            self._handle(item)
