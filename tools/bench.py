"""``depthslam bench NAME ...``: dispatches to one benchmark module's ``main(argv)``.

Benchmarks print figures (median, p95, ratios against a peer run side by side); they are never tests.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "transport": "tools.bench_transport",
    "tsdf": "tools.bench_tsdf",
    "depth": "tools.bench_depth",
    "run": "tools.bench_run",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        print(f"usage: depthslam bench {{{names}}} [OPTIONS]", file=sys.stderr if args else sys.stdout)
        return 2 if args else 0
    return int(importlib.import_module(BENCHMARKS[args[0]]).main(args[1:]) or 0)
