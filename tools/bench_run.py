"""``depthslam bench run``: replay a sequence through the whole pipeline and report frames/s and latency.

Each configuration runs ``depthslam run`` in this process (stages as threads over ``inproc://``) on the same
frames: the synthetic scene by default or ``--data`` (a TUM folder). Reported per configuration: frames in,
mapped, dropped, frames/s, and median/p95 ms of every stage plus end-to-end latency (capture publish ->
map updated, one monotonic clock).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from tools.capture import source_from_args
from tools.node_builder import build_node, summarise
from tools.run import build_parser

CONFIGS: dict[str, list[str]] = {
    "gt-depth lossless": ["--depth", "gt", "--mode", "lossless"],
    "gt-depth realtime": ["--depth", "gt", "--mode", "realtime"],
    "cpu-model realtime": ["--depth", "metric-indoor-small", "--random-weights", "--backend", "ort-cpu",
                           "--mode", "realtime"],
}


def run_one(source_args: list[str], extra: list[str], out_dir: str) -> dict[str, Any]:
    args = build_parser().parse_args([*source_args, *extra, "--out", out_dir, "--viewer", "none", "--quiet"])
    built = build_node(args, source_from_args)
    start = time.monotonic()
    built.node.run()
    return summarise(built, time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depthslam bench run", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="TUM folder (default: the synthetic scene)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--width", type=int, default=640, help="synthetic only")
    parser.add_argument("--height", type=int, default=480, help="synthetic only")
    parser.add_argument("--poses", choices=["tracker", "gt"], default="gt")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--model-frames", type=int, default=20, help="frames for the CPU-model configuration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.data:
        source = [args.data]
    else:
        source = ["synthetic", "--width", str(args.width), "--height", str(args.height), "--max-frames"]
    results = {}
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}")
        frames = args.model_frames if "model" in name else args.frames
        src = [*source, str(frames)] if not args.data else source
        with tempfile.TemporaryDirectory() as tmp:
            s = run_one(src, [*CONFIGS[name], "--poses", args.poses], tmp)
        results[name] = {k: s[k] for k in ("frames_in", "frames_integrated", "dropped", "fps", "stages")}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name, r in results.items():
        print(f"{name}: {r['frames_in']} in, {r['frames_integrated']} mapped, {r['dropped']} dropped, "
              f"{r['fps']:.1f} frames/s")
        for stage, t in r["stages"].items():
            print(f"    {stage:<17} median {t['median_ms']:8.1f} ms   p95 {t['p95_ms']:8.1f} ms   n={t['count']}")
    return 0
