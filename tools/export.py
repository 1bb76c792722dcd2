"""``depthslam export MODEL``: write the ONNX graph of a depth model (dynamic height and width).

    depthslam export small [--weights FILE.safetensors|.pth | --random-weights] [--out FILE.onnx]
                           [--exporter torchscript|dynamo] [--opset 17] [--no-verify]

The checkpoint comes from ``--weights`` or the hub (fetched into the cache on first use). The graph is
traced with a non-square sample and, unless ``--no-verify``, run by ONNX Runtime at two other sizes and
compared with PyTorch before it is written. Without ``--out`` it goes to the cache path the ONNX backends
look in when they export themselves (``--export-here``), so they pick it up.

Exit status: 0 on success, 1 when weights are missing or the export fails, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from engines.config import Backend, Exporter
from engines.errors import EngineError
from engines.models import MODELS
from tools.depth import add_weights_arguments, hub_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthslam export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=list(MODELS), help="model to export")
    parser.add_argument("--out", type=Path, help="ONNX file to write (default: the export cache)")
    parser.add_argument("--exporter", default=Exporter.TORCHSCRIPT.value, choices=[e.value for e in Exporter],
                        help="torch exporter (default torchscript)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset for the torchscript exporter (default 17)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_weights_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engines.config import EngineConfig
    from engines.onnx_export import ExportConfig, export_onnx, export_path
    from engines.weights import load_model

    args = build_parser().parse_args(argv)
    try:
        if args.weights is not None and args.weights.suffix.lower() == ".onnx":
            raise ValueError(f"{args.weights} is already ONNX; export takes a .safetensors or .pth checkpoint")
        config = EngineConfig(
            model=args.model, backend=Backend.AUTO, weights=args.weights, random_weights=args.random_weights,
            seed=args.seed, exporter=Exporter(args.exporter), hub=hub_config_from_args(args),
        )
        export_config = ExportConfig(exporter=config.exporter, opset=args.opset)
        if args.no_verify:
            export_config = replace(export_config, verify_sizes=())
    except ValueError as exc:
        print(f"depthslam export: {exc}", file=sys.stderr)
        return 2
    spec = MODELS[args.model]
    try:
        out = args.out if args.out is not None else export_path(spec, config)
        model = load_model(spec, hub=config.hub, weights=config.weights, random_weights=config.random_weights,
                           seed=config.seed, progress=sys.stderr)
        result = export_onnx(model, out, export_config)
    except EngineError as exc:
        print(f"depthslam export: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({
            "model": spec.name, "path": str(result.path), "exporter": result.exporter.value,
            "seconds": round(result.seconds, 3), "num_parameters": result.num_parameters,
            "max_rel_error": result.max_rel_error,
        }))
    else:
        check = "not verified" if result.max_rel_error is None else f"max relative error {result.max_rel_error:.1e}"
        print(f"wrote {result.path} ({spec.name}, {result.num_parameters / 1e6:.1f}M parameters, "
              f"{result.exporter.value}, {result.seconds:.1f} s, {check} vs PyTorch)")
    return 0
