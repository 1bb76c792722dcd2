"""Phone and IP-camera streams by URL: HTTP MJPEG (and single-JPEG snapshot URLs) and RTSP.

* :class:`MjpegStreamSource` speaks HTTP itself (``http.client``, connect and read timeouts on every call)
  and parses ``multipart/x-mixed-replace`` responses: the boundary comes from the ``Content-Type``
  header; each part is read by its ``Content-Length`` or, when a part has none, by walking the JPEG's
  marker segments from SOI to EOI. A URL that answers with a single ``image/jpeg`` is polled: every
  frame is a new request. A part that is not a complete JPEG or does not decode is counted
  (``corrupt_frames``), reported and skipped.
* :class:`RtspStreamSource` goes through OpenCV's FFmpeg backend with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` and
  ``CAP_PROP_READ_TIMEOUT_MSEC`` set, so neither opening nor reading can block longer than configured.

Both reconnect when the stream fails to open, drops or stalls, waiting ``backoff_initial_s``,
then ``backoff_factor`` times longer before each further attempt (at most ``backoff_max_s``); the
back-off restarts after the next frame arrives. After ``max_reconnects`` attempts in a row without a
frame the source raises :class:`SourceError` naming the URL and the last error. Every connection,
drop, reconnect and corrupt frame is counted in :class:`StreamStats` and passed to ``on_event(kind,
text)`` (kinds: :class:`StreamEvent`), which the capture thread turns into ``Status`` messages.
Back-off waits go through the injected :class:`~stream.clock.Clock`.

``frame_id`` counts every frame received from 0 (delivered, skipped or corrupt), across reconnects;
``stamp_ns`` is ``stamp_clock()`` when the frame had arrived (default: wall clock, ns since the epoch).
Credentials in URLs (``http://user:pass@host/...``) are used for HTTP basic authentication (MJPEG)
or handed to FFmpeg (RTSP), and never appear in names, events or errors.

:meth:`close` may be called from another thread to stop a blocked ``read``, which then returns ``None``:
at once for MJPEG (the socket is shut down), after at most ``read_timeout_s`` for RTSP (an OpenCV capture
cannot be interrupted safely), and after the current back-off wait when one is in progress. The
reading thread releases the connection itself.
"""

from __future__ import annotations

import base64
import contextlib
import email.message
import enum
import http.client
import logging
import math
import socket
import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from stream.clock import Clock, MonotonicClock, wall_clock_ns
from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.video import IntrinsicsFit, rgb_from_opencv

log = logging.getLogger(__name__)

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_CHUNK_BYTES = 65536
_MAX_HEADER_LINE_BYTES = 8192
_MAX_PART_HEADERS = 64


@dataclass(frozen=True)
class StreamConfig:
    """Timeouts, reconnect policy and limits of a network stream."""

    connect_timeout_s: float = 5.0
    """Longest wait for a TCP connection (MJPEG) or for the stream to open (RTSP)."""
    read_timeout_s: float = 5.0
    """Longest wait for data on an open connection; a longer silence counts as a dropped stream."""
    backoff_initial_s: float = 0.1
    """Wait before the first reconnect attempt."""
    backoff_max_s: float = 5.0
    """Longest wait between reconnect attempts."""
    backoff_factor: float = 2.0
    """Each further attempt in a row waits this many times longer (>= 1)."""
    max_reconnects: int | None = None
    """Reconnect attempts in a row without a frame before giving up with :class:`SourceError` (``None``: never)."""
    max_frame_bytes: int = 32 * 1024 * 1024
    """Largest accepted JPEG (MJPEG part or snapshot); a bigger one counts as a broken stream."""
    intrinsics: Intrinsics | None = None
    """Camera intrinsics to attach to every frame (rescaled automatically for another size of the same aspect)."""

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {value}")
        if not (math.isfinite(self.backoff_initial_s) and 0 <= self.backoff_initial_s <= self.backoff_max_s):
            raise ValueError(
                f"backoff_initial_s must be in [0, backoff_max_s={self.backoff_max_s}], got {self.backoff_initial_s}"
            )
        if not (math.isfinite(self.backoff_factor) and self.backoff_factor >= 1):
            raise ValueError(f"backoff_factor must be a finite number >= 1, got {self.backoff_factor}")
        if self.max_reconnects is not None and (
            isinstance(self.max_reconnects, bool) or not isinstance(self.max_reconnects, int) or self.max_reconnects < 0
        ):
            raise ValueError(f"max_reconnects must be None or an int >= 0, got {self.max_reconnects!r}")
        if (isinstance(self.max_frame_bytes, bool) or not isinstance(self.max_frame_bytes, int)
                or self.max_frame_bytes < 1024):
            raise ValueError(f"max_frame_bytes must be an int >= 1024, got {self.max_frame_bytes!r}")

    def backoff_delay_s(self, attempt: int) -> float:
        """Wait before reconnect attempt ``attempt`` (0 = the first after the last frame)."""
        return min(self.backoff_initial_s * self.backoff_factor**attempt, self.backoff_max_s)


