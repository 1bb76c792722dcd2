"""``depthslam depth``: run a depth worker stage between a frame stream and a depth stream.

    depthslam depth --sub tcp://127.0.0.1:5550 --pub tcp://127.0.0.1:5551 [--model small] [--backend auto]
                    [--weights FILE | --random-weights] [--input-size 518] [--resize-mode lower_bound]
                    [--lossless] [--shard K/N --connect-pub] [--duration-s S]

Subscribes to topic ``frames`` (ColorFrame) on ``--sub`` and publishes topic ``depth`` (DepthFrame) on
``--pub``. ``--model passthrough`` forwards the depth of RGB-D sources. Runs until Ctrl-C/SIGTERM (or
``--duration-s``). Weights are fetched from the hub on first use (``--hub-url``/``DEPTHSLAM_HUB_URL``,
``--cache-dir``/``DEPTHSLAM_CACHE_DIR``, ``--offline``).

This module also holds the engine options shared by ``depthslam export``, ``engine`` and ``bench depth``.
Exit status: 0 on success, 1 when the engine or sockets cannot be set up, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType

from engines.config import Backend, EngineConfig, Exporter, InputSizePolicy, ResizeMode
from engines.errors import EngineError
from engines.hub import HubConfig
from engines.models import MODELS, PASSTHROUGH

log = logging.getLogger(__name__)


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """``--hub-url``, ``--cache-dir``, ``--offline`` (defaults from the DEPTHSLAM_* environment)."""
    group = parser.add_argument_group("weights source")
    group.add_argument("--hub-url", help="model hub base URL (default: $DEPTHSLAM_HUB_URL or huggingface.co)")
    group.add_argument("--cache-dir", type=Path,
                       help="cache directory (default: $DEPTHSLAM_CACHE_DIR or ~/.cache/depthslam)")
    group.add_argument("--offline", action="store_true", help="never use the network; cached or local files only")


def hub_config_from_args(args: argparse.Namespace) -> HubConfig:
    hub = HubConfig.from_env()
    if args.hub_url:
        hub = replace(hub, base_url=args.hub_url)
    if args.cache_dir is not None:
        hub = replace(hub, cache_dir=args.cache_dir.expanduser())
    if args.offline:
        hub = replace(hub, offline=True)
    return hub


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--random-weights``, ``--seed`` and the hub options."""
    parser.add_argument("--weights", type=Path, help="local weights: .onnx, .safetensors or .pth/.pt")
    parser.add_argument("--random-weights", action="store_true",
                        help="real architecture, random initialisation (benchmarks, smoke tests); downloads nothing")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default 0)")
    add_hub_arguments(parser)


def add_engine_arguments(
    parser: argparse.ArgumentParser, *, with_model: bool = True, with_backend: bool = True,
) -> None:
    """The options that build an :class:`EngineConfig`."""
    if with_model:
        parser.add_argument("--model", default="small", choices=[*MODELS, PASSTHROUGH],
                            help="depth model (default small)")
    if with_backend:
        parser.add_argument("--backend", default=Backend.AUTO.value, choices=[b.value for b in Backend],
                            help="inference backend (default auto: tensorrt > ort-cuda > torch-cuda > ort-cpu)")
    add_weights_arguments(parser)
    parser.add_argument("--input-size", type=int, default=518,
                        help="network input size of the bounding side, px (default 518)")
    parser.add_argument("--resize-mode", default=ResizeMode.LOWER_BOUND.value, choices=[m.value for m in ResizeMode],
                        help="lower_bound: shorter side = input size (reference); upper_bound: longer side")
    parser.add_argument("--threads", type=int, help="CPU threads for torch/onnxruntime")
    parser.add_argument("--fp16", action="store_true", help="torch-cuda: half precision")
    parser.add_argument("--trt-fp32", action="store_true", help="tensorrt: build without FP16 kernels")
    parser.add_argument("--min-depth-m", type=float, default=0.0, help="metric models: invalid at or below (m)")
    parser.add_argument("--max-depth-m", type=float, help="metric models: invalid above (m; default model ceiling)")
    parser.add_argument("--export-here", action="store_true",
                        help="ONNX backends: export the checkpoint here instead of using the hub's ONNX")
    parser.add_argument("--exporter", default=Exporter.TORCHSCRIPT.value, choices=[e.value for e in Exporter],
                        help="exporter for ONNX files made here (default torchscript)")


