"""TUM RGB-D sequence folders as a replayable :class:`~stream.sources.base.FrameSource`.

A sequence folder holds::

    rgb.txt            timestamp filename        (colour images, e.g. rgb/1305031229.528748.png)
    depth.txt          timestamp filename        (uint16 PNG depth, value / depth_scale = metres, 0 = missing)
    associations.txt   t_rgb rgb/x t_depth depth/y   (optional; otherwise rgb and depth are paired here)
    groundtruth.txt    timestamp tx ty tz qx qy qz qw  (optional; camera-to-world)
    camera.txt         key value lines: width height fx fy cx cy [d0..d4] [depth_scale]  (optional)

Frames are the associated RGB-D pairs in association order (``frame_id`` = position). Without
``associations.txt`` each colour image is paired with the depth image nearest in time, within
``max_difference_s``, each depth image used at most once. A frame's ground-truth pose is interpolated at
its colour timestamp (linear translation, quaternion slerp) between the two bracketing ground-truth
samples; it is ``None`` outside the ground truth's time range or across a gap longer than ``max_gt_gap_s``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.calibration import CalibrationFileError, read_camera_txt
from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.images import read_rgb
from stream.tum_format import TumFormatError, TumTrajectory, parse_stamp_ns, read_tum_trajectory

log = logging.getLogger(__name__)

#: Depth PNG value per metre of the TUM RGB-D benchmark, used when neither config nor camera.txt gives one.
TUM_DEPTH_SCALE = 5000.0


@dataclass(frozen=True)
class TumConfig:
    """Settings of a :class:`TumSource`."""

    depth_scale: float | None = None
    """Depth PNG value per metre; overrides camera.txt. ``None``: camera.txt's ``depth_scale``, else 5000."""
    max_difference_s: float = 0.02
    """Largest colour/depth timestamp difference accepted when pairing without ``associations.txt``."""
    max_gt_gap_s: float = 0.1
    """Largest spacing of the two ground-truth samples a pose is interpolated between; wider gaps give none."""
    load_depth: bool = True
    """Decode the depth PNGs into ``ColorFrame.depth_m``; False leaves it ``None`` (faster monocular replay)."""
    intrinsics: Intrinsics | None = None
    """Camera model overriding camera.txt; ``None``: camera.txt's, or no intrinsics when it is absent."""

    def __post_init__(self) -> None:
        if self.depth_scale is not None and not _positive(self.depth_scale):
            raise ValueError(f"TumConfig.depth_scale must be positive, got {self.depth_scale!r}")
        if not _positive(self.max_difference_s):
            raise ValueError(f"TumConfig.max_difference_s must be positive, got {self.max_difference_s!r}")
        if not _positive(self.max_gt_gap_s):
            raise ValueError(f"TumConfig.max_gt_gap_s must be positive, got {self.max_gt_gap_s!r}")
        if not isinstance(self.load_depth, bool):
            raise ValueError(f"TumConfig.load_depth must be a bool, got {self.load_depth!r}")
        if self.intrinsics is not None and not isinstance(self.intrinsics, Intrinsics):
            raise ValueError(f"TumConfig.intrinsics must be Intrinsics or None, got {self.intrinsics!r}")


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


@dataclass(frozen=True)
class TumListEntry:
    """One ``timestamp filename`` line of rgb.txt / depth.txt."""

    stamp_s: float
    """Timestamp, seconds."""
    stamp_ns: int
    """The same timestamp, exact nanoseconds from its decimal text."""
    path: Path
    """The file, resolved against the sequence folder."""
    line_no: int
    """Line of the list file (for error messages)."""


@dataclass(frozen=True, eq=False)
class TumFrameEntry:
    """One frame of a sequence: an RGB-D pair and its ground-truth pose."""

    stamp_ns: int
    """Colour timestamp, nanoseconds."""
    rgb: TumListEntry
    """The colour image."""
    depth: TumListEntry
    """The depth image paired with it."""
    T_W_C: np.ndarray | None
    """(4, 4) float64 ground-truth camera-to-world pose at the colour timestamp, ``None`` if not covered."""


@dataclass(frozen=True, eq=False)
class TumSequence:
    """Everything :func:`read_tum_sequence` learns from a folder's text files (no image is decoded)."""

    folder: Path
    """The sequence folder."""
    frames: list[TumFrameEntry]
    """Associated RGB-D pairs in association order."""
    intrinsics: Intrinsics | None
    """Camera model (config override, else camera.txt, else ``None``)."""
    depth_scale: float
    """Depth PNG value per metre in use."""
    ground_truth: TumTrajectory | None
    """groundtruth.txt, ``None`` when the folder has none."""
    nominal_fps: float | None
    """Frame rate from the median spacing of the colour timestamps; ``None`` for fewer than two frames."""


