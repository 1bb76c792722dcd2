"""``depthslam engine MODEL``: build the TensorRT engine ahead of time (it is cached and reused at run time).

    depthslam engine small --frame-size 640x480 [--input-size 518] [--resize-mode lower_bound]
                           [--weights FILE | --random-weights] [--trt-fp32]

An engine is built for one network input shape, which follows from the camera's frame size and the input
size policy — give the same ``--frame-size``/``--input-size``/``--resize-mode`` the depth worker will use.
The ONNX graph comes from the hub or is exported here first (see ``depthslam export``). Needs TensorRT
and an NVIDIA GPU.

Exit status: 0 on success, 1 when TensorRT/GPU/weights are missing or the build fails, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys

from engines.config import Backend
from engines.errors import EngineError
from engines.models import MODELS
from tools.depth import add_engine_arguments, engine_config_from_args, parse_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthslam engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=list(MODELS), help="model to build the engine for")
    parser.add_argument("--frame-size", default="640x480", help="camera frame size WxH (default 640x480)")
    add_engine_arguments(parser, with_model=False, with_backend=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engines.onnx_export import resolve_onnx
    from engines.trt_backend import TrtEngineCache, TrtRunner

    args = build_parser().parse_args(argv)
    try:
        config = engine_config_from_args(args, model=args.model, backend=Backend.TENSORRT)
        width, height = parse_size(args.frame_size)
        size = config.size.network_size(width, height)
    except ValueError as exc:
        print(f"depthslam engine: {exc}", file=sys.stderr)
        return 2
    spec = MODELS[args.model]
    try:
        onnx_path = resolve_onnx(spec, config, progress=sys.stderr)
        runner = TrtRunner(onnx_path, spec.name, TrtEngineCache(config.hub.cache_dir / "tensorrt"),
                           fp16=config.trt_fp16)
        path = runner.prepare((1, 3, size.height_px, size.width_px))
        runner.close()
    except EngineError as exc:
        print(f"depthslam engine: {exc}", file=sys.stderr)
        return 1
    print(f"TensorRT engine for {spec.name} at {size.width_px}x{size.height_px} (frames {width}x{height}): {path}")
    return 0