class StreamEvent(enum.StrEnum):
    """Kinds of events a stream reports through ``on_event``."""

    CONNECTED = "connected"
    """A connection is up (text: what kind of stream)."""
    DISCONNECTED = "disconnected"
    """The stream dropped, stalled past the read timeout, or a connection attempt failed (text: why)."""
    RECONNECTING = "reconnecting"
    """About to wait and reconnect (text: attempt number, back-off wait, reason)."""
    CORRUPT_FRAME = "corrupt_frame"
    """A received frame was not a decodable JPEG and was skipped."""
    FAILED = "failed"
    """Giving up: the same text is raised as :class:`SourceError`."""


@dataclass
class StreamStats:
    """Counters of a stream since construction."""

    frames: int = 0
    """Frames decoded and returned by ``read``."""
    skipped: int = 0
    """Frames received and dropped undecoded by ``skip``."""
    corrupt_frames: int = 0
    """Frames received that were not decodable (skipped)."""
    reconnects: int = 0
    """Reconnect attempts (successful or not)."""
    connections: int = 0
    """Successful connections (the first one included)."""

    def as_counters(self) -> dict[str, float]:
        """The counters as a ``Status.counters`` dict."""
        return {
            "frames": self.frames, "skipped": self.skipped, "corrupt_frames": self.corrupt_frames,
            "reconnects": self.reconnects, "connections": self.connections,
        }


EventCallback = Callable[[str, str], None]


class _ConnectionLostError(Exception):
    """Internal: the connection failed, dropped, stalled or spoke nonsense (message: why)."""


class _BadJpegError(Exception):
    """Internal: the bytes after an SOI marker are not a well-formed JPEG marker stream."""


