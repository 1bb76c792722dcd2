"""The vocabulary of depthslam: one frozen dataclass per message, explicit msgpack encode/decode.

Wire format of every payload (the second frame of a multipart ``[topic, payload]`` ZeroMQ message)::

    {"type": "<message type>", "v": WIRE_VERSION, "seq": <publisher sequence number>, "body": {...}}

Arrays travel as ``{"dtype": "<f4", "shape": [h, w], "data": <raw bytes>}`` (little-endian dtype strings
from an allow-list) or, for colour images when the sender asks for it, as
``{"jpeg": <bytes>, "shape": [h, w, 3]}``. Nothing is ever pickled.

Decoding validates everything and raises :class:`WireError` only: a hostile payload can neither crash a
receiver nor make it allocate more than :class:`DecodeLimits` allows.

Conventions: poses are ``T_W_C`` (camera to world, 4x4 float64, camera axes x right, y down, z forward);
depth is float32 metres with 0 = invalid (or relative inverse depth, tagged by :class:`DepthKind`);
timestamps are ``stamp_ns`` integers of the capture clock.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import numpy as np

WIRE_VERSION = 1

#: dtypes allowed on the wire (numpy ``dtype.str`` spelling, little-endian).
ALLOWED_DTYPES: frozenset[str] = frozenset({"|u1", "<u2", "<u4", "<i4", "<i8", "<f4", "<f8", "|b1"})

MAX_ARRAY_NDIM = 4


class WireError(ValueError):
    """The one error type raised for any malformed, hostile or oversized message."""


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds a receiver enforces before it allocates anything."""

    max_message_bytes: int = 256 * 1024 * 1024
    """Largest accepted payload, in bytes (checked before msgpack parses it)."""
    max_array_bytes: int = 128 * 1024 * 1024
    """Largest accepted decoded array, in bytes (checked from dtype and shape before allocation)."""
    max_image_side_px: int = 16384
    """Largest accepted side of an image or any array dimension that is an image side."""
    max_list_items: int = 1_000_000
    """Largest accepted msgpack array/map length (e.g. number of mesh blocks in one map update)."""

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_array_bytes", "max_image_side_px", "max_list_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"DecodeLimits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = DecodeLimits()


# ----------------------------------------------------------------------------------------------------
# small validation helpers (raise WireError with the field name)
# ----------------------------------------------------------------------------------------------------


