"""``depthslam calibrate``: a calibration file from chessboard images (a folder) or a video.

Example::

    depthslam calibrate shots/ --board 9x6 --square-size-m 0.025 --out calib.yaml
    depthslam calibrate board.mp4 --board 9x6 --square-size-m 0.025 --out calib.json --every-n 15

``--board`` counts inner corners (a 10x7-square board is 9x6). The output format follows the suffix:
``.yaml``/``.yml``/``.xml`` OpenCV FileStorage (as OpenCV's calibration sample writes it), ``.json``
depthslam's JSON. Load it back with :func:`stream.calibration.load_calibration`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.calibration import JSON_SUFFIX, OPENCV_SUFFIXES, calibrate_chessboard, save_calibration
from stream.sources.base import FrameSource, SourceError
from stream.sources.images import ImageFolderConfig, ImageFolderSource
from stream.sources.video import VideoConfig, VideoFileSource


@dataclass(frozen=True)
class BoardSize:
    """Inner-corner counts of a chessboard."""

    cols: int
    """Inner corners along a row."""
    rows: int
    """Inner corners along a column."""


def parse_board(text: str) -> BoardSize:
    """``"9x6"`` -> BoardSize(9, 6); argparse-friendly errors."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"board must look like COLSxROWS (inner corners), e.g. 9x6; got {text!r}")
    board = BoardSize(int(match.group(1)), int(match.group(2)))
    if board.cols < 2 or board.rows < 2:
        raise argparse.ArgumentTypeError(f"board needs at least 2x2 inner corners, got {text!r}")
    return board


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthslam calibrate",
        description="Compute camera intrinsics from views of a chessboard (a folder of images or a video).",
    )
    parser.add_argument("input", type=Path, help="folder of images or a video file")
    parser.add_argument("--board", type=parse_board, required=True,
                        help="inner corners per row x per column, e.g. 9x6 for a board of 10x7 squares")
    parser.add_argument("--square-size-m", type=_positive_float, required=True, help="side of one square, metres")
    parser.add_argument("--out", type=Path, required=True,
                        help="output file: .yaml/.yml/.xml (OpenCV FileStorage) or .json")
    parser.add_argument("--every-n", type=_positive_int, default=1,
                        help="use every N-th image or video frame (default 1: all)")
    parser.add_argument("--min-views", type=_positive_int, default=5,
                        help="fewest views with the whole board found (default 5)")
    parser.add_argument("--max-views", type=_positive_int, default=40,
                        help="most views used; more are thinned evenly (default 40)")
    return parser


def source_images(source: FrameSource) -> Iterator[np.ndarray]:
    """The (H, W, 3) uint8 RGB images of a finite source, opened here and closed when the iteration ends."""
    source.open()
    try:
        while (frame := source.read()) is not None:
            yield frame.image
    finally:
        source.close()


def open_input(path: Path, every_n: int) -> FrameSource:
    """An image-folder source for a folder, a video-file source otherwise; every ``every_n``-th image/frame."""
    if path.is_dir():
        return ImageFolderSource(path, ImageFolderConfig(stride=every_n))
    # the frame rate is irrelevant to calibration: a container without one must not stop us
    return VideoFileSource(path, VideoConfig(stride=every_n, fallback_fps=30.0))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    suffix = args.out.suffix.lower()
    if suffix not in OPENCV_SUFFIXES and suffix != JSON_SUFFIX:
        parser.error(f"--out must end in .yaml, .yml, .xml or .json, got {args.out.name!r}")
    if args.max_views < args.min_views:
        parser.error(f"--max-views ({args.max_views}) must be >= --min-views ({args.min_views})")
    if not args.input.exists():
        print(f"depthslam calibrate: {args.input} does not exist", file=sys.stderr)
        return 1
    try:
        result = calibrate_chessboard(
            source_images(open_input(args.input, args.every_n)), args.board.cols, args.board.rows, args.square_size_m,
            min_views=args.min_views, max_views=args.max_views,
        )
    except (SourceError, ValueError) as exc:
        print(f"depthslam calibrate: {args.input}: {exc}", file=sys.stderr)
        return 1
    k = result.intrinsics
    save_calibration(args.out, k, rms_reprojection_px=result.rms_reprojection_px,
                     num_views_used=result.num_views_used)
    print(
        f"board found in {result.num_views_used} of {result.num_views_seen} images; "
        f"RMS reprojection error {result.rms_reprojection_px:.3f} px\n"
        f"{k.width_px}x{k.height_px}  fx {k.fx:.2f}  fy {k.fy:.2f}  cx {k.cx:.2f}  cy {k.cy:.2f}\n"
        f"distortion (k1 k2 p1 p2 k3) {' '.join(f'{d:.5f}' for d in k.distortion)}\n"
        f"written to {args.out}"
    )
    if result.rms_reprojection_px > 1.0:
        print("warning: RMS reprojection error above 1 px; check the board size and the images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