# ----------------------------------------------------------------------------------------------------
# text files
# ----------------------------------------------------------------------------------------------------


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of the non-comment, non-blank lines of a text file (SourceError if unreadable)."""
    if not path.is_file():
        raise SourceError(f"TUM file {path} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read TUM file {path}: {exc}") from exc
    out = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((line_no, line.split()))
    return out


def _entry(folder: Path, list_path: Path, line_no: int, stamp: str, name: str) -> TumListEntry:
    try:
        stamp_ns = parse_stamp_ns(stamp)
    except ValueError as exc:
        raise SourceError(f"{list_path}:{line_no}: bad timestamp {stamp!r}") from exc
    path = folder / name
    if not path.is_file():
        raise SourceError(f"{list_path}:{line_no}: file {name} does not exist in {folder}")
    return TumListEntry(float(stamp), stamp_ns, path, line_no)


def read_tum_list(folder: Path, name: str) -> list[TumListEntry]:
    """Parse ``folder/name`` (rgb.txt or depth.txt: ``timestamp filename`` lines); every file must exist."""
    list_path = folder / name
    entries = []
    for line_no, tokens in _data_lines(list_path):
        if len(tokens) != 2:
            raise SourceError(f"{list_path}:{line_no}: expected 'timestamp filename', got {len(tokens)} fields")
        entries.append(_entry(folder, list_path, line_no, tokens[0], tokens[1]))
    if not entries:
        raise SourceError(f"TUM file {list_path} lists no images")
    return entries


def read_tum_associations(folder: Path, name: str = "associations.txt") -> list[tuple[TumListEntry, TumListEntry]]:
    """Parse ``t_rgb rgb/x t_depth depth/y`` lines; every file must exist."""
    list_path = folder / name
    pairs = []
    for line_no, tokens in _data_lines(list_path):
        if len(tokens) != 4:
            raise SourceError(
                f"{list_path}:{line_no}: expected 't_rgb rgb_file t_depth depth_file', got {len(tokens)} fields"
            )
        pairs.append((_entry(folder, list_path, line_no, tokens[0], tokens[1]),
                      _entry(folder, list_path, line_no, tokens[2], tokens[3])))
    if not pairs:
        raise SourceError(f"TUM file {list_path} lists no pairs")
    return pairs


def associate_by_time(rgb_stamps_s: np.ndarray, depth_stamps_s: np.ndarray,
                      max_difference_s: float) -> list[tuple[int, int]]:
    """Pair colour and depth timestamps: closest pairs first, each index used once, ``|dt| <= max``.

    rgb_stamps_s: (N,) float64, depth_stamps_s: (M,) float64, any order. Returns (rgb index, depth index)
    pairs sorted by rgb index.
    """
    rgb = np.asarray(rgb_stamps_s, dtype=np.float64)
    depth = np.asarray(depth_stamps_s, dtype=np.float64)
    order = np.argsort(depth, kind="stable")
    sorted_depth = depth[order]
    candidates: list[tuple[float, int, int]] = []
    for i, t in enumerate(rgb):
        lo = int(np.searchsorted(sorted_depth, t - max_difference_s, side="left"))
        hi = int(np.searchsorted(sorted_depth, t + max_difference_s, side="right"))
        for k in range(lo, hi):
            candidates.append((abs(float(sorted_depth[k]) - float(t)), i, int(order[k])))
    candidates.sort()
    used_rgb: set[int] = set()
    used_depth: set[int] = set()
    pairs = []
    for diff, i, j in candidates:
        if diff <= max_difference_s and i not in used_rgb and j not in used_depth:
            used_rgb.add(i)
            used_depth.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def read_tum_sequence(folder: str | Path, config: TumConfig = TumConfig()) -> TumSequence:
    """Parse a TUM sequence folder's text files; raises :class:`SourceError` naming file and line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"TUM sequence folder {folder} does not exist")

    camera_path = folder / "camera.txt"
    intrinsics = config.intrinsics
    file_scale: float | None = None
    if camera_path.exists():
        try:
            camera = read_camera_txt(camera_path)
        except CalibrationFileError as exc:
            raise SourceError(str(exc)) from exc
        file_scale = camera.depth_scale
        if intrinsics is None:
            intrinsics = camera.intrinsics
    depth_scale = config.depth_scale or file_scale or TUM_DEPTH_SCALE

    if (folder / "associations.txt").exists():
        pairs = read_tum_associations(folder)
    else:
        rgb_entries = read_tum_list(folder, "rgb.txt")
        depth_entries = read_tum_list(folder, "depth.txt")
        index_pairs = associate_by_time(
            np.array([e.stamp_s for e in rgb_entries]), np.array([e.stamp_s for e in depth_entries]),
            config.max_difference_s,
        )
        if not index_pairs:
            raise SourceError(
                f"{folder}: no depth image within {config.max_difference_s} s of any colour image "
                "(rgb.txt and depth.txt timestamps do not overlap)"
            )
        pairs = [(rgb_entries[i], depth_entries[j]) for i, j in index_pairs]

    ground_truth = None
    gt_path = folder / "groundtruth.txt"
    if gt_path.exists():
        try:
            ground_truth = read_tum_trajectory(gt_path)
        except TumFormatError as exc:
            raise SourceError(str(exc)) from exc

    frames = []
    for rgb, depth in pairs:
        pose = None if ground_truth is None else ground_truth.pose_at(rgb.stamp_s, config.max_gt_gap_s)
        frames.append(TumFrameEntry(rgb.stamp_ns, rgb, depth, pose))
    if ground_truth is not None and all(f.T_W_C is None for f in frames):
        log.warning("%s: groundtruth.txt covers none of the %d frames", folder, len(frames))

    stamps = np.sort(np.array([f.rgb.stamp_s for f in frames]))
    spacing = np.diff(stamps)
    spacing = spacing[spacing > 0]
    nominal_fps = float(1.0 / np.median(spacing)) if len(spacing) else None
    return TumSequence(folder, frames, intrinsics, float(depth_scale), ground_truth, nominal_fps)


