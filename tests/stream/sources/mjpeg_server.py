"""Test helpers for the capture-source tests: numbered test images and videos, a real MJPEG server on loopback.

* :func:`numbered_image` draws an RGB image whose number (0..255) is written as eight big black/white
  blocks under a pure red strip; :func:`read_number` reads it back. Both survive JPEG/MPEG-4 compression
  and tell at once whether frames arrive in order and whether the channel order is RGB.
* :func:`write_numbered_video` writes such frames with ``cv2.VideoWriter``.
* :class:`MjpegServer` is a real ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0) that serves
  ``multipart/x-mixed-replace`` MJPEG (or single JPEG snapshots, or HTML), and can drop the connection
  after N frames, stall, send corrupt parts, or answer with an HTTP error, per connection.
* :func:`closed_port` and :class:`SilentTcpServer` stand in for refused and unresponsive servers.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

WIDTH_PX = 160
HEIGHT_PX = 120
RED_RGB = (255, 0, 0)
_BITS = 8


# ----------------------------------------------------------------------------------------------------
# numbered images and videos
# ----------------------------------------------------------------------------------------------------


def _layout(height_px: int, width_px: int) -> tuple[int, int, int]:
    strip_h = height_px // 3
    return strip_h, (height_px - strip_h) // 2, width_px // 4


def numbered_image(number: int, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a pure red strip on top, below it ``number % 256`` as 2 x 4 black/white blocks."""
    image = np.zeros((height_px, width_px, 3), np.uint8)
    strip_h, block_h, block_w = _layout(height_px, width_px)
    image[:strip_h] = RED_RGB
    value = number % (1 << _BITS)
    for bit in range(_BITS):
        if value >> bit & 1:
            row, col = divmod(bit, 4)
            y0 = strip_h + row * block_h
            image[y0 : y0 + block_h, col * block_w : (col + 1) * block_w] = 255
    return image