def redact_url(url: str) -> str:
    """``url`` without its password (``rtsp://user:***@host/x``), for names, logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ----------------------------------------------------------------------------------------------------
# reconnect machinery shared by MJPEG and RTSP
# ----------------------------------------------------------------------------------------------------


class _ReconnectingStream(ABC):
    """A live stream that connects, grabs and decodes frames, and reconnects with back-off on failure."""

    def __init__(
        self, name: str, config: StreamConfig, clock: Clock | None, on_event: EventCallback | None,
        stamp_clock: Callable[[], int],
    ) -> None:
        self.name = name
        self.config = config
        self.clock: Clock = clock or MonotonicClock()
        self.on_event = on_event
        """Called as ``on_event(kind, text)`` for every :class:`StreamEvent`; may be set after construction."""
        self.stats = StreamStats()
        self._stamp_clock = stamp_clock
        self._intrinsics = IntrinsicsFit(config.intrinsics, name)
        self._state = "new"  # "new" -> "open" -> "closed"
        self._guard = threading.Lock()  # protects _state and _busy
        self._busy = False  # a thread is inside open/read/skip
        self._connected = False
        self._failures = 0  # reconnect attempts since the last frame
        self._last_error: str | None = None
        self._next_id = 0

    # -- what a protocol implements ----------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> str:
        """Open the stream; returns a description for the CONNECTED event; raises :class:`_ConnectionLostError`."""

    @abstractmethod
    def _grab(self) -> None:
        """Receive the next frame without decoding it; raises :class:`_ConnectionLostError`."""

    @abstractmethod
    def _retrieve(self) -> np.ndarray | None:
        """Decode the frame last grabbed (OpenCV BGR/grey), ``None`` when it is corrupt."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Release the connection; safe to call when not connected (called by the reading thread only)."""

    @abstractmethod
    def _interrupt(self) -> None:
        """Called from another thread by ``close``: make a blocked receive return soon, if that can be done safely."""

    # -- FrameSource -------------------------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        return True

    def open(self) -> None:
        """Connect (reconnecting with back-off); :class:`SourceError` after ``max_reconnects`` failures."""
        self._release()
        with self._guard:
            self._state = "open"
        self._failures = 0
        self._last_error = None
        with self._busy_section():
            self._ensure_connected()

    def read(self) -> ColorFrame | None:
        """The next decodable frame (blocking, reconnecting as needed); ``None`` once closed."""
        with self._busy_section():
            while True:
                frame_id = self._next_frame()
                if frame_id is None:
                    return None
                stamp_ns = self._stamp_clock()
                bgr = self._retrieve()
                if bgr is None:
                    self.stats.corrupt_frames += 1
                    self._emit(StreamEvent.CORRUPT_FRAME, f"frame {frame_id} is not a decodable image; skipped")
                    continue
                image = rgb_from_opencv(bgr, self.name)
                self._failures = 0
                self.stats.frames += 1
                height, width = image.shape[:2]
                return ColorFrame(
                    frame_id=frame_id, stamp_ns=stamp_ns, image=image,
                    intrinsics=self._intrinsics.for_size(width, height), source=self.name,
                )

    def skip(self) -> bool:
        """Receive one frame and drop it undecoded; False once closed."""
        with self._busy_section():
            if self._next_frame() is None:
                return False
            self._failures = 0
            self.stats.skipped += 1
            return True

    def close(self) -> None:
        """Disconnect; safe to call twice, and from another thread to interrupt a blocked ``read``.

        From another thread, only :meth:`_interrupt` runs here; the reading thread releases the
        connection itself when its call returns (library connection objects are not thread-safe).
        """
        with self._guard:
            self._state = "closed"
            busy = self._busy
        if busy:
            self._interrupt()
        else:
            self._release()

    # -- internals ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _busy_section(self) -> Iterator[None]:
        with self._guard:
            if self._state == "new":
                raise SourceError(f"{self.name}: read before open()")
            self._busy = True
        try:
            yield
        finally:
            with self._guard:
                self._busy = False
                closed = self._state == "closed"
            if closed:
                self._release()

    def _release(self) -> None:
        self._connected = False
        self._disconnect()

    def _next_frame(self) -> int | None:
        """Grab the next frame, reconnecting as needed; its frame_id, or ``None`` once closed."""
        while self._state == "open":
            if not self._connected and not self._ensure_connected():
                return None
            try:
                self._grab()
            except _ConnectionLostError as exc:
                if self._state != "open":
                    return None
                self._drop(str(exc))
                continue
            frame_id = self._next_id
            self._next_id += 1
            return frame_id
        return None

    def _ensure_connected(self) -> bool:
        """Connect, waiting the back-off before every retry; False if closed meanwhile."""
        while not self._connected:
            if self._state != "open":
                return False
            if self._last_error is not None:
                self._wait_before_reconnect(self._last_error)
                if self._state != "open":
                    return False
            try:
                description = self._connect()
            except _ConnectionLostError as exc:
                self._disconnect()
                self._last_error = str(exc)
                self._emit(StreamEvent.DISCONNECTED, f"connection attempt failed: {exc}")
                continue
            self._connected = True
            self.stats.connections += 1
            self._emit(StreamEvent.CONNECTED, description)
        return True

    def _wait_before_reconnect(self, reason: str) -> None:
        limit = self.config.max_reconnects
        if limit is not None and self._failures >= limit:
            text = (f"{self.name}: giving up after {self._failures} reconnect attempt(s) without a frame; "
                    f"last error: {reason}")
            self._emit(StreamEvent.FAILED, text)
            raise SourceError(text)
        delay_s = self.config.backoff_delay_s(self._failures)
        self._failures += 1
        self.stats.reconnects += 1
        of_limit = "" if limit is None else f" of {limit}"
        text = f"reconnect attempt {self._failures}{of_limit} in {delay_s:.3g} s (after: {reason})"
        self._emit(StreamEvent.RECONNECTING, text)
        self.clock.sleep_s(delay_s)

    def _drop(self, reason: str) -> None:
        self._connected = False
        self._disconnect()
        self._last_error = reason
        self._emit(StreamEvent.DISCONNECTED, f"stream dropped: {reason}")

    def _emit(self, kind: StreamEvent, text: str) -> None:
        level = logging.INFO if kind is StreamEvent.CONNECTED else logging.WARNING
        log.log(level, "%s: %s: %s", self.name, kind.value, text)
        if self.on_event is not None:
            self.on_event(kind.value, text)


# ----------------------------------------------------------------------------------------------------
# HTTP MJPEG
# ----------------------------------------------------------------------------------------------------