def _req(body: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in body:
        raise WireError(f"{where}: missing field {key!r}")
    value = body[key]
    if isinstance(value, bool) and types in (int, float, (int, float)):
        raise WireError(f"{where}.{key}: expected {types}, got bool")
    if not isinstance(value, types):
        raise WireError(f"{where}.{key}: expected {types}, got {type(value).__name__}")
    return value


def _opt(body: dict[str, Any], key: str) -> Any:
    return body.get(key)


def _int(body: dict[str, Any], key: str, where: str, *, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    value = _req(body, key, int, where)
    if not lo <= value <= hi:
        raise WireError(f"{where}.{key}: {value} outside [{lo}, {hi}]")
    return int(value)


def _float(body: dict[str, Any], key: str, where: str) -> float:
    value = _req(body, key, (int, float), where)
    if not math.isfinite(value):
        raise WireError(f"{where}.{key}: not finite")
    return float(value)


def _str(body: dict[str, Any], key: str, where: str, *, max_len: int = 4096) -> str:
    value = _req(body, key, str, where)
    if len(value) > max_len:
        raise WireError(f"{where}.{key}: string longer than {max_len}")
    return value


def _check_array(
    value: Any, name: str, *, dtype: str, ndim: int, last: int | None = None
) -> np.ndarray:
    """Validate an array held by a message (construction time, not wire)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != ndim or (last is not None and value.shape[-1] != last):
        want = f"{ndim}-D" + (f" with last axis {last}" if last is not None else "")
        raise ValueError(f"{name} must be {want}, got shape {value.shape}")
    return value


# ----------------------------------------------------------------------------------------------------
# arrays on the wire
# ----------------------------------------------------------------------------------------------------


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """Encode an array as raw little-endian bytes with dtype and shape."""
    arr = np.asarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise TypeError(f"dtype {arr.dtype} is not allowed on the wire (allowed: {sorted(ALLOWED_DTYPES)})")
    if arr.ndim > MAX_ARRAY_NDIM:
        raise ValueError(f"arrays on the wire have at most {MAX_ARRAY_NDIM} dimensions, got {arr.ndim}")
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).tobytes()}


def decode_array(value: Any, where: str, limits: DecodeLimits) -> np.ndarray:
    """Decode and validate an array written by :func:`encode_array` (read-only, zero-copy)."""
    if not isinstance(value, dict):
        raise WireError(f"{where}: array must be a map, got {type(value).__name__}")
    if "jpeg" in value:
        return _decode_jpeg(value, where, limits)
    dtype_str = _str(value, "dtype", where, max_len=8)
    if dtype_str not in ALLOWED_DTYPES:
        raise WireError(f"{where}: dtype {dtype_str!r} not in the allow-list")
    shape = _shape(value, where, limits)
    data = _req(value, "data", bytes, where)
    dtype = np.dtype(dtype_str)
    expected = math.prod(shape) * dtype.itemsize
    if expected > limits.max_array_bytes:
        raise WireError(f"{where}: array of {expected} bytes exceeds the limit of {limits.max_array_bytes}")
    if len(data) != expected:
        raise WireError(f"{where}: shape {shape} x {dtype_str} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _shape(value: dict[str, Any], where: str, limits: DecodeLimits) -> tuple[int, ...]:
    shape = _req(value, "shape", list, where)
    if len(shape) > MAX_ARRAY_NDIM:
        raise WireError(f"{where}: {len(shape)} dimensions, at most {MAX_ARRAY_NDIM} allowed")
    out = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise WireError(f"{where}: bad dimension {dim!r} in shape")
        if dim > max(limits.max_image_side_px, limits.max_list_items):
            raise WireError(f"{where}: dimension {dim} too large")
        out.append(dim)
    return tuple(out)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's SOF marker, without decoding it."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise WireError("jpeg: missing SOI marker")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise WireError("jpeg: corrupt marker stream")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        if seg_len < 2:
            raise WireError("jpeg: bad segment length")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(data):
                raise WireError("jpeg: truncated frame header")
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return height, width
        i += 2 + seg_len
    raise WireError("jpeg: no frame header found")


def _decode_jpeg(value: dict[str, Any], where: str, limits: DecodeLimits) -> np.ndarray:
    import cv2  # lazily: only JPEG-carrying colour frames need it

    data = _req(value, "jpeg", bytes, where)
    shape = _shape(value, where, limits)
    if len(shape) != 3 or shape[2] != 3:
        raise WireError(f"{where}: jpeg image shape must be [h, w, 3], got {list(shape)}")
    if shape[0] > limits.max_image_side_px or shape[1] > limits.max_image_side_px:
        raise WireError(f"{where}: jpeg image {shape[1]}x{shape[0]} exceeds {limits.max_image_side_px} px")
    if math.prod(shape) > limits.max_array_bytes:
        raise WireError(f"{where}: jpeg image of {math.prod(shape)} bytes exceeds the limit")
    if _jpeg_size(data) != shape[:2]:
        raise WireError(f"{where}: jpeg header size {_jpeg_size(data)} differs from declared {shape[:2]}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != shape:
        raise WireError(f"{where}: jpeg data does not decode to {list(shape)}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> dict[str, Any]:
    """Encode an HxWx3 uint8 RGB image as JPEG with the sender's quality (1..100)."""
    import cv2

    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the image")
    return {"jpeg": buf.tobytes(), "shape": list(image_rgb.shape)}


def _opt_array(body: dict[str, Any], key: str, where: str, limits: DecodeLimits) -> np.ndarray | None:
    value = _opt(body, key)
    return None if value is None else decode_array(value, f"{where}.{key}", limits)


def _pose_from_wire(value: Any, where: str, limits: DecodeLimits) -> np.ndarray:
    pose = decode_array(value, where, limits)
    if pose.shape != (4, 4) or pose.dtype != np.float64:
        raise WireError(f"{where}: pose must be 4x4 float64, got {pose.shape} {pose.dtype}")
    if not np.all(np.isfinite(pose)):
        raise WireError(f"{where}: pose has non-finite entries")
    return pose


# ----------------------------------------------------------------------------------------------------
# message types
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics for an image of ``width_px`` x ``height_px`` plus optional distortion.

    ``distortion`` follows OpenCV's order (k1, k2, p1, p2[, k3[, k4, k5, k6]]); empty means none.
    """

    width_px: int
    height_px: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.width_px <= 0 or self.height_px <= 0:
            raise ValueError(f"intrinsics image size must be positive, got {self.width_px}x{self.height_px}")
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"focal lengths must be positive and finite, got fx={self.fx} fy={self.fy}")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise ValueError("principal point must be finite")
        if len(self.distortion) not in (0, 4, 5, 8) or not all(math.isfinite(d) for d in self.distortion):
            raise ValueError(f"distortion must have 0, 4, 5 or 8 finite coefficients, got {self.distortion}")

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name
        """3x3 float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width_px: int, height_px: int) -> Intrinsics:
        """The same camera for a resized image (pixel-centre convention: u' = (u + 0.5) s - 0.5)."""
        sx, sy = width_px / self.width_px, height_px / self.height_px
        return Intrinsics(
            width_px, height_px, self.fx * sx, self.fy * sy,
            (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, self.distortion,
        )

    @staticmethod
    def from_hfov(width_px: int, height_px: int, hfov_deg: float) -> Intrinsics:
        """Square pixels, centred principal point, focal length from a horizontal field of view."""
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
        f = 0.5 * width_px / math.tan(math.radians(hfov_deg) / 2.0)
        return Intrinsics(width_px, height_px, f, f, (width_px - 1) / 2.0, (height_px - 1) / 2.0)

    def to_wire(self) -> dict[str, Any]:
        return {
            "width_px": self.width_px, "height_px": self.height_px, "fx": self.fx, "fy": self.fy,
            "cx": self.cx, "cy": self.cy, "distortion": list(self.distortion),
        }

    @staticmethod
    def from_wire(body: Any, where: str = "intrinsics") -> Intrinsics:
        if not isinstance(body, dict):
            raise WireError(f"{where}: must be a map")
        dist = _req(body, "distortion", list, where)
        if len(dist) > 8 or not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in dist):
            raise WireError(f"{where}.distortion: at most 8 numbers")
        try:
            return Intrinsics(
                _int(body, "width_px", where, lo=1, hi=1 << 20), _int(body, "height_px", where, lo=1, hi=1 << 20),
                _float(body, "fx", where), _float(body, "fy", where),
                _float(body, "cx", where), _float(body, "cy", where), tuple(float(d) for d in dist),
            )
        except ValueError as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"{where}: {exc}") from exc


