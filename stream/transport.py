"""ZeroMQ publish/subscribe for depthslam messages: multipart ``[topic, payload]``.

Two delivery modes:

* ``REALTIME`` (latest wins): small high-water marks on both ends, the publisher never blocks (ZeroMQ drops
  at the high-water mark), and :meth:`Subscriber.recv` drains its queue and returns only the newest message.
  Every message that never reached the caller is counted: gaps in the publisher's per-topic sequence numbers
  (dropped in the pipe) plus messages the subscriber skipped itself.
* ``LOSSLESS`` (every message, for offline runs): an XPUB socket with ``XPUB_NODROP``, so a full pipe makes
  :meth:`Publisher.publish` wait (back-pressure) instead of dropping; the publisher can wait for its
  subscribers to join before the first message so nothing is lost to the slow-joiner effect.

Endpoints bind to loopback unless ``allow_remote`` is set. Received payloads are validated by
:mod:`stream.messages`; malformed ones are counted and dropped, never raised into the receiver.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import zmq

from stream.messages import DEFAULT_LIMITS, DecodeLimits, Message, WireError, decode

log = logging.getLogger(__name__)

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class DeliveryMode(enum.StrEnum):
    """How a stream treats a consumer that is slower than its producer."""

    REALTIME = "realtime"
    """Latest wins: stale messages are dropped and counted; nobody waits."""
    LOSSLESS = "lossless"
    """Every message arrives in order; the producer waits for the slowest consumer."""


class EndpointError(ValueError):
    """An endpoint string is malformed or not allowed (e.g. a public bind without ``allow_remote``)."""


@dataclass(frozen=True)
class TransportConfig:
    """Settings shared by publishers and subscribers of one stream."""

    mode: DeliveryMode = DeliveryMode.REALTIME
    """Real-time (latest wins, drops counted) or lossless (back-pressure, no drops)."""
    realtime_hwm: int = 8
    """High-water mark (messages) per socket in real-time mode: absorbs bursts; staleness is bounded by the
    subscriber's receiver thread, which always keeps only the newest message per topic."""
    lossless_hwm: int = 64
    """High-water mark in lossless mode: how far the producer may run ahead before it waits."""
    allow_remote: bool = False
    """Allow binding to non-loopback interfaces (``tcp://0.0.0.0``, ``tcp://*``, a LAN address)."""
    limits: DecodeLimits = DEFAULT_LIMITS
    """Decoding limits applied to every received payload; also caps ZeroMQ's message size."""
    send_timeout_s: float | None = None
    """Lossless mode: give up a blocked publish after this long (``None`` waits forever)."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, DeliveryMode):
            raise ValueError(f"mode must be a DeliveryMode, got {self.mode!r}")
        if self.realtime_hwm < 1 or self.lossless_hwm < 1:
            raise ValueError("high-water marks must be >= 1")
        if self.send_timeout_s is not None and self.send_timeout_s <= 0:
            raise ValueError("send_timeout_s must be positive or None")


@dataclass(frozen=True)
class Endpoint:
    """A parsed ZeroMQ endpoint."""

    url: str
    scheme: str
    host: str = ""
    port: int | None = None


_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/]*):(?P<port>\d+|\*)$")


def parse_endpoint(endpoint: str, *, bind: bool, allow_remote: bool = False) -> Endpoint:
    """Validate an endpoint; a bare ``tcp://:PORT`` means loopback. Raises :class:`EndpointError`."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise EndpointError(f"endpoint {endpoint!r} must look like tcp://127.0.0.1:5555, ipc:///tmp/x or inproc://x")
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("inproc", "ipc"):
        if not endpoint.split("://", 1)[1]:
            raise EndpointError(f"endpoint {endpoint!r} has no name/path")
        return Endpoint(endpoint, scheme)
    if scheme != "tcp":
        raise EndpointError(f"endpoint {endpoint!r}: transport {scheme!r} not supported (tcp, ipc, inproc)")
    m = _TCP.match(endpoint)
    if m is None:
        raise EndpointError(f"endpoint {endpoint!r} must be tcp://HOST:PORT")
    host, port_text = m.group("host"), m.group("port")
    if port_text == "*":
        if not bind:
            raise EndpointError(f"endpoint {endpoint!r}: a connecting socket needs a port number")
        port = None
    else:
        port = int(port_text)
        if not 0 < port < 65536:
            raise EndpointError(f"endpoint {endpoint!r}: port {port} outside 1..65535")
    if host == "":
        host = "127.0.0.1"
    if bind and host not in _LOOPBACK_HOSTS and not allow_remote:
        raise EndpointError(
            f"refusing to bind {endpoint!r}: only loopback is allowed by default; "
            "pass allow_remote=True (--allow-remote) to serve other machines"
        )
    url = f"tcp://{host}:{port_text}"
    return Endpoint(url, "tcp", host, port)


