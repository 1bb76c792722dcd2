"""``depthslam map --sub ENDPOINT``: run the mapping stage (tracker + TSDF map + outputs) as its own process.

It subscribes to depth frames (from ``depthslam depth``), and stops on Ctrl-C/SIGTERM, after
``--max-frames`` frames, or when no frame arrived for ``--idle-timeout-s`` after the first; then it saves
the same outputs as ``depthslam run`` (mesh.ply, trajectory.txt, recording.rrd, map.npz).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from tools.run import add_map_arguments


def main(argv: list[str] | None = None) -> int:
    from tools.node_builder import build_mapper, export_for_reconstruction, make_sinks

    parser = argparse.ArgumentParser(prog="depthslam map", description=__doc__.splitlines()[0])
    parser.add_argument("--sub", required=True, metavar="ENDPOINT", help="endpoint of the depth frames (connect)")
    parser.add_argument("--topic", default="depth")
    parser.add_argument("--mode", choices=["realtime", "lossless"], default="realtime")
    parser.add_argument("--max-frames", type=int, help="stop after this many depth frames")
    parser.add_argument("--idle-timeout-s", type=float, default=10.0,
                        help="stop when no frame arrived for this long after the first (default 10)")
    add_map_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet or args.json else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from pathlib import Path

    from stream.node import MappingStage, write_outputs
    from stream.transport import DeliveryMode, EndpointError, TransportConfig

    try:
        mapper = build_mapper(args)
        sinks = make_sinks(args, Path(args.out))
        stage = MappingStage(mapper, args.sub, TransportConfig(mode=DeliveryMode(args.mode)), sinks, topic=args.topic)
    except (ValueError, EndpointError) as exc:
        print(f"depthslam map: error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.monotonic()
    stage.start()
    print(f"depthslam map: subscribed to {args.sub}", file=sys.stderr, flush=True)
    try:
        last_count, last_change = -1, time.monotonic()
        while not stop.is_set() and stage.failure is None:
            time.sleep(0.05)
            count = stage.stats.frames + stage.stats.rejected
            if args.max_frames is not None and stage.stats.frames >= args.max_frames:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif count > 0 and time.monotonic() - last_change > args.idle_timeout_s:
                break
    finally:
        stage.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        for sink in sinks:
            sink.close()
        outputs = write_outputs(Path(args.out), stage)
        outputs.update(export_for_reconstruction(Path(args.out), stage))
    m = stage.stats
    summary = {"frames": m.frames, "frames_tracked": m.tracked, "frames_integrated": m.integrated,
               "frames_lost": m.lost, "frames_rejected": m.rejected, "dropped": stage.dropped,
               "keyframes": m.keyframes, "elapsed_s": time.monotonic() - start,
               "stages": {k: v.summary() for k, v in m.times.items()}, "outputs": outputs}
    print(json.dumps(summary, indent=2) if args.json else f"{m.frames} frames mapped -> {outputs['mesh']}")
    if stage.failure is not None:
        print(f"depthslam map: error: {stage.failure}", file=sys.stderr)
        return 1
    return 0
