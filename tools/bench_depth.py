"""``depthslam bench depth``: milliseconds per frame of the depth engines, per backend and frame size.

    depthslam bench depth [--model small] [--backend torch-cpu,ort-cpu] [--sizes 518x518,364x273]
                          [--random-weights | --weights FILE] [--repeats 10] [--warmup 2] [--threads N] [--json]

Each size is a frame size WxH; the network input is the frame size rounded to multiples of 14 (policy
``upper_bound`` with the longer side as target), so the network runs at that size. Times cover the whole
``engine.infer(frame)``: preprocessing, the network and postprocessing back to the frame size. Reports the
median, 95th percentile and minimum over ``--repeats`` runs after ``--warmup`` runs, and the number of
parameters. Default backends: every one usable on this machine. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from engines.config import Backend, EngineConfig, InputSizePolicy, ResizeMode
from engines.errors import EngineError
from engines.models import MODELS
from tools.depth import add_weights_arguments, hub_config_from_args, parse_size

DEFAULT_SIZES = "518x518,364x273"


@dataclass(frozen=True)
class DepthBenchResult:
    """Timing of one backend at one frame size."""

    backend: str
    frame_width_px: int
    frame_height_px: int
    network_width_px: int
    network_height_px: int
    median_ms: float
    p95_ms: float
    min_ms: float
    repeats: int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthslam bench depth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=list(MODELS), help="model (default small)")
    parser.add_argument("--backend", help="comma-separated backends (default: all usable here)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"frame sizes WxH, comma-separated (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per backend and size (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch/onnxruntime (default: library default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_weights_arguments(parser)
    return parser


def _parse_backends(text: str | None) -> tuple[Backend, ...] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    valid = {b.value for b in Backend}
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(f"unknown backend(s) {bad or text!r}; choose from {', '.join(sorted(valid))}")
    return tuple(Backend(n) for n in names)


def _model_parameters(spec_name: str) -> int | None:
    try:
        from engines.torch_model import build_model, num_parameters
    except ImportError:
        return None
    return num_parameters(build_model(MODELS[spec_name]))


def main(argv: list[str] | None = None) -> int:
    from engines.base import NetworkDepthEngine, synthetic_frame
    from engines.select import choose_backend, create_engine, probe_capabilities, usable_backends

    args = build_parser().parse_args(argv)
    try:
        backends = _parse_backends(args.backend)
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        if not sizes:
            raise ValueError("--sizes is empty")
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
        base_config = EngineConfig(
            model=args.model, weights=args.weights, random_weights=args.random_weights, seed=args.seed,
            num_threads=args.threads, hub=hub_config_from_args(args),
        )
    except ValueError as exc:
        print(f"depthslam bench depth: {exc}", file=sys.stderr)
        return 2
    caps = probe_capabilities()
    if backends is None:
        backends = usable_backends(caps)
    results: list[DepthBenchResult] = []
    param_counts: dict[str, int | None] = {}
    for requested in backends:
        try:
            backend = choose_backend(requested, caps).backend
            engine = create_engine(replace(base_config, backend=backend), caps=caps, progress=sys.stderr)
        except EngineError as exc:
            print(f"depthslam bench depth: skipping {requested.value}: {exc}", file=sys.stderr)
            continue
        if not isinstance(engine, NetworkDepthEngine):
            raise TypeError(f"expected a network engine, got {type(engine).__name__}")
        param_counts[engine.backend] = engine.num_parameters
        for width, height in sizes:
            sized = engine.with_size_policy(InputSizePolicy(target_px=max(width, height), mode=ResizeMode.UPPER_BOUND))
            net = sized.size_policy.network_size(width, height)
            frame = synthetic_frame(width, height)
            for _ in range(args.warmup):
                sized.infer(frame)
            times_ms = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                sized.infer(frame)
                times_ms.append((time.perf_counter() - start) * 1e3)
            result = DepthBenchResult(
                engine.backend, width, height, net.width_px, net.height_px, round(statistics.median(times_ms), 2),
                round(float(np.percentile(times_ms, 95)), 2), round(min(times_ms), 2), args.repeats,
            )
            results.append(result)
            if not args.json:
                print(f"{result.backend:<14} frame {width}x{height} -> net {net.width_px}x{net.height_px}: "
                      f"median {result.median_ms:8.1f} ms  p95 {result.p95_ms:8.1f} ms  min {result.min_ms:8.1f} ms",
                      flush=True)
        engine.close()
    if not results:
        print("depthslam bench depth: no backend could run", file=sys.stderr)
        return 1
    num_parameters = _model_parameters(args.model)
    summary = {
        "model": args.model, "random_weights": args.random_weights, "num_parameters": num_parameters,
        "onnx_initialiser_parameters": {k: v for k, v in param_counts.items() if k.startswith(("ort", "tensorrt"))},
        "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "capabilities": caps.describe(), "results": [asdict(r) for r in results],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        count = "unknown" if num_parameters is None else f"{num_parameters / 1e6:.2f}M"
        print(f"{args.model}: {count} parameters; {caps.describe()}")
    return 0
