"""``depthslam capture [SOURCE] --pub ENDPOINT``: run one capture source as its own process.

Typical use: on a laptop next to the camera, ``depthslam capture 0 --pub tcp://0.0.0.0:5555 --allow-remote``,
and on the GPU machine ``depthslam depth --sub tcp://laptop:5555 ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import dataclass

from stream.calibration import CalibrationFileError, load_calibration
from stream.capture import CaptureConfig, CaptureThread
from stream.messages import Intrinsics
from stream.sources import FrameSource, SourceError, SourceOptions, open_source, source_kind
from stream.transport import DeliveryMode, EndpointError, Publisher, TransportConfig


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that opens a source (``capture``, ``run``)."""
    parser.add_argument("source", nargs="?", default="synthetic",
                        help="synthetic (default), camera index, stream URL, video file, image folder or TUM folder")
    parser.add_argument("--intrinsics", metavar="FILE", help="calibration file (OpenCV YAML, JSON or camera.txt)")
    parser.add_argument("--hfov-deg", type=float, help="intrinsics from a horizontal field of view instead")
    parser.add_argument("--fps", type=float, help="frame rate: image folders, synthetic scene, webcam request, pacing")
    parser.add_argument("--stride", type=int, help="video files and image folders: every n-th frame")
    parser.add_argument("--start-s", type=float, help="video files: start offset in seconds")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--width", type=int, help="webcam request / synthetic render width in pixels")
    parser.add_argument("--height", type=int, help="webcam request / synthetic render height in pixels")
    parser.add_argument("--depth-scale", type=float, help="TUM folders: depth PNG units per metre")
    parser.add_argument("--mode", choices=[m.value for m in DeliveryMode], default="realtime",
                        help="realtime: paced, late frames dropped; lossless: every frame, as fast as consumed")


@dataclass(frozen=True)
class SourcePlan:
    """A source built from command-line arguments, and the capture settings that go with it."""

    source: FrameSource
    pacing_fps: float | None
    """``--fps`` for replayable sources whose rate is their own (video, TUM): overrides pacing."""
    max_frames: int | None
    """``--max-frames`` for sources that do not count frames themselves: the capture stage stops."""


def source_from_args(args: argparse.Namespace) -> SourcePlan:
    """Build the source the arguments name (raises SourceError / CalibrationFileError / ValueError)."""
    if args.intrinsics and args.hfov_deg:
        raise ValueError("--intrinsics and --hfov-deg conflict: give one")
    intrinsics: Intrinsics | None = load_calibration(args.intrinsics) if args.intrinsics else None
    kind = source_kind(args.source)
    source_fps = kind in ("synthetic", "webcam", "images")
    source_counts = kind in ("synthetic", "video")
    options = SourceOptions(
        intrinsics=intrinsics, fps=args.fps if source_fps else None, stride=args.stride,
        start_offset_s=args.start_s, max_frames=args.max_frames if source_counts else None,
        width_px=args.width, height_px=args.height, depth_scale=args.depth_scale,
    )
    return SourcePlan(
        open_source(args.source, options), None if source_fps else args.fps,
        None if source_counts else args.max_frames,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depthslam capture", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--pub", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555 or ipc:///tmp/f")
    parser.add_argument("--topic", default="frames")
    parser.add_argument("--jpeg-quality", type=int, help="send JPEG with this quality instead of raw RGB")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding to non-loopback interfaces")
    parser.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                        help="lossless: wait for N subscribers before the first frame (slow joiners lose nothing)")
    parser.add_argument("--wait-timeout-s", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    mode = DeliveryMode(args.mode)
    try:
        plan = source_from_args(args)
        source = plan.source
        config = CaptureConfig(
            topic=args.topic, mode=mode, fps=plan.pacing_fps, max_frames=plan.max_frames,
            jpeg_quality=args.jpeg_quality, hfov_deg=args.hfov_deg,
            wait_subscribers=args.wait_subscribers, wait_timeout_s=args.wait_timeout_s,
        )
        publisher = Publisher(args.pub, TransportConfig(mode=mode, allow_remote=args.allow_remote))
    except (SourceError, CalibrationFileError, EndpointError, ValueError) as exc:
        print(f"depthslam capture: error: {exc}", file=sys.stderr)
        return 1
    with publisher:
        capture = CaptureThread(source, publisher, config)
        previous = signal.signal(signal.SIGTERM, lambda *_: capture.stop())
        try:
            capture.run_here()
        except KeyboardInterrupt:
            capture.stop()
        except SourceError as exc:
            print(f"depthslam capture: error: {exc}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
    summary = {"source": source.name, "published": capture.stats.published, "dropped_late": capture.stats.dropped_late}
    print(json.dumps(summary) if args.json else f"{source.name}: {summary['published']} frames published, "
          f"{summary['dropped_late']} dropped late", file=sys.stdout)
    return 0