def _jpeg_end(data: bytes | bytearray, start: int) -> int | None:
    """End (exclusive) of the JPEG whose SOI marker is at ``data[start]``; ``None`` if ``data`` stops first.

    Walks the marker segments (skipping segment payloads, so embedded EXIF thumbnails do not end the
    image early) and scans entropy-coded data for the next marker. Raises :class:`_BadJpegError` when the
    bytes are not a JPEG marker stream.
    """
    n = len(data)
    if data[start : start + 2] != _SOI:
        raise _BadJpegError("no SOI marker")
    i = start + 2
    while True:
        if i + 2 > n:
            return None
        if data[i] != 0xFF:
            raise _BadJpegError(f"expected a marker at byte {i - start}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return i + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no payload
            i += 2
            continue
        if marker in (0x00, 0xD8):
            raise _BadJpegError(f"unexpected marker 0xff{marker:02x} at byte {i - start}")
        if i + 4 > n:
            return None
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if seg_len < 2:
            raise _BadJpegError(f"bad segment length at byte {i - start}")
        i += 2 + seg_len
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                k = data.find(b"\xff", i)
                if k < 0 or k + 1 >= n:
                    return None
                following = data[k + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
                    i = k + 2
                elif following == 0xFF:  # fill byte before a marker
                    i = k + 1
                else:
                    i = k
                    break


class _MultipartReader:
    """Splits a ``multipart/x-mixed-replace`` body into JPEG parts (raises :class:`_ConnectionLostError`)."""

    def __init__(self, read1: Callable[[int], bytes], boundary: str, max_part_bytes: int) -> None:
        self._read1 = read1
        self._delimiters = {b"--" + boundary.encode("latin-1"), boundary.encode("latin-1")}
        self._terminators = {d + b"--" for d in self._delimiters}
        self._max = max_part_bytes
        self._buf = bytearray()
        self._pos = 0

    def next_part(self) -> bytes:
        """The bytes of the next part (``b""`` for a part without a well-formed JPEG)."""
        self._skip_to_boundary()
        length = self._read_part_headers()
        if length is not None:
            data = self._read_exact(length)
            return data
        return self._read_jpeg()

    # -- pieces ------------------------------------------------------------------------------------
    def _fill(self) -> None:
        if self._pos > _CHUNK_BYTES and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        chunk = self._read1(_CHUNK_BYTES)
        if not chunk:
            raise _ConnectionLostError("the server closed the stream")
        self._buf += chunk

    def _readline(self, limit: int) -> bytes:
        start = self._pos
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buf[self._pos : end + 1])
                self._pos = end + 1
                return line
            if len(self._buf) - self._pos > limit:
                raise _ConnectionLostError(f"no line break within {limit} bytes (not a multipart stream?)")
            start = len(self._buf)
            self._fill()

    def _skip_to_boundary(self) -> None:
        skipped = 0
        while True:
            line = self._readline(self._max)
            stripped = line.strip()
            if stripped in self._delimiters:
                return
            if stripped in self._terminators:
                raise _ConnectionLostError("the server ended the multipart stream")
            skipped += len(line)
            if skipped > self._max:
                raise _ConnectionLostError(f"no part boundary within {self._max} bytes (not a multipart stream?)")

    def _read_part_headers(self) -> int | None:
        """Read a part's headers; its Content-Length, or ``None`` when it gives none."""
        length: int | None = None
        for _ in range(_MAX_PART_HEADERS):
            line = self._readline(_MAX_HEADER_LINE_BYTES).strip()
            if not line:
                return length
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise _ConnectionLostError(f"bad part Content-Length {value.strip()!r}") from None
                if not 0 <= length <= self._max:
                    raise _ConnectionLostError(f"part Content-Length {length} outside [0, {self._max}]")
        raise _ConnectionLostError(f"more than {_MAX_PART_HEADERS} part headers")

    def _read_exact(self, length: int) -> bytes:
        while len(self._buf) - self._pos < length:
            self._fill()
        data = bytes(self._buf[self._pos : self._pos + length])
        self._pos += length
        return data

    def _read_jpeg(self) -> bytes:
        """Part without Content-Length: the JPEG from SOI to EOI (``b""`` when the part is not one)."""
        while len(self._buf) - self._pos < 2:
            self._fill()
        if self._buf[self._pos : self._pos + 2] != _SOI:
            return b""  # not a JPEG: the next call resynchronises on the next boundary line
        while True:
            try:
                end = _jpeg_end(self._buf, self._pos)
            except _BadJpegError as exc:
                log.debug("malformed JPEG in multipart stream: %s", exc)
                self._pos += 2  # resynchronise on the next boundary line after this SOI
                return b""
            if end is not None:
                data = bytes(self._buf[self._pos : end])
                self._pos = end
                return data
            if len(self._buf) - self._pos > self._max:
                raise _ConnectionLostError(f"JPEG part larger than {self._max} bytes")
            self._fill()


class MjpegStreamSource(_ReconnectingStream):
    """An HTTP(S) MJPEG stream (``multipart/x-mixed-replace``) or a single-JPEG snapshot URL that is polled.

    Typical phone apps: ``http://<phone>:8080/video`` (IP Webcam), ``http://<phone>:4747/video`` (DroidCam).
    """

    def __init__(
        self, url: str, config: StreamConfig = StreamConfig(), *, clock: Clock | None = None,
        on_event: EventCallback | None = None, stamp_clock: Callable[[], int] = wall_clock_ns,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise SourceError(f"MJPEG stream {redact_url(url)}: URL scheme must be http or https")
        if not parts.hostname:
            raise SourceError(f"MJPEG stream {redact_url(url)}: URL has no host")
        try:
            port = parts.port
        except ValueError as exc:
            raise SourceError(f"MJPEG stream {redact_url(url)}: bad port ({exc})") from None
        super().__init__(f"mjpeg stream {redact_url(url)}", config, clock, on_event, stamp_clock)
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"User-Agent": "depthslam", "Accept": "multipart/x-mixed-replace, image/jpeg, */*"}
        if parts.username is not None:
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._reader: _MultipartReader | None = None  # None: snapshot mode
        self._pending_snapshot: bytes | None = None
        self._part = b""

    @property
    def nominal_fps(self) -> float | None:
        return None

    # -- protocol ----------------------------------------------------------------------------------
    def _connect(self) -> str:
        resp = self._request()
        content_type = resp.getheader("Content-Type", "")
        parsed = email.message.Message()
        parsed["Content-Type"] = content_type
        mime = parsed.get_content_type()
        if mime.startswith("multipart/"):
            boundary = parsed.get_boundary()
            if not boundary:
                raise _ConnectionLostError(f"multipart response without a boundary (Content-Type {content_type!r})")
            self._reader = _MultipartReader(resp.read1, boundary, self.config.max_frame_bytes)
            return f"receiving MJPEG ({mime}, boundary {boundary!r})"
        if mime == "image/jpeg":
            self._reader = None
            self._pending_snapshot = self._read_snapshot(resp)
            return "polling JPEG snapshots (image/jpeg)"
        raise _ConnectionLostError(f"not an MJPEG stream or JPEG snapshot: Content-Type {content_type!r}")

    def _grab(self) -> None:
        if self._reader is not None:
            self._part = self._guarded(self._reader.next_part)
            return
        if self._pending_snapshot is not None:
            self._part, self._pending_snapshot = self._pending_snapshot, None
            return
        self._disconnect()
        resp = self._request()
        if resp.getheader("Content-Type", "").split(";")[0].strip().lower() != "image/jpeg":
            raise _ConnectionLostError(f"snapshot answer is not image/jpeg but {resp.getheader('Content-Type')!r}")
        self._part = self._read_snapshot(resp)

    def _retrieve(self) -> np.ndarray | None:
        data = self._part.rstrip(b"\r\n\t ")
        if len(data) < 4 or data[:2] != _SOI or data[-2:] != _EOI:
            return None  # empty, not a JPEG, or truncated (libjpeg would return a half-grey image)
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def _disconnect(self) -> None:
        with self._lock:
            conn, resp = self._conn, self._resp
            self._conn = self._sock = self._resp = self._reader = None
        if resp is not None:
            resp.close()
        if conn is not None:
            conn.close()

    def _interrupt(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a blocked receive returns at once (end of stream)
        except OSError as exc:  # already reset or closed by the peer: nothing left to shut down
            log.debug("%s: socket shutdown: %s", self.name, exc)

    # -- HTTP ----------------------------------------------------------------------------------------
    def _request(self) -> http.client.HTTPResponse:
        """GET the URL on a fresh connection (connect timeout, then read timeout); a 200 response."""
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.config.connect_timeout_s)
        with self._lock:
            self._conn = conn
        try:
            conn.connect()
            with self._lock:
                self._sock = conn.sock  # for _interrupt (the response keeps using it after http.client lets go)
            conn.sock.settimeout(self.config.read_timeout_s)
            conn.request("GET", self._target, headers=self._headers)
            resp = conn.getresponse()
        except TimeoutError as exc:
            raise _ConnectionLostError(f"timed out ({exc})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _ConnectionLostError(f"cannot connect: {exc}") from None
        with self._lock:
            self._resp = resp
        if resp.status != 200:
            raise _ConnectionLostError(f"HTTP {resp.status} {resp.reason}")
        return resp

    def _read_snapshot(self, resp: http.client.HTTPResponse) -> bytes:
        limit = self.config.max_frame_bytes
        if resp.length is not None and resp.length > limit:
            raise _ConnectionLostError(f"snapshot of {resp.length} bytes exceeds max_frame_bytes={limit}")
        data = self._guarded(lambda: resp.read(limit + 1))
        if len(data) > limit:
            raise _ConnectionLostError(f"snapshot exceeds max_frame_bytes={limit}")
        return data

    def _guarded(self, receive: Callable[[], bytes]) -> bytes:
        """Run a receive call, turning network failures into :class:`_ConnectionLostError`."""
        try:
            return receive()
        except TimeoutError:
            raise _ConnectionLostError(f"no data for {self.config.read_timeout_s} s (read timeout)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _ConnectionLostError(f"receive failed: {exc!r}") from None


# ----------------------------------------------------------------------------------------------------
# RTSP through OpenCV/FFmpeg
# ----------------------------------------------------------------------------------------------------


class RtspStreamSource(_ReconnectingStream):
    """An RTSP stream (``rtsp://``, ``rtsps://``) decoded by OpenCV's FFmpeg backend.

    ``capture_factory`` opens the capture for a URL (default: ``cv2.VideoCapture(url, cv2.CAP_FFMPEG,
    [CAP_PROP_OPEN_TIMEOUT_MSEC, connect_timeout, CAP_PROP_READ_TIMEOUT_MSEC, read_timeout])``).
    """

    def __init__(
        self, url: str, config: StreamConfig = StreamConfig(), *, clock: Clock | None = None,
        on_event: EventCallback | None = None, stamp_clock: Callable[[], int] = wall_clock_ns,
        capture_factory: Callable[[str], cv2.VideoCapture] | None = None,
    ) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("rtsp", "rtsps"):
            raise SourceError(f"RTSP stream {redact_url(url)}: URL scheme must be rtsp or rtsps")
        super().__init__(f"rtsp stream {redact_url(url)}", config, clock, on_event, stamp_clock)
        self.url = url
        self._factory = capture_factory or self._open_ffmpeg
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None

    @property
    def nominal_fps(self) -> float | None:
        """The frame rate the stream declares (``None`` before the first connection or when unknown)."""
        return self._fps

    def _open_ffmpeg(self, url: str) -> cv2.VideoCapture:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.config.connect_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.config.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    def _connect(self) -> str:
        cap = self._factory(self.url)
        self._cap = cap
        if not cap.isOpened():
            raise _ConnectionLostError(
                f"cannot open the stream (refused, unreachable, not RTSP, or no answer within "
                f"{self.config.connect_timeout_s} s)"
            )
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if math.isfinite(fps) and 0 < fps <= 1000 else None
        return f"receiving RTSP ({cap.getBackendName()}, {self._fps or 'unknown'} fps)"

    def _grab(self) -> None:
        cap = self._cap
        if cap is None or not cap.grab():
            raise _ConnectionLostError(
                f"no frame within the read timeout of {self.config.read_timeout_s} s (stream ended, stalled or dropped)"
            )

    def _retrieve(self) -> np.ndarray | None:
        assert self._cap is not None
        ok, image = self._cap.retrieve()
        return image if ok else None

    def _disconnect(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _interrupt(self) -> None:
        """Nothing: releasing a capture while another thread grabs from it is unsafe; the grab ends by its
        read timeout and the reading thread then sees the source closed."""


def open_stream(
    url: str, config: StreamConfig = StreamConfig(), *, clock: Clock | None = None,
    on_event: EventCallback | None = None,
) -> MjpegStreamSource | RtspStreamSource:
    """The source for a stream URL: MJPEG/snapshot for ``http(s)://``, RTSP for ``rtsp(s)://`` (not opened yet)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return MjpegStreamSource(url, config, clock=clock, on_event=on_event)
    if scheme in ("rtsp", "rtsps"):
        return RtspStreamSource(url, config, clock=clock, on_event=on_event)
    raise SourceError(f"stream {redact_url(url)}: unsupported URL scheme {scheme!r} (use http, https, rtsp or rtsps)")
