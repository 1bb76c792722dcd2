"""``depthslam run [SOURCE]``: from any source to a live map (mesh + trajectory) in Rerun and on the map topic.

With no SOURCE it maps the built-in synthetic scene with the depth the scene carries, so it works on a fresh
machine with no camera and no downloads. Outputs in ``--out DIR``: ``mesh.ply``, ``trajectory.txt`` (TUM),
``recording.rrd`` and ``map.npz`` (resumable map). Options may also come from ``--config FILE.yaml`` (keys
are the long option names with ``_``; the command line wins; unknown keys are errors).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tools.capture import add_source_arguments, source_from_args

DEPTH_FROM_SOURCE = "gt"


def add_map_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the mapping stage (shared by ``run`` and ``map``)."""
    g = parser.add_argument_group("map")
    g.add_argument("--poses", choices=["tracker", "gt"], default="tracker",
                   help="tracker (default) or the source's ground-truth poses (mapping only)")
    g.add_argument("--voxel-size-m", type=float, default=0.02)
    g.add_argument("--trunc-vox", type=float, default=4.0, help="truncation distance in voxels")
    g.add_argument("--max-depth-m", type=float, default=4.0, help="maximum integration distance")
    g.add_argument("--max-blocks", type=int, default=250_000, help="memory budget in 8^3 voxel blocks")
    g.add_argument("--mesh-every-n", type=int, default=5,
                   help="re-mesh the changed blocks every n-th integrated frame (the map topic and viewer get "
                        "mesh updates at that rate; everything is re-meshed at the end)")
    g.add_argument("--render-every-n", type=int, default=0,
                   help="raycast the map from the camera every n-th integrated frame and show it in the viewer "
                        "under model_view/ (depth, colour, normals); 0 = off (default)")
    g.add_argument("--render-scale", type=float, default=0.5,
                   help="size of the model view relative to the frame, in (0, 1] (default 0.5)")
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", default="out/run", metavar="DIR", help="output directory (default out/run)")
    g.add_argument("--viewer", choices=["save", "spawn", "connect", "serve", "none"], default="save",
                   help="Rerun: save DIR/recording.rrd (default, headless), spawn a viewer, connect, or serve")
    g.add_argument("--connect-url", help="Rerun viewer URL for --viewer connect")
    g.add_argument("--map-pub", metavar="ENDPOINT", help="publish the map topic here (e.g. tcp://127.0.0.1:5560)")
    g.add_argument("--map-snapshot", metavar="ENDPOINT", help="serve map snapshots here (with --map-pub)")
    g.add_argument("--allow-remote", action="store_true", help="allow binding the map topic to non-loopback")
    g.add_argument("--json", action="store_true", help="print a final JSON summary on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthslam run", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="YAML file with option values (command line overrides it)")
    g = parser.add_argument_group("depth")
    g.add_argument("--depth", default="auto",
                   help="'gt' = the depth the source carries (TUM, synthetic); a model name (small, base, large, "
                        "metric-indoor-small, ...); 'auto' (default) = gt when the source carries depth, else small")
    g.add_argument("--backend", default="auto", help="auto, tensorrt, ort-cuda, ort-cpu, torch-cuda, torch-cpu")
    g.add_argument("--weights", metavar="FILE", help="local weights (.onnx, .safetensors, .pth) instead of the hub")
    g.add_argument("--random-weights", action="store_true", help="real architecture, random weights (testing)")
    add_map_arguments(parser)
    return parser


def apply_config_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the YAML file's values the parser's defaults; unknown keys and wrong types are errors."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"config file {path}: {exc}") from exc
    if data is None:
        return
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of option: value")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise ValueError(f"config file {path}: unknown key {key!r} (known: {', '.join(sorted(actions))})")
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"config file {path}: {key} must be true or false")
            defaults[dest] = value
            continue
        if isinstance(value, (dict, list)):
            raise ValueError(f"config file {path}: {key} must be a single value")
        text = str(value)
        if action.choices is not None and text not in action.choices:
            raise ValueError(f"config file {path}: {key} must be one of {list(action.choices)}, got {text!r}")
        try:
            defaults[dest] = action.type(text) if action.type is not None else text
        except ValueError as exc:
            raise ValueError(f"config file {path}: {key}: {exc}") from exc
    parser.set_defaults(**defaults)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    try:
        if pre.config:
            apply_config_file(parser, pre.config)
    except ValueError as exc:
        print(f"depthslam run: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet or args.json else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from tools.node_builder import NodeBuildError, build_node, summarise

    try:
        built = build_node(args, source_from_args)
    except NodeBuildError as exc:
        print(f"depthslam run: error: {exc}", file=sys.stderr)
        return 1
    node = built.node
    previous = signal.signal(signal.SIGINT, lambda *_: node.stop())
    previous_term = signal.signal(signal.SIGTERM, lambda *_: node.stop())
    show = sys.stderr.isatty() and not (args.quiet or args.json)
    start = time.monotonic()

    def progress(n: Any) -> None:
        if show:
            s = n.mapping.stats
            rate = s.frames / max(time.monotonic() - start, 1e-9)
            print(f"\r frames {s.frames}  tracked {s.tracked}  lost {s.lost}  keyframes {s.keyframes}  "
                  f"{rate:5.1f} fps ", end="", file=sys.stderr, flush=True)

    try:
        node.run(progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        if show:
            print(file=sys.stderr)
        summary = summarise(built, time.monotonic() - start)
    failure = node.failure
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print(f"{summary['frames_in']} frames in, {summary['frames_tracked']} tracked, "
              f"{summary['dropped']} dropped, {summary['keyframes']} keyframes, {summary['fps']:.1f} fps")
        for name, path in summary["outputs"].items():
            print(f"  {name}: {path}")
    if failure is not None:
        print(f"depthslam run: error: {failure}", file=sys.stderr)
        return 1
    return 0