def attach(sock: zmq.Socket, endpoint: Endpoint, *, bind: bool) -> str:
    """Bind or connect ``sock``; returns the actual endpoint (a bound ``tcp://...:*`` gets its port)."""
    if bind:
        sock.bind(endpoint.url)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT) if endpoint.scheme == "tcp" else endpoint.url
    sock.connect(endpoint.url)
    return endpoint.url


@dataclass
class PublisherStats:
    """Counters of one publisher."""

    sent: int = 0
    """Messages handed to ZeroMQ."""
    blocked_s: float = 0.0
    """Lossless mode: total time spent waiting for slow subscribers (back-pressure)."""
    timeouts: int = 0
    """Lossless mode: publishes given up after ``send_timeout_s``."""


class Publisher:
    """Publishes messages on one endpoint. ``publish(topic, message)``; topics are plain strings."""

    def __init__(
        self, endpoint: str, config: TransportConfig = TransportConfig(), *, bind: bool = True,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.stats = PublisherStats()
        self._seq: dict[str, int] = {}
        self._ctx = context or zmq.Context.instance()
        parsed = parse_endpoint(endpoint, bind=bind, allow_remote=config.allow_remote)
        lossless = config.mode is DeliveryMode.LOSSLESS
        self._sock = self._ctx.socket(zmq.XPUB if lossless else zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 1000 if lossless else 0)
        self._sock.setsockopt(zmq.SNDHWM, config.lossless_hwm if lossless else config.realtime_hwm)
        if lossless:
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
            self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._subscriptions = 0
        self.endpoint = attach(self._sock, parsed, bind=bind)

    def publish(self, topic: str, message: Message, *, jpeg_quality: int | None = None) -> bool:
        """Encode and send ``message`` on ``topic``; returns False only if a lossless send timed out."""
        seq = self._seq.get(topic, 0)
        payload = message.encode(seq=seq, jpeg_quality=jpeg_quality)
        sent = self.send_raw(topic.encode(), payload)
        if sent:
            self._seq[topic] = seq + 1
        return sent

    def send_raw(self, topic: bytes, payload: bytes) -> bool:
        """Send an already encoded payload (also used by tests to send hostile bytes)."""
        if self.config.mode is DeliveryMode.REALTIME:
            self._sock.send_multipart([topic, payload], copy=False)
            self.stats.sent += 1
            return True
        self._drain_subscriptions()
        try:
            self._sock.send_multipart([topic, payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if not self._send_blocking([topic, payload]):
                return False
        self.stats.sent += 1
        return True

    def _send_blocking(self, parts: list[bytes]) -> bool:
        start = time.monotonic()
        deadline = None if self.config.send_timeout_s is None else start + self.config.send_timeout_s
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLOUT | zmq.POLLIN)
        try:
            while True:
                remaining_ms = 100 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
                events = dict(poller.poll(min(remaining_ms, 100)))
                if events.get(self._sock, 0) & zmq.POLLIN:
                    self._drain_subscriptions()
                try:
                    self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                    return True
                except zmq.Again:
                    if deadline is not None and time.monotonic() >= deadline:
                        self.stats.timeouts += 1
                        return False
        finally:
            self.stats.blocked_s += time.monotonic() - start

    def _drain_subscriptions(self) -> None:
        """XPUB: read (un)subscription notices so ``subscriber_count`` stays current."""
        while True:
            try:
                notice = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if notice[:1] == b"\x01":
                self._subscriptions += 1
            elif notice[:1] == b"\x00":
                self._subscriptions = max(0, self._subscriptions - 1)

    @property
    def subscriber_count(self) -> int:
        """Lossless mode: number of live subscriptions seen so far (one per subscribed topic per peer)."""
        if self.config.mode is not DeliveryMode.LOSSLESS:
            raise RuntimeError("subscriber_count is only tracked in lossless mode (XPUB)")
        self._drain_subscriptions()
        return self._subscriptions

    def wait_for_subscribers(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Lossless mode: wait until ``count`` subscriptions arrived; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.subscriber_count < count:
            if time.monotonic() >= deadline:
                return False
            self._sock.poll(50, zmq.POLLIN)
        return True

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Received:
    """One delivered message with its topic and the publisher's sequence number for that topic."""

    topic: str
    seq: int
    message: Message


@dataclass
class SubscriberStats:
    """Counters of one subscriber."""

    received: int = 0
    """Messages returned to the caller."""
    dropped: int = 0
    """Messages published on a subscribed topic that the caller never got, from the first one it got on
    (gaps in the publisher's per-topic sequence numbers: dropped in the pipe or superseded here)."""
    superseded: int = 0
    """Real-time mode: messages that arrived but were replaced by a newer one of the same topic before the
    caller asked (a part of ``dropped``)."""
    malformed: int = 0
    """Payloads that failed validation (or had the wrong number of frames) and were dropped."""
    last_error: str = ""
    """Text of the last validation error, for status reports."""
    last_seq: dict[str, int] = field(default_factory=dict)
    """Last delivered sequence number per topic."""


class Subscriber:
    """Subscribes to exact ``topics`` on one endpoint (connects by default).

    In real-time mode a receiver thread owns the socket and keeps only the newest raw message per topic,
    so the pipe never fills and the newest message always wins; decoding happens in :meth:`recv`, only for
    messages that are delivered. In lossless mode :meth:`recv` reads the socket directly, in order.
    """

    def __init__(
        self, endpoint: str, topics: Sequence[str], config: TransportConfig = TransportConfig(), *,
        bind: bool = False, context: zmq.Context | None = None,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of strings, not one string")
        if not topics:
            raise ValueError("subscribe to at least one topic")
        self.config = config
        self.stats = SubscriberStats()
        self._topics = {t.encode() for t in topics}
        self._ctx = context or zmq.Context.instance()
        parsed = parse_endpoint(endpoint, bind=bind, allow_remote=config.allow_remote)
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        lossless = config.mode is DeliveryMode.LOSSLESS
        self._sock.setsockopt(zmq.RCVHWM, config.lossless_hwm if lossless else config.realtime_hwm)
        # tcp/ipc peers that send more than this are disconnected by ZeroMQ before any allocation
        self._sock.setsockopt(zmq.MAXMSGSIZE, config.limits.max_message_bytes + 4096)
        for t in sorted(self._topics):
            self._sock.setsockopt(zmq.SUBSCRIBE, t)
        self.endpoint = attach(self._sock, parsed, bind=bind)
        self._latest: dict[bytes, list[bytes]] = {}
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        if not lossless:
            self._thread = threading.Thread(target=self._drain_forever, name="zmq-sub-latest", daemon=True)
            self._thread.start()

    # -- real-time receiver thread -------------------------------------------------------------------
    def _drain_forever(self) -> None:
        try:
            while not self._closing.is_set():
                if not self._sock.poll(50, zmq.POLLIN):
                    continue
                while True:
                    try:
                        parts = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(parts) != 2:
                        with self._cond:
                            self._malformed(f"expected 2 frames [topic, payload], got {len(parts)}")
                        continue
                    if parts[0] not in self._topics:
                        continue
                    with self._cond:
                        if parts[0] in self._latest:
                            self.stats.superseded += 1
                            del self._latest[parts[0]]
                        self._latest[parts[0]] = parts
                        self._cond.notify_all()
        finally:
            self._sock.close()

    def _take_latest(self, timeout_s: float) -> list[bytes] | None:
        with self._cond:
            if not self._latest:
                self._cond.wait_for(lambda: bool(self._latest) or self._closing.is_set(), timeout=timeout_s)
            if not self._latest:
                return None
            return self._latest.pop(next(iter(self._latest)))

    # -- shared --------------------------------------------------------------------------------------
    def _validate(self, parts: list[bytes]) -> Received | None:
        if len(parts) != 2:
            self._malformed(f"expected 2 frames [topic, payload], got {len(parts)}")
            return None
        topic, payload = parts
        if topic not in self._topics:  # ZeroMQ filters by prefix; we want exact topics
            return None
        try:
            envelope = decode(payload, self.config.limits)
        except WireError as exc:
            self._malformed(str(exc))
            return None
        name = topic.decode()
        last = self.stats.last_seq.get(name)
        if last is not None and envelope.seq > last + 1:
            self.stats.dropped += envelope.seq - last - 1
        self.stats.last_seq[name] = envelope.seq
        self.stats.received += 1
        return Received(name, envelope.seq, envelope.message)

    def _malformed(self, text: str) -> None:
        self.stats.malformed += 1
        self.stats.last_error = text
        log.warning("dropped malformed message: %s", text)

    def recv(self, timeout_s: float = 1.0) -> Received | None:
        """Next message (lossless) or the newest message of a topic (real-time); None after ``timeout_s``."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if self._thread is not None:
                parts = self._take_latest(remaining)
            elif self._sock.poll(int(remaining * 1000), zmq.POLLIN):
                parts = self._sock.recv_multipart()
            else:
                parts = None
            if parts is None:
                return None
            item = self._validate(parts)
            if item is not None:
                return item
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if self._thread is not None:
            self._closing.set()
            with self._cond:
                self._cond.notify_all()
            self._thread.join()
        else:
            self._sock.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