class _Message:
    """Mixin: envelope handling shared by all message dataclasses."""

    TYPE: ClassVar[str]

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> Any:
        raise NotImplementedError

    def encode(self, *, seq: int = 0, jpeg_quality: int | None = None) -> bytes:
        """msgpack bytes of this message; ``jpeg_quality`` compresses colour images (ColorFrame only)."""
        envelope = {"type": self.TYPE, "v": WIRE_VERSION, "seq": seq, "body": self.body(jpeg_quality)}
        return msgpack.packb(envelope, use_bin_type=True)

    @classmethod
    def decode(cls, payload: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Any:
        """Decode ``payload`` that must hold a message of this class."""
        envelope = decode(payload, limits)
        if not isinstance(envelope.message, cls):
            raise WireError(f"expected a {cls.TYPE!r} message, got {envelope.message.TYPE!r}")
        return envelope.message


@dataclass(frozen=True, eq=False)
class ColorFrame(_Message):
    """One captured colour image, with what the source knows about it.

    image: (H, W, 3) uint8 RGB. depth_m: optional (H, W) float32 ground-truth/sensor depth, 0 = invalid.
    T_W_C: optional (4, 4) float64 ground-truth camera-to-world pose.
    """

    TYPE: ClassVar[str] = "color"
    frame_id: int
    stamp_ns: int
    image: np.ndarray
    intrinsics: Intrinsics | None = None
    depth_m: np.ndarray | None = None
    T_W_C: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _check_array(self.image, "ColorFrame.image", dtype="uint8", ndim=3, last=3)
        h, w = self.image.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("ColorFrame.image is empty")
        if self.depth_m is not None:
            _check_array(self.depth_m, "ColorFrame.depth_m", dtype="float32", ndim=2)
            if self.depth_m.shape != (h, w):
                raise ValueError(f"ColorFrame.depth_m shape {self.depth_m.shape} differs from image {(h, w)}")
        if self.T_W_C is not None:
            _check_array(self.T_W_C, "ColorFrame.T_W_C", dtype="float64", ndim=2)
            if self.T_W_C.shape != (4, 4):
                raise ValueError(f"ColorFrame.T_W_C must be 4x4, got {self.T_W_C.shape}")
        if self.intrinsics is not None and (self.intrinsics.width_px, self.intrinsics.height_px) != (w, h):
            raise ValueError(
                f"intrinsics are for {self.intrinsics.width_px}x{self.intrinsics.height_px}, image is {w}x{h}"
            )

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        image = encode_array(self.image) if jpeg_quality is None else encode_jpeg(self.image, jpeg_quality)
        return {
            "frame_id": self.frame_id, "stamp_ns": self.stamp_ns, "image": image, "source": self.source,
            "intrinsics": None if self.intrinsics is None else self.intrinsics.to_wire(),
            "depth_m": None if self.depth_m is None else encode_array(self.depth_m),
            "T_W_C": None if self.T_W_C is None else encode_array(self.T_W_C),
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> ColorFrame:
        w = "color"
        raw_k = _opt(body, "intrinsics")
        pose = _opt(body, "T_W_C")
        try:
            return cls(
                frame_id=_int(body, "frame_id", w), stamp_ns=_int(body, "stamp_ns", w),
                image=decode_array(_req(body, "image", dict, w), f"{w}.image", limits),
                intrinsics=None if raw_k is None else Intrinsics.from_wire(raw_k, f"{w}.intrinsics"),
                depth_m=_opt_array(body, "depth_m", w, limits),
                T_W_C=None if pose is None else _pose_from_wire(pose, f"{w}.T_W_C", limits),
                source=_str(body, "source", w),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"{w}: {exc}") from exc

    def same_as(self, other: ColorFrame) -> bool:
        """Exact equality of every field, arrays included."""
        return (
            isinstance(other, ColorFrame) and self.frame_id == other.frame_id and self.stamp_ns == other.stamp_ns
            and self.intrinsics == other.intrinsics and self.source == other.source
            and _arr_eq(self.image, other.image) and _arr_eq(self.depth_m, other.depth_m)
            and _arr_eq(self.T_W_C, other.T_W_C)
        )


class DepthKind(enum.StrEnum):
    """What a depth image holds."""

    METRIC = "metric"
    """Depth along the optical axis in metres, 0 = invalid."""
    INVERSE_RELATIVE = "inverse_relative"
    """Affine-invariant inverse depth (unknown scale and shift), 0 = invalid; the tracker aligns it."""


@dataclass(frozen=True, eq=False)
class DepthFrame(_Message):
    """Depth for one colour frame, as produced by a depth engine (or passed through from the source).

    depth: (H, W) float32, meaning given by ``kind``. image: the (H, W, 3) uint8 RGB frame it belongs to.
    confidence: optional (H, W) float32 in [0, 1]. T_W_C_gt: ground-truth pose when the source had one.
    """

    TYPE: ClassVar[str] = "depth"
    frame_id: int
    stamp_ns: int
    depth: np.ndarray
    kind: DepthKind
    intrinsics: Intrinsics | None
    image: np.ndarray | None = None
    confidence: np.ndarray | None = None
    T_W_C_gt: np.ndarray | None = None
    model: str = ""

    def __post_init__(self) -> None:
        _check_array(self.depth, "DepthFrame.depth", dtype="float32", ndim=2)
        if not isinstance(self.kind, DepthKind):
            raise TypeError(f"DepthFrame.kind must be a DepthKind, got {self.kind!r}")
        hw = self.depth.shape
        if self.image is not None:
            _check_array(self.image, "DepthFrame.image", dtype="uint8", ndim=3, last=3)
            if self.image.shape[:2] != hw:
                raise ValueError(f"DepthFrame.image shape {self.image.shape[:2]} differs from depth {hw}")
        if self.confidence is not None:
            _check_array(self.confidence, "DepthFrame.confidence", dtype="float32", ndim=2)
            if self.confidence.shape != hw:
                raise ValueError("DepthFrame.confidence shape differs from depth")
        if self.T_W_C_gt is not None:
            _check_array(self.T_W_C_gt, "DepthFrame.T_W_C_gt", dtype="float64", ndim=2)
            if self.T_W_C_gt.shape != (4, 4):
                raise ValueError("DepthFrame.T_W_C_gt must be 4x4")
        if self.intrinsics is not None and (self.intrinsics.height_px, self.intrinsics.width_px) != hw:
            raise ValueError("DepthFrame.intrinsics size differs from depth")

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        def enc(a: np.ndarray | None) -> dict[str, Any] | None:
            return None if a is None else encode_array(a)

        return {
            "frame_id": self.frame_id, "stamp_ns": self.stamp_ns, "depth": encode_array(self.depth),
            "kind": self.kind.value, "intrinsics": None if self.intrinsics is None else self.intrinsics.to_wire(),
            "image": enc(self.image), "confidence": enc(self.confidence), "T_W_C_gt": enc(self.T_W_C_gt),
            "model": self.model,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> DepthFrame:
        w = "depth"
        kind = _str(body, "kind", w, max_len=32)
        if kind not in {k.value for k in DepthKind}:
            raise WireError(f"{w}.kind: unknown depth kind {kind!r}")
        raw_k = _opt(body, "intrinsics")
        pose = _opt(body, "T_W_C_gt")
        try:
            return cls(
                frame_id=_int(body, "frame_id", w), stamp_ns=_int(body, "stamp_ns", w),
                depth=decode_array(_req(body, "depth", dict, w), f"{w}.depth", limits), kind=DepthKind(kind),
                intrinsics=None if raw_k is None else Intrinsics.from_wire(raw_k, f"{w}.intrinsics"),
                image=_opt_array(body, "image", w, limits), confidence=_opt_array(body, "confidence", w, limits),
                T_W_C_gt=None if pose is None else _pose_from_wire(pose, f"{w}.T_W_C_gt", limits),
                model=_str(body, "model", w),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"{w}: {exc}") from exc


class TrackingState(enum.StrEnum):
    """The tracker's state for a frame."""

    INITIALISING = "initialising"
    TRACKING = "tracking"
    LOST = "lost"
    RELOCALISED = "relocalised"


@dataclass(frozen=True, eq=False)
class PoseUpdate(_Message):
    """The tracker's pose for one frame. ``T_W_C`` is (4, 4) float64; ``depth_scale`` aligns its depth."""

    TYPE: ClassVar[str] = "pose"
    frame_id: int
    stamp_ns: int
    T_W_C: np.ndarray
    state: TrackingState
    is_keyframe: bool = False
    depth_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_array(self.T_W_C, "PoseUpdate.T_W_C", dtype="float64", ndim=2)
        if self.T_W_C.shape != (4, 4):
            raise ValueError("PoseUpdate.T_W_C must be 4x4")
        if not isinstance(self.state, TrackingState):
            raise TypeError(f"PoseUpdate.state must be a TrackingState, got {self.state!r}")

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        return {
            "frame_id": self.frame_id, "stamp_ns": self.stamp_ns, "T_W_C": encode_array(self.T_W_C),
            "state": self.state.value, "is_keyframe": self.is_keyframe, "depth_scale": self.depth_scale,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> PoseUpdate:
        w = "pose"
        state = _str(body, "state", w, max_len=32)
        if state not in {s.value for s in TrackingState}:
            raise WireError(f"{w}.state: unknown tracking state {state!r}")
        return cls(
            frame_id=_int(body, "frame_id", w), stamp_ns=_int(body, "stamp_ns", w),
            T_W_C=_pose_from_wire(_req(body, "T_W_C", dict, w), f"{w}.T_W_C", limits),
            state=TrackingState(state), is_keyframe=_req(body, "is_keyframe", bool, w),
            depth_scale=_float(body, "depth_scale", w),
        )


@dataclass(frozen=True, eq=False)
class MeshBlock:
    """The mesh of one map block. vertices (N, 3) float32 metres in world; faces (M, 3) int32; colors (N, 3) uint8.

    An empty mesh (N = 0) means the block no longer holds surface.
    """

    key: tuple[int, int, int]
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

    def __post_init__(self) -> None:
        if len(self.key) != 3 or not all(isinstance(k, int) for k in self.key):
            raise ValueError(f"MeshBlock.key must be three ints, got {self.key!r}")
        _check_array(self.vertices, "MeshBlock.vertices", dtype="float32", ndim=2, last=3)
        _check_array(self.faces, "MeshBlock.faces", dtype="int32", ndim=2, last=3)
        _check_array(self.colors, "MeshBlock.colors", dtype="uint8", ndim=2, last=3)
        if self.colors.shape[0] != self.vertices.shape[0]:
            raise ValueError("MeshBlock.colors must have one row per vertex")
        n = self.vertices.shape[0]
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n):
            raise ValueError(f"MeshBlock.faces index outside 0..{n - 1}")

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": list(self.key), "vertices": encode_array(self.vertices),
            "faces": encode_array(self.faces), "colors": encode_array(self.colors),
        }

    @staticmethod
    def from_wire(body: Any, where: str, limits: DecodeLimits) -> MeshBlock:
        if not isinstance(body, dict):
            raise WireError(f"{where}: must be a map")
        key = _req(body, "key", list, where)
        if len(key) != 3 or not all(isinstance(k, int) and not isinstance(k, bool) and abs(k) < 2**31 for k in key):
            raise WireError(f"{where}.key: must be three 32-bit ints")
        try:
            return MeshBlock(
                (int(key[0]), int(key[1]), int(key[2])),
                decode_array(_req(body, "vertices", dict, where), f"{where}.vertices", limits),
                decode_array(_req(body, "faces", dict, where), f"{where}.faces", limits),
                decode_array(_req(body, "colors", dict, where), f"{where}.colors", limits),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"{where}: {exc}") from exc

    def same_as(self, other: MeshBlock) -> bool:
        return (
            self.key == other.key and _arr_eq(self.vertices, other.vertices)
            and _arr_eq(self.faces, other.faces) and _arr_eq(self.colors, other.colors)
        )


@dataclass(frozen=True, eq=False)
class MapUpdate(_Message):
    """A change of the map: the mesh of every block that changed (or all blocks, for a snapshot).

    ``map_seq`` numbers updates of one map without gaps; a snapshot carries the ``map_seq`` it is
    consistent with.
    """

    TYPE: ClassVar[str] = "map"
    map_seq: int
    stamp_ns: int
    frame_id: int
    blocks: tuple[MeshBlock, ...]
    is_snapshot: bool = False
    voxel_size_m: float = 0.0

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        return {
            "map_seq": self.map_seq, "stamp_ns": self.stamp_ns, "frame_id": self.frame_id,
            "blocks": [b.to_wire() for b in self.blocks], "is_snapshot": self.is_snapshot,
            "voxel_size_m": self.voxel_size_m,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> MapUpdate:
        w = "map"
        blocks = _req(body, "blocks", list, w)
        total = 0
        decoded = []
        for i, b in enumerate(blocks):
            block = MeshBlock.from_wire(b, f"{w}.blocks[{i}]", limits)
            total += block.vertices.nbytes + block.faces.nbytes + block.colors.nbytes
            if total > limits.max_array_bytes:
                raise WireError(f"{w}: blocks exceed {limits.max_array_bytes} bytes in total")
            decoded.append(block)
        return cls(
            map_seq=_int(body, "map_seq", w, lo=0), stamp_ns=_int(body, "stamp_ns", w),
            frame_id=_int(body, "frame_id", w), blocks=tuple(decoded),
            is_snapshot=_req(body, "is_snapshot", bool, w), voxel_size_m=_float(body, "voxel_size_m", w),
        )


@dataclass(frozen=True)
class Status(_Message):
    """A stage's state and counters, e.g. ``Status("capture", t, "reconnecting", "stream dropped", {...})``."""

    TYPE: ClassVar[str] = "status"
    stage: str
    stamp_ns: int
    state: str
    text: str = ""
    counters: dict[str, float] = field(default_factory=dict)

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        return {"stage": self.stage, "stamp_ns": self.stamp_ns, "state": self.state, "text": self.text,
                "counters": dict(self.counters)}

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> Status:
        w = "status"
        counters = _req(body, "counters", dict, w)
        if len(counters) > 256:
            raise WireError(f"{w}.counters: more than 256 entries")
        clean: dict[str, float] = {}
        for k, v in counters.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise WireError(f"{w}.counters: entries must be str -> number")
            clean[k] = v
        return cls(_str(body, "stage", w, max_len=64), _int(body, "stamp_ns", w), _str(body, "state", w, max_len=64),
                   _str(body, "text", w), clean)


class ControlCommand(enum.StrEnum):
    """Commands a controller sends to stages."""

    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    SAVE = "save"


@dataclass(frozen=True)
class Control(_Message):
    """A command for one stage (or ``"*"`` for all)."""

    TYPE: ClassVar[str] = "control"
    command: ControlCommand
    target: str = "*"
    stamp_ns: int = 0

    def body(self, jpeg_quality: int | None = None) -> dict[str, Any]:
        return {"command": self.command.value, "target": self.target, "stamp_ns": self.stamp_ns}

    @classmethod
    def from_body(cls, body: dict[str, Any], limits: DecodeLimits) -> Control:
        w = "control"
        cmd = _str(body, "command", w, max_len=32)
        if cmd not in {c.value for c in ControlCommand}:
            raise WireError(f"{w}.command: unknown command {cmd!r}")
        return cls(ControlCommand(cmd), _str(body, "target", w, max_len=64), _int(body, "stamp_ns", w))


Message = ColorFrame | DepthFrame | PoseUpdate | MapUpdate | Status | Control
MESSAGE_TYPES: dict[str, type[_Message]] = {
    cls.TYPE: cls for cls in (ColorFrame, DepthFrame, PoseUpdate, MapUpdate, Status, Control)
}


@dataclass(frozen=True)
class Envelope:
    """A decoded payload: the publisher's sequence number and the message."""

    seq: int
    message: Message


def decode(payload: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Envelope:
    """Decode any message payload; raises :class:`WireError` for anything malformed or too large."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > limits.max_message_bytes:
        raise WireError(f"payload of {len(payload)} bytes exceeds the limit of {limits.max_message_bytes}")
    try:
        envelope = msgpack.unpackb(
            payload, raw=False, use_list=True, strict_map_key=True,
            max_bin_len=limits.max_array_bytes, max_str_len=1 << 20,
            max_array_len=limits.max_list_items, max_map_len=limits.max_list_items, max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise WireError(f"not a valid msgpack payload: {exc}") from exc
    if not isinstance(envelope, dict):
        raise WireError(f"payload must be a msgpack map, got {type(envelope).__name__}")
    kind = _str(envelope, "type", "envelope", max_len=32)
    version = _int(envelope, "v", "envelope")
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version} is not supported (this build speaks {WIRE_VERSION})")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise WireError(f"unknown message type {kind!r}")
    seq = _int(envelope, "seq", "envelope", lo=0)
    body = _req(envelope, "body", dict, "envelope")
    return Envelope(seq, cls.from_body(body, limits))


def _arr_eq(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
