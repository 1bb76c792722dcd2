"""A folder of image files as a replayable :class:`~stream.sources.base.FrameSource`.

Files are taken in natural order (``frame2`` before ``frame10``); every ``stride``-th file from
``start_index`` is delivered. Frame ``frame_id`` counts files from ``start_index`` (so stride gaps are
visible downstream) and ``stamp_ns`` is the file's position in the whole folder divided by ``fps``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.video import rgb_from_opencv

#: File name suffixes (lower case) read as images.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageFolderConfig:
    """Settings of an :class:`ImageFolderSource`."""

    fps: float = 30.0
    """Frame rate the images were taken at: sets ``stamp_ns`` (file index / fps) and real-time pacing."""
    stride: int = 1
    """Deliver every ``stride``-th file (1: all); the others are skipped without decoding."""
    start_index: int = 0
    """Position, in natural file order, of the first file delivered."""
    intrinsics: Intrinsics | None = None
    """Camera model attached to every frame (its size must match the images); ``None``: frames carry none."""

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)
                                               and self.fps > 0):
            raise ValueError(f"ImageFolderConfig.fps must be a positive number, got {self.fps!r}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"ImageFolderConfig.stride must be an int >= 1, got {self.stride!r}")
        if isinstance(self.start_index, bool) or not isinstance(self.start_index, int) or self.start_index < 0:
            raise ValueError(f"ImageFolderConfig.start_index must be an int >= 0, got {self.start_index!r}")
        if self.intrinsics is not None and not isinstance(self.intrinsics, Intrinsics):
            raise ValueError(f"ImageFolderConfig.intrinsics must be Intrinsics or None, got {self.intrinsics!r}")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``; case-insensitive otherwise."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts if p)


def list_images(folder: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly in ``folder``, in natural order.

    Raises :class:`SourceError` when the folder is missing or holds no images.
    """
    if not folder.exists():
        raise SourceError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    try:
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    except OSError as exc:
        raise SourceError(f"cannot list image folder {folder}: {exc}") from exc
    if not files:
        raise SourceError(
            f"image folder {folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(files, key=lambda p: (natural_key(p.name), p.name))


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    Grey images are expanded to three channels and an alpha channel is dropped. Unreadable or corrupt
    files and images that are not 8-bit (e.g. 16-bit PNGs) raise :class:`SourceError` naming the file.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SourceError(f"image {path} is corrupt or not in a format OpenCV can decode")
    if image.dtype != np.uint8:
        kind = "colour" if image.ndim == 3 else "greyscale"
        raise SourceError(
            f"image {path} is a {image.dtype} {kind} image; only 8-bit images are supported "
            "(16-bit files are usually depth maps: convert colour images to 8 bits per channel)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return rgb_from_opencv(image, f"image {path}")


class ImageFolderSource:
    """Replays the images of a folder as :class:`ColorFrame`s (see the module docstring for numbering)."""

    def __init__(self, folder: str | Path, config: ImageFolderConfig = ImageFolderConfig()) -> None:
        self.folder = Path(folder)
        self.config = config
        self.name = f"images:{self.folder}"
        self._files: list[Path] | None = None
        self._next = config.start_index
        self._size: tuple[int, int] | None = None

    # -- FrameSource ---------------------------------------------------------------------------------
    @property
    def nominal_fps(self) -> float:
        """Rate of delivered frames: ``fps / stride``."""
        return self.config.fps / self.config.stride

    @property
    def is_live(self) -> bool:
        return False

    def open(self) -> None:
        files = list_images(self.folder)
        if self.config.start_index >= len(files):
            raise SourceError(
                f"{self.name}: start_index {self.config.start_index} is past the last of {len(files)} images"
            )
        self._files = files
        self._next = self.config.start_index
        self._size = None

    @property
    def files(self) -> list[Path]:
        """All image files of the folder in natural order (after :meth:`open`)."""
        return list(self._require_open())

    def __len__(self) -> int:
        """Number of frames this source delivers in total (after :meth:`open`)."""
        files = self._require_open()
        return len(range(self.config.start_index, len(files), self.config.stride))

    def read(self) -> ColorFrame | None:
        files = self._require_open()
        index = self._next
        if index >= len(files):
            return None
        self._next += self.config.stride
        path = files[index]
        image = read_rgb(path)
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (w, h)
        elif self._size != (w, h):
            raise SourceError(
                f"image {path} is {w}x{h} but the folder's first image is {self._size[0]}x{self._size[1]}"
            )
        k = self.config.intrinsics
        if k is not None and (k.width_px, k.height_px) != (w, h):
            raise SourceError(f"image {path} is {w}x{h} but the intrinsics are for {k.width_px}x{k.height_px}")
        return ColorFrame(
            frame_id=index - self.config.start_index,
            stamp_ns=round(index * 1e9 / self.config.fps),
            image=image, intrinsics=k, source=self.name,
        )

    def skip(self) -> bool:
        files = self._require_open()
        if self._next >= len(files):
            return False
        self._next += self.config.stride
        return True

    def close(self) -> None:
        self._files = None

    # -- helpers ---------------------------------------------------------------------------------------
    def _require_open(self) -> list[Path]:
        if self._files is None:
            raise SourceError(f"{self.name}: not open (call open() first)")
        return self._files

    def __enter__(self) -> ImageFolderSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