# ----------------------------------------------------------------------------------------------------
# the source
# ----------------------------------------------------------------------------------------------------


def read_depth_png(path: Path, depth_scale: float) -> np.ndarray:
    """(H, W) float32 metres from a uint16 depth PNG (value / depth_scale; 0 stays 0 = invalid)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read depth image {path}: {exc}") from exc
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise SourceError(f"depth image {path} is corrupt or not an image")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise SourceError(
            f"depth image {path} must be a single-channel 16-bit PNG, got {raw.dtype} with shape {raw.shape}"
        )
    return (raw.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)


class TumSource:
    """Replays a TUM RGB-D sequence folder as :class:`ColorFrame`s with depth, pose and intrinsics."""

    def __init__(self, folder: str | Path, config: TumConfig = TumConfig()) -> None:
        self.folder = Path(folder)
        self.config = config
        self.name = f"tum:{self.folder.name}"
        self._sequence: TumSequence | None = None
        self._next = 0

    @property
    def sequence(self) -> TumSequence:
        """The parsed folder (after :meth:`open`)."""
        if self._sequence is None:
            raise SourceError(f"{self.name}: not open (call open() first)")
        return self._sequence

    @property
    def nominal_fps(self) -> float | None:
        return None if self._sequence is None else self._sequence.nominal_fps

    @property
    def is_live(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.sequence.frames)

    def open(self) -> None:
        self._sequence = read_tum_sequence(self.folder, self.config)
        self._next = 0

    def read(self) -> ColorFrame | None:
        seq = self.sequence
        if self._next >= len(seq.frames):
            return None
        frame_id = self._next
        self._next += 1
        entry = seq.frames[frame_id]
        image = read_rgb(entry.rgb.path)
        h, w = image.shape[:2]
        k = seq.intrinsics
        if k is not None and (k.width_px, k.height_px) != (w, h):
            raise SourceError(
                f"{entry.rgb.path} is {w}x{h} but the intrinsics (camera.txt or config) are for "
                f"{k.width_px}x{k.height_px}"
            )
        depth = None
        if self.config.load_depth:
            depth = read_depth_png(entry.depth.path, seq.depth_scale)
            if depth.shape != (h, w):
                raise SourceError(
                    f"depth image {entry.depth.path} is {depth.shape[1]}x{depth.shape[0]}, its colour image "
                    f"{entry.rgb.path.name} is {w}x{h}"
                )
        return ColorFrame(
            frame_id=frame_id, stamp_ns=entry.stamp_ns, image=image, intrinsics=k, depth_m=depth,
            T_W_C=None if entry.T_W_C is None else entry.T_W_C.copy(), source=self.name,
        )

    def skip(self) -> bool:
        if self._next >= len(self.sequence.frames):
            return False
        self._next += 1
        return True

    def close(self) -> None:
        self._sequence = None

    def __enter__(self) -> TumSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
