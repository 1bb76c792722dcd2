"""Camera calibration: calibration files in, calibration files out, and chessboard calibration.

File formats (chosen by suffix):

* ``.yaml`` / ``.yml`` / ``.xml``: OpenCV ``FileStorage`` with ``image_width``, ``image_height``,
  ``camera_matrix`` (3x3) and ``distortion_coefficients`` (0, 4, 5 or 8 values), the layout OpenCV's
  calibration sample writes (its other keys, such as ``avg_reprojection_error``, are accepted and ignored).
* ``.json``: ``{"width_px", "height_px", "fx", "fy", "cx", "cy", "distortion": [...]}`` (optionally
  ``rms_reprojection_px`` and ``num_views_used``).
* ``.txt``: the ``key value`` camera file of the data folders (``width height fx fy cx cy``, ``d0..dN``
  or ``distortion none``, optional ``depth_scale``; ``#`` starts a comment), see :func:`read_camera_txt`.

Every malformed file raises :class:`CalibrationFileError` (a ValueError) naming the file and the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.messages import Intrinsics

OPENCV_SUFFIXES = frozenset({".yaml", ".yml", ".xml"})
JSON_SUFFIX = ".json"
CAMERA_TXT_SUFFIX = ".txt"

#: Keys OpenCV's calibration samples write besides the four we read; accepted and ignored.
_OPENCV_EXTRA_KEYS = frozenset({
    "calibration_time", "nframes", "nr_of_frames", "board_width", "board_height", "square_size",
    "aspectRatio", "aspect_ratio", "fix_aspect_ratio", "flags", "fisheye_model", "avg_reprojection_error",
    "per_view_reprojection_errors", "extrinsic_parameters", "image_points", "grid_points",
})
_OPENCV_KEYS = ("image_width", "image_height", "camera_matrix", "distortion_coefficients")
_JSON_KEYS = ("width_px", "height_px", "fx", "fy", "cx", "cy", "distortion")
_JSON_EXTRA_KEYS = frozenset({"rms_reprojection_px", "num_views_used"})
_TXT_REQUIRED = ("width", "height", "fx", "fy", "cx", "cy")
_TXT_DISTORTION_KEYS = tuple(f"d{i}" for i in range(8))


class CalibrationFileError(ValueError):
    """A calibration file is missing, malformed or has unknown/missing keys (names the file and key)."""


# ----------------------------------------------------------------------------------------------------
# loading and saving
# ----------------------------------------------------------------------------------------------------


def load_calibration(path: str | Path) -> Intrinsics:
    """Intrinsics from an OpenCV YAML/XML, JSON or camera ``.txt`` file (format chosen by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise CalibrationFileError(f"calibration file {path} does not exist")
    if suffix in OPENCV_SUFFIXES:
        return _load_opencv(path)
    if suffix == JSON_SUFFIX:
        return _load_json(path)
    if suffix == CAMERA_TXT_SUFFIX:
        return read_camera_txt(path).intrinsics
    raise CalibrationFileError(
        f"{path}: unknown calibration file type {suffix!r} (use .yaml/.yml/.xml for OpenCV, .json or .txt)"
    )


def save_calibration(
    path: str | Path, intrinsics: Intrinsics, *, rms_reprojection_px: float | None = None,
    num_views_used: int | None = None,
) -> None:
    """Write ``intrinsics`` as OpenCV YAML/XML (``.yaml``, ``.yml``, ``.xml``) or JSON (``.json``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in OPENCV_SUFFIXES:
        _save_opencv(path, intrinsics, rms_reprojection_px, num_views_used)
    elif suffix == JSON_SUFFIX:
        body: dict[str, Any] = intrinsics.to_wire()
        if rms_reprojection_px is not None:
            body["rms_reprojection_px"] = float(rms_reprojection_px)
        if num_views_used is not None:
            body["num_views_used"] = int(num_views_used)
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    else:
        raise ValueError(f"{path}: cannot write calibration type {suffix!r} (use .yaml, .yml, .xml or .json)")


def _intrinsics(path: Path, width: int, height: int, K: np.ndarray, dist: Iterable[float]) -> Intrinsics:
    try:
        return Intrinsics(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                          tuple(float(d) for d in dist))
    except ValueError as exc:
        raise CalibrationFileError(f"{path}: {exc}") from exc


def _load_opencv(path: Path) -> Intrinsics:
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as exc:  # the Python binding reports some parse errors as SystemError
        cause = exc.__cause__ or exc
        raise CalibrationFileError(f"{path}: not a readable OpenCV FileStorage file: {cause}") from exc
    if not fs.isOpened():
        raise CalibrationFileError(f"{path}: OpenCV could not open it as a FileStorage file")
    try:
        root = fs.root()
        keys = list(root.keys()) if root.isMap() else []
        for key in keys:
            if key not in _OPENCV_KEYS and key not in _OPENCV_EXTRA_KEYS:
                raise CalibrationFileError(f"{path}: unknown key {key!r} (expected {', '.join(_OPENCV_KEYS)})")
        nodes = {}
        for key in _OPENCV_KEYS:
            node = fs.getNode(key)
            if node.empty() or node.isNone():
                raise CalibrationFileError(f"{path}: missing key {key!r}")
            nodes[key] = node
        width = _opencv_int(path, nodes["image_width"], "image_width")
        height = _opencv_int(path, nodes["image_height"], "image_height")
        K = nodes["camera_matrix"].mat()
        if K is None or K.shape != (3, 3):
            raise CalibrationFileError(f"{path}: key 'camera_matrix' must be a 3x3 matrix, got "
                                       f"{None if K is None else K.shape}")
        dist = _opencv_vector(path, nodes["distortion_coefficients"], "distortion_coefficients")
    finally:
        fs.release()
    if len(dist) not in (0, 4, 5, 8):
        raise CalibrationFileError(
            f"{path}: key 'distortion_coefficients' must hold 0, 4, 5 or 8 values, got {len(dist)}"
        )
    if abs(K[0, 1]) > 1e-9 or np.any(np.abs(K[2] - (0.0, 0.0, 1.0)) > 1e-9) or abs(K[1, 0]) > 1e-9:
        raise CalibrationFileError(f"{path}: key 'camera_matrix' must be [[fx 0 cx] [0 fy cy] [0 0 1]], got "
                                   f"{K.tolist()}")
    return _intrinsics(path, width, height, K, dist)


def _opencv_vector(path: Path, node: cv2.FileNode, key: str) -> np.ndarray:
    """Values of an ``!!opencv-matrix`` (any shape, 0 elements allowed) or of a plain sequence of numbers."""
    if node.isSeq():
        items = [node.at(i) for i in range(node.size())]
        if not all(item.isReal() or item.isInt() for item in items):
            raise CalibrationFileError(f"{path}: key {key!r} must be a list of numbers")
        return np.array([item.real() for item in items], dtype=np.float64)
    mat = node.mat()
    if mat is not None:
        return np.asarray(mat, dtype=np.float64).ravel()
    rows, cols = node.getNode("rows"), node.getNode("cols")
    if node.isMap() and rows.isInt() and cols.isInt() and rows.real() * cols.real() == 0:
        return np.zeros(0)  # OpenCV reads a 0-element matrix back as None
    raise CalibrationFileError(f"{path}: key {key!r} must be an OpenCV matrix or a list of numbers")


def _opencv_int(path: Path, node: cv2.FileNode, key: str) -> int:
    if not node.isInt():
        raise CalibrationFileError(f"{path}: key {key!r} must be an integer")
    return int(node.real())


def _save_opencv(path: Path, k: Intrinsics, rms: float | None, views: int | None) -> None:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    if not fs.isOpened():
        raise OSError(f"OpenCV could not open {path} for writing")
    try:
        if views is not None:
            fs.write("nframes", int(views))
        fs.write("image_width", int(k.width_px))
        fs.write("image_height", int(k.height_px))
        fs.write("camera_matrix", k.K)
        fs.write("distortion_coefficients", np.array(k.distortion, dtype=np.float64).reshape(-1, 1))
        if rms is not None:
            fs.write("avg_reprojection_error", float(rms))
    finally:
        fs.release()


def _load_json(path: Path) -> Intrinsics:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationFileError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CalibrationFileError(f"{path}: top level must be an object, got {type(body).__name__}")
    for key in body:
        if key not in _JSON_KEYS and key not in _JSON_EXTRA_KEYS:
            raise CalibrationFileError(f"{path}: unknown key {key!r} (expected {', '.join(_JSON_KEYS)})")
    for key in _JSON_KEYS:
        if key not in body:
            raise CalibrationFileError(f"{path}: missing key {key!r}")

    def number(key: str, integer: bool = False) -> float:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise CalibrationFileError(f"{path}: key {key!r} must be {'an integer' if integer else 'a number'}, "
                                       f"got {value!r}")
        if not math.isfinite(value):
            raise CalibrationFileError(f"{path}: key {key!r} is not finite")
        return value

    dist = body["distortion"]
    if not isinstance(dist, list) or not all(
        isinstance(d, (int, float)) and not isinstance(d, bool) for d in dist
    ):
        raise CalibrationFileError(f"{path}: key 'distortion' must be a list of numbers, got {dist!r}")
    K = np.array([[number("fx"), 0.0, number("cx")], [0.0, number("fy"), number("cy")], [0.0, 0.0, 1.0]])
    return _intrinsics(path, int(number("width_px", True)), int(number("height_px", True)), K, dist)


# ----------------------------------------------------------------------------------------------------
# the data folders' camera.txt
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraFile:
    """Contents of a ``key value`` camera file."""

    intrinsics: Intrinsics
    """The pinhole model (with distortion when ``d0..`` were given)."""
    depth_scale: float | None
    """Depth PNG value per metre (``depth_scale`` key), ``None`` when the file does not say."""


def read_camera_txt(path: str | Path) -> CameraFile:
    """Parse a ``key value`` camera file such as ``/work/shared/data/*/camera.txt``.

    Keys: ``width height fx fy cx cy`` (required), ``d0 .. dN`` (OpenCV order k1 k2 p1 p2 [k3 [k4 k5 k6]],
    4, 5 or 8 values) or ``distortion none``, and ``depth_scale`` (value per metre). ``#`` starts a comment,
    anywhere on a line. Unknown, repeated or missing keys and bad values raise :class:`CalibrationFileError`
    naming the file, line and key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationFileError(f"cannot read camera file {path}: {exc}") from exc
    values: dict[str, float] = {}
    where: dict[str, int] = {}
    no_distortion_line: int | None = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        key = tokens[0]
        if len(tokens) < 2:
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r} has no value")
        if key in where or (key == "distortion" and no_distortion_line is not None):
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r} repeated")
        if key == "distortion":
            if tokens[1].lower() != "none":
                raise CalibrationFileError(
                    f"{path}:{line_no}: key 'distortion' only takes 'none'; give coefficients as d0 .. dN"
                )
            no_distortion_line = line_no
            continue
        if key not in _TXT_REQUIRED and key not in _TXT_DISTORTION_KEYS and key != "depth_scale":
            raise CalibrationFileError(
                f"{path}:{line_no}: unknown key {key!r} (expected width height fx fy cx cy d0..d7 depth_scale "
                "distortion)"
            )
        if len(tokens) != 2:
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r} takes one value, got {tokens[1:]}")
        try:
            value = float(tokens[1])
        except ValueError as exc:
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r}: {tokens[1]!r} is not a number") from exc
        if not math.isfinite(value):
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r}: value is not finite")
        if key in ("width", "height") and (value != int(value) or value <= 0):
            raise CalibrationFileError(f"{path}:{line_no}: key {key!r} must be a positive integer, got {tokens[1]}")
        if key == "depth_scale" and value <= 0:
            raise CalibrationFileError(f"{path}:{line_no}: key 'depth_scale' must be positive, got {tokens[1]}")
        values[key] = value
        where[key] = line_no
    for key in _TXT_REQUIRED:
        if key not in values:
            raise CalibrationFileError(f"{path}: missing key {key!r}")
    present = [k for k in _TXT_DISTORTION_KEYS if k in values]
    if present and no_distortion_line is not None:
        raise CalibrationFileError(
            f"{path}:{no_distortion_line}: 'distortion none' contradicts {present[0]!r} on line {where[present[0]]}"
        )
    count = len(present)
    if present != list(_TXT_DISTORTION_KEYS[:count]) or count not in (0, 4, 5, 8):
        raise CalibrationFileError(
            f"{path}: distortion keys must be d0..d3, d0..d4 or d0..d7 without gaps, got {', '.join(present)}"
        )
    K = np.array([[values["fx"], 0.0, values["cx"]], [0.0, values["fy"], values["cy"]], [0.0, 0.0, 1.0]])
    intrinsics = _intrinsics(path, int(values["width"]), int(values["height"]), K, [values[k] for k in present])
    return CameraFile(intrinsics, values.get("depth_scale"))


# ----------------------------------------------------------------------------------------------------
# chessboard calibration
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of :func:`calibrate_chessboard`."""

    intrinsics: Intrinsics
    """Estimated pinhole model with OpenCV's 5 distortion coefficients (k1 k2 p1 p2 k3)."""
    rms_reprojection_px: float
    """Root-mean-square reprojection error over all corners of the views used, pixels."""
    num_views_used: int
    """Views in which the whole board was found (and that went into the estimate)."""
    num_views_seen: int
    """Images examined."""


def grey_image(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from an (H, W) grey or (H, W, 3) RGB uint8 image (ValueError otherwise)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"calibration images must be uint8 arrays, got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"calibration images must be (H, W) or (H, W, 3), got shape {image.shape}")


def find_chessboard(grey: np.ndarray, board_cols: int, board_rows: int) -> np.ndarray | None:
    """Sub-pixel inner corners of a ``board_cols`` x ``board_rows`` chessboard, or ``None`` if not all found.

    grey: (H, W) uint8. Returns (board_cols * board_rows, 2) float32 pixel coordinates in OpenCV's order.
    """
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(grey, (board_cols, board_rows), flags=flags)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    corners = cv2.cornerSubPix(grey, corners, (5, 5), (-1, -1), criteria)
    return corners.reshape(-1, 2).astype(np.float32)


def calibrate_chessboard(
    images: Iterable[np.ndarray], board_cols: int, board_rows: int, square_size_m: float, *,
    min_views: int = 5, max_views: int = 40,
) -> CalibrationResult:
    """Calibrate a pinhole camera (+ k1 k2 p1 p2 k3) from views of a planar chessboard.

    images: iterable of (H, W, 3) RGB or (H, W) grey uint8 images, all of one size; consumed one at a time
    (only the corners are kept, so a long video is fine). board_cols x board_rows: inner corners per row and
    column (OpenCV's pattern size, e.g. 9x6). square_size_m: side of one square. If more than ``max_views``
    views show the board, an evenly spaced subset of ``max_views`` is used. Fewer than ``min_views`` views
    with the whole board found raises ValueError.
    """
    if board_cols < 2 or board_rows < 2:
        raise ValueError(f"the board needs at least 2x2 inner corners, got {board_cols}x{board_rows}")
    if board_cols == board_rows:
        raise ValueError(f"use a board with different inner-corner counts per side (got {board_cols}x{board_rows}): "
                         "a square board's orientation is ambiguous")
    if not (square_size_m > 0 and math.isfinite(square_size_m)):
        raise ValueError(f"square_size_m must be positive, got {square_size_m}")
    if min_views < 3:
        raise ValueError(f"min_views must be at least 3, got {min_views}")
    if max_views < min_views:
        raise ValueError(f"max_views ({max_views}) must be >= min_views ({min_views})")
    size: tuple[int, int] | None = None
    found: list[np.ndarray] = []
    seen = 0
    for index, image in enumerate(images):
        grey = grey_image(image)
        if size is None:
            size = (grey.shape[1], grey.shape[0])
        elif (grey.shape[1], grey.shape[0]) != size:
            raise ValueError(f"image {index} is {grey.shape[1]}x{grey.shape[0]}, the first was {size[0]}x{size[1]}")
        seen += 1
        corners = find_chessboard(grey, board_cols, board_rows)
        if corners is not None:
            found.append(corners)
    if size is None:
        raise ValueError("no images to calibrate from")
    if len(found) < min_views:
        raise ValueError(
            f"the {board_cols}x{board_rows} chessboard was found in {len(found)} of {seen} images; at least "
            f"{min_views} views are needed (check --board: it counts inner corners, e.g. 9x6 for 10x7 squares)"
        )
    if len(found) > max_views:
        keep = np.linspace(0, len(found) - 1, max_views).round().astype(int)
        found = [found[i] for i in keep]
    grid = np.zeros((board_rows * board_cols, 3), np.float32)
    grid[:, :2] = np.mgrid[0:board_cols, 0:board_rows].T.reshape(-1, 2) * square_size_m
    rms, K, dist, _, _ = cv2.calibrateCamera([grid] * len(found), found, size, None, None)
    intrinsics = Intrinsics(size[0], size[1], float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                            tuple(float(d) for d in np.asarray(dist).ravel()))
    return CalibrationResult(intrinsics, float(rms), len(found), seen)


def render_chessboard_views(
    intrinsics: Intrinsics, board_cols: int, board_rows: int, square_size_m: float, num_views: int = 12, *,
    seed: int = 0, texture_px_per_square: int = 40,
) -> list[np.ndarray]:
    """Synthetic views of a chessboard through a distortion-free pinhole camera (for tests and self-checks).

    A board of ``(board_cols + 1) x (board_rows + 1)`` squares with a one-square white margin is warped into
    each view with the homography ``K [r1 r2 t]`` of a random tilted pose (tilts up to about 30 degrees,
    the whole board inside the image). Returns ``num_views`` (H, W, 3) uint8 RGB images on a grey background.
    """
    if intrinsics.distortion and any(d != 0.0 for d in intrinsics.distortion):
        raise ValueError("render_chessboard_views draws through a pinhole camera: intrinsics must have no distortion")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    px = texture_px_per_square
    squares_x, squares_y = board_cols + 1, board_rows + 1
    texture = np.full(((squares_y + 2) * px, (squares_x + 2) * px), 255, np.uint8)
    for j in range(squares_y):
        for i in range(squares_x):
            if (i + j) % 2 == 0:
                texture[(j + 1) * px:(j + 2) * px, (i + 1) * px:(i + 2) * px] = 0
    # board metres (X, Y) -> texture pixel (pixel centres on integers; the board's outer corner at px - 0.5)
    A = np.array([[px / square_size_m, 0.0, px - 0.5], [0.0, px / square_size_m, px - 0.5], [0.0, 0.0, 1.0]])
    board_w, board_h = (squares_x + 2) * square_size_m, (squares_y + 2) * square_size_m
    outline = np.array([[-square_size_m, -square_size_m, 0.0], [board_w - square_size_m, -square_size_m, 0.0],
                        [board_w - square_size_m, board_h - square_size_m, 0.0],
                        [-square_size_m, board_h - square_size_m, 0.0]])
    K = intrinsics.K
    w, h = intrinsics.width_px, intrinsics.height_px
    rng = np.random.default_rng(seed)
    views: list[np.ndarray] = []
    for _ in range(1000 * num_views):
        if len(views) == num_views:
            break
        R, _ = cv2.Rodrigues(np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)]))
        z = intrinsics.fx * board_w / (w * rng.uniform(0.45, 0.75))
        centre = np.array([rng.uniform(-0.15, 0.15) * z, rng.uniform(-0.15, 0.15) * z, z])
        t = centre - R @ np.array([board_w / 2 - square_size_m, board_h / 2 - square_size_m, 0.0])
        cam = outline @ R.T + t
        if np.any(cam[:, 2] <= 0):
            continue
        uv = cam[:, :2] / cam[:, 2:] * (K[0, 0], K[1, 1]) + (K[0, 2], K[1, 2])
        if np.any(uv < 2) or np.any(uv[:, 0] > w - 3) or np.any(uv[:, 1] > h - 3):
            continue
        H_board = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ np.linalg.inv(A)
        grey = cv2.warpPerspective(texture, H_board, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=128)
        views.append(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    if len(views) < num_views:
        raise ValueError("could not place the board inside the image; use a smaller board or a wider camera")
    return views