def read_number(image_rgb: np.ndarray) -> int:
    """The number drawn by :func:`numbered_image`; ValueError when a block is neither black nor white."""
    strip_h, block_h, block_w = _layout(*image_rgb.shape[:2])
    grey = image_rgb.astype(np.float32).mean(axis=2)
    value = 0
    for bit in range(_BITS):
        row, col = divmod(bit, 4)
        y0, x0 = strip_h + row * block_h, col * block_w
        mean = float(grey[y0 + block_h // 4 : y0 + 3 * block_h // 4, x0 + block_w // 4 : x0 + 3 * block_w // 4].mean())
        if 60 < mean < 195:
            raise ValueError(f"bit {bit} block has mean grey {mean:.0f}: not a numbered image")
        value |= int(mean >= 195) << bit
    return value


def strip_rgb(image_rgb: np.ndarray) -> np.ndarray:
    """Mean (R, G, B) of the interior of the red strip, float64 (3,)."""
    strip_h = _layout(*image_rgb.shape[:2])[0]
    return image_rgb[strip_h // 4 : 3 * strip_h // 4, 8:-8].reshape(-1, 3).mean(axis=0)


def write_numbered_video(
    path: Path, fourcc: str, n_frames: int, fps: float, *, first_number: int = 0, red_only: bool = False,
) -> Path:
    """Write ``n_frames`` numbered frames (or pure red frames) with ``cv2.VideoWriter``; returns ``path``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH_PX, HEIGHT_PX))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {fourcc} to {path}")
    red = np.zeros((HEIGHT_PX, WIDTH_PX, 3), np.uint8)
    red[:] = RED_RGB
    for i in range(n_frames):
        rgb = red if red_only else numbered_image(first_number + i)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def with_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding a small JPEG (its own SOI ... EOI), as cameras embed EXIF thumbnails."""
    thumb = encode_jpeg(np.full((8, 8, 3), 128, np.uint8))
    payload = b"DSthumb\x00" + thumb
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


# ----------------------------------------------------------------------------------------------------
# the MJPEG server
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """What :class:`MjpegServer` does on one connection (one GET)."""

    status: int = 200
    """HTTP status; anything but 200 answers with that error and nothing else."""
    kind: str = "multipart"
    """``"multipart"`` (MJPEG stream), ``"snapshot"`` (one image/jpeg) or ``"html"`` (a web page)."""
    frames: int | None = None
    """Multipart: frames to send before ``then`` (``None``: until the client leaves)."""
    then: str = "close"
    """After ``frames``: ``"close"`` the connection or ``"stall"`` (keep it open, send nothing)."""
    garbage: frozenset[int] = frozenset()
    """Frame numbers sent as a part that is not a JPEG at all."""
    truncated: frozenset[int] = frozenset()
    """Frame numbers sent as the first half of their JPEG."""
    content_length: bool = True
    """Send a Content-Length header with every part."""
    thumbnail: bool = False
    """Embed a thumbnail JPEG (with its own EOI marker) in every frame."""
    boundary: str = "depthslamframe"
    """The multipart boundary."""


@dataclass
class _Shared:
    behaviours: tuple[Behaviour, ...]
    width_px: int
    height_px: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    next_number: int = 0
    authorizations: list[str | None] = field(default_factory=list)

    def begin(self, authorization: str | None) -> Behaviour:
        with self.lock:
            behaviour = self.behaviours[min(self.connections, len(self.behaviours) - 1)]
            self.connections += 1
            self.authorizations.append(authorization)
            return behaviour

    def take_number(self) -> int:
        with self.lock:
            number = self.next_number
            self.next_number += 1
            return number

    def frame_bytes(self, number: int, behaviour: Behaviour) -> bytes:
        if number in behaviour.garbage:
            return b"this is not a JPEG image " * 40
        jpeg = encode_jpeg(numbered_image(number, self.width_px, self.height_px))
        if number in behaviour.truncated:
            return jpeg[: len(jpeg) // 2]
        return with_thumbnail(jpeg) if behaviour.thumbnail else jpeg


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests do not want the access log on stderr."""

    def do_GET(self) -> None:
        shared = self.server.shared
        behaviour = shared.begin(self.headers.get("Authorization"))
        try:
            if behaviour.status != 200:
                self.send_error(behaviour.status)
            elif behaviour.kind == "html":
                self._send_body("text/html", b"<html><body>camera settings</body></html>")
            elif behaviour.kind == "snapshot":
                self._send_body("image/jpeg", shared.frame_bytes(shared.take_number(), behaviour))
            else:
                self._stream(shared, behaviour)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client left, as clients do

    def _send_body(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, shared: _Shared, behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={behaviour.boundary}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sent = 0
        while (behaviour.frames is None or sent < behaviour.frames) and not shared.stopping.is_set():
            data = shared.frame_bytes(shared.take_number(), behaviour)
            head = f"--{behaviour.boundary}\r\nContent-Type: image/jpeg\r\n"
            if behaviour.content_length:
                head += f"Content-Length: {len(data)}\r\n"
            self.wfile.write(head.encode("ascii") + b"\r\n" + data + b"\r\n")
            sent += 1
        if behaviour.then == "stall":
            shared.stalled.set()
            shared.stopping.wait()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        super().__init__(("127.0.0.1", 0), _Handler)


class MjpegServer:
    """A loopback MJPEG server; connection ``i`` behaves as ``behaviours[min(i, len - 1)]``.

    Frame numbers run on across connections (a client that reconnects after a drop sees them continue).
    Use as a context manager; ``url`` is ``http://127.0.0.1:<port>/video``.
    """

    def __init__(
        self, behaviours: Sequence[Behaviour] = (Behaviour(),), width_px: int = WIDTH_PX,
        height_px: int = HEIGHT_PX,
    ) -> None:
        if not behaviours:
            raise ValueError("give at least one Behaviour")
        self.shared = _Shared(tuple(behaviours), width_px, height_px)
        self._server = _Server(self.shared)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="mjpeg-server", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video"

    @property
    def connections(self) -> int:
        """GET requests served so far."""
        with self.shared.lock:
            return self.shared.connections

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request (``None`` when absent)."""
        with self.shared.lock:
            return list(self.shared.authorizations)

    def wait_stalled(self, timeout_s: float) -> bool:
        """Wait until a connection has entered its stall; True if it did."""
        return self.shared.stalled.wait(timeout_s)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.shared.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


# ----------------------------------------------------------------------------------------------------
# refused and unresponsive servers
# ----------------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback TCP port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentTcpServer:
    """Accepts TCP connections on loopback and never sends a byte (an unresponsive camera)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="silent-server", daemon=True)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._accepted.append(conn)

    def __enter__(self) -> SilentTcpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        for conn in self._accepted:
            conn.close()
        self._sock.close()
