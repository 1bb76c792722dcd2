"""``depthslam`` command line: dispatches ``depthslam SUBCOMMAND ...`` to ``tools.<module>.main(argv)``.

Subcommand modules are imported only when used, so ``depthslam --version`` and ``depthslam capture``
start without importing torch, open3d or numba.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import PackageNotFoundError, version

#: subcommand -> (module with ``main(argv) -> int``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "capture": ("tools.capture", "run a capture source and publish its frames on ZeroMQ"),
    "calibrate": ("tools.calibrate", "compute a camera calibration file from chessboard images or a video"),
    "eval": ("tools.evaluate", "score a TUM trajectory against ground truth (ATE/RPE)"),
    "bench": ("tools.bench", "benchmarks: depthslam bench {transport,tsdf,depth}"),
    "export": ("tools.export", "export a depth model checkpoint to ONNX"),
    "engine": ("tools.engine", "build a TensorRT engine ahead of time"),
    "depth": ("tools.depth", "run a depth worker stage"),
    "map": ("tools.map", "run the mapping stage (tracker + TSDF map) as its own process"),
    "run": ("tools.run", "run the whole node from a source to a live map"),
    "map-client": ("tools.map_client_example", "follow a map topic from another process and save it as PLY"),
}


def package_version() -> str:
    try:
        return version("depthslam")
    except PackageNotFoundError:
        return "0+unknown"


def _usage() -> str:
    lines = ["usage: depthslam [--version] SUBCOMMAND [ARGS...]", "", "subcommands:"]
    for name, (module, text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("Run 'depthslam SUBCOMMAND --help' for the options of one subcommand.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"depthslam {package_version()}")
        return 0
    # numba's OpenMP threads must not busy-wait between kernels: the node's other stages share the CPU
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    name, rest = args[0], args[1:]
    entry = SUBCOMMANDS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        print(f"depthslam: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