def engine_config_from_args(
    args: argparse.Namespace, *, model: str | None = None, backend: Backend | None = None,
) -> EngineConfig:
    """:class:`EngineConfig` from parsed :func:`add_engine_arguments` options; raises ValueError.

    ``model``/``backend`` replace the ``--model``/``--backend`` options (for commands that do not have them).
    """
    return EngineConfig(
        model=model if model is not None else args.model,
        backend=backend if backend is not None else Backend(args.backend),
        weights=args.weights, random_weights=args.random_weights, seed=args.seed,
        size=InputSizePolicy(target_px=args.input_size, mode=ResizeMode(args.resize_mode)),
        fp16=args.fp16, trt_fp16=not args.trt_fp32, num_threads=args.threads,
        min_depth_m=args.min_depth_m, max_depth_m=args.max_depth_m, prefer_hub_onnx=not args.export_here,
        exporter=Exporter(args.exporter), hub=hub_config_from_args(args),
    )


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--shard must look like K/N (e.g. 0/2), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthslam depth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sub", required=True, help="endpoint of the colour frames (connect)")
    parser.add_argument("--pub", required=True,
                        help="endpoint for the depth frames (bind, or connect with --connect-pub)")
    parser.add_argument("--in-topic", default="frames", help="topic of incoming frames (default frames)")
    parser.add_argument("--out-topic", default="depth", help="topic of outgoing depth (default depth)")
    parser.add_argument("--lossless", action="store_true", help="every frame, with back-pressure (offline runs)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding non-loopback interfaces")
    parser.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="K/N",
                        help="handle frames with frame_id %% N == K (several workers)")
    parser.add_argument("--connect-pub", action="store_true",
                        help="connect the depth publisher to a bound subscriber (several workers)")
    parser.add_argument("--warm-up", metavar="WxH", help="warm the engine up on a WxH frame before starting")
    parser.add_argument("--duration-s", type=float, help="stop after this many seconds (default: run until stopped)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    add_engine_arguments(parser)
    return parser


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height), both positive; raises ValueError."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) <= 0:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 518x392), got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> int:
    from engines.select import create_engine
    from engines.worker import DepthWorker, DepthWorkerConfig
    from stream.transport import DeliveryMode, EndpointError, TransportConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine_config = engine_config_from_args(args)
        warm = parse_size(args.warm_up) if args.warm_up else None
        transport = TransportConfig(
            mode=DeliveryMode.LOSSLESS if args.lossless else DeliveryMode.REALTIME, allow_remote=args.allow_remote
        )
        worker_config = DepthWorkerConfig(
            sub_endpoint=args.sub, pub_endpoint=args.pub, in_topic=args.in_topic, out_topic=args.out_topic,
            transport=transport, pub_bind=not args.connect_pub, shard_index=args.shard[0], shard_count=args.shard[1],
        )
    except ValueError as exc:
        print(f"depthslam depth: {exc}", file=sys.stderr)
        return 2
    try:
        engine = create_engine(engine_config)
        if warm is not None:
            engine.warm_up(*warm)
    except (EngineError, ValueError) as exc:
        print(f"depthslam depth: cannot set up the depth engine: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    worker = DepthWorker(worker_config, engine)
    try:
        worker.start()
    except (EndpointError, OSError) as exc:  # zmq.ZMQError derives from OSError
        print(f"depthslam depth: cannot open the sockets: {exc}", file=sys.stderr)
        engine.close()
        return 1
    print(f"depthslam depth: {engine.name} {args.sub} -> {worker.pub_endpoint}", file=sys.stderr)
    try:
        stop.wait(args.duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        worker.stop()
        engine.close()
    s = worker.stats
    print(f"depthslam depth: received {s.received}, published {s.published}, other shard {s.other_shard}, "
          f"rejected {s.rejected}", file=sys.stderr)
    return 0
