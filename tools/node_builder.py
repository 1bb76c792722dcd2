"""Builds a :class:`stream.node.Node` from ``depthslam run`` arguments, and its final summary."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.node import MapSink, Node

if TYPE_CHECKING:
    from fusion.mapper import Mapper


class NodeBuildError(RuntimeError):
    """The arguments do not describe a node that can run (bad source, unknown model, missing weights...)."""


@dataclass
class BuiltNode:
    """A node ready to run, with what the summary needs."""

    node: Node
    out_dir: Path
    sinks: list[MapSink]
    depth_label: str
    rrd_path: Path | None


SOURCES_WITH_DEPTH = ("synthetic", "tum")


def _choose_depth(args: argparse.Namespace, kind: str) -> str:
    if args.depth != "auto":
        return args.depth
    return "gt" if kind in SOURCES_WITH_DEPTH else "small"


def build_node(args: argparse.Namespace, source_from_args: Callable[[argparse.Namespace], Any]) -> BuiltNode:
    """Everything ``depthslam run`` needs; raises :class:`NodeBuildError` with a clear message."""
    from engines.config import Backend, EngineConfig
    from engines.errors import EngineError
    from engines.hub import HubConfig
    from engines.models import PASSTHROUGH
    from engines.select import create_engine
    from engines.worker import DepthWorker, DepthWorkerConfig
    from stream.calibration import CalibrationFileError
    from stream.capture import CaptureConfig, CaptureThread
    from stream.sources import SourceError, source_kind
    from stream.transport import DeliveryMode, EndpointError, Publisher, TransportConfig

    mode = DeliveryMode(args.mode)
    out_dir = Path(args.out)
    try:
        kind = source_kind(args.source)
        plan = source_from_args(args)
        depth = _choose_depth(args, kind)
        if depth == "gt" and kind not in SOURCES_WITH_DEPTH:
            raise ValueError(f"--depth gt needs a source that carries depth ({', '.join(SOURCES_WITH_DEPTH)}); "
                             f"{args.source!r} is a {kind} source: choose a depth model (--depth small)")
        if args.poses == "gt" and kind not in SOURCES_WITH_DEPTH:
            raise ValueError(f"--poses gt needs a source with ground-truth poses ({', '.join(SOURCES_WITH_DEPTH)}); "
                             f"{args.source!r} is a {kind} source: use the tracker (--poses tracker)")
        engine_config = EngineConfig(
            model=PASSTHROUGH if depth == "gt" else depth, backend=Backend(args.backend),
            weights=Path(args.weights) if args.weights else None, random_weights=args.random_weights,
            hub=HubConfig.from_env(),
        )
        engine = create_engine(engine_config)
        mapper = build_mapper(args)
        sinks = make_sinks(args, out_dir)
    except (SourceError, CalibrationFileError, EngineError, EndpointError, ValueError) as exc:
        raise NodeBuildError(str(exc)) from exc

    capture_config = CaptureConfig(
        mode=mode, fps=plan.pacing_fps, max_frames=plan.max_frames, hfov_deg=args.hfov_deg,
        wait_subscribers=1 if mode is DeliveryMode.LOSSLESS else 0,
    )
    transport = TransportConfig(mode=mode)

    def capture(endpoint: str) -> CaptureThread:
        return CaptureThread(plan.source, Publisher(endpoint, transport), capture_config)

    def depth_worker(sub: str, pub: str) -> DepthWorker:
        return DepthWorker(DepthWorkerConfig(sub_endpoint=sub, pub_endpoint=pub, transport=transport), engine)

    node = Node(capture=capture, depth=depth_worker, mapper=mapper, sinks=sinks, mode=mode)
    rrd = out_dir / "recording.rrd" if args.viewer == "save" else None
    return BuiltNode(node, out_dir, sinks, engine.name, rrd)


def build_mapper(args: argparse.Namespace) -> Mapper:
    """The mapper the map options describe (``--poses``, ``--voxel-size-m``, ...); raises ValueError."""
    from fusion.integrator import IntegratorConfig
    from fusion.mapper import GroundTruthPoses, Mapper, MapperConfig
    from fusion.raycast import RaycastConfig
    from fusion.volume import VolumeConfig

    config = MapperConfig(
        volume=VolumeConfig(voxel_size_m=args.voxel_size_m, max_blocks=args.max_blocks),
        integrator=IntegratorConfig(truncation_vox=args.trunc_vox, max_depth_m=args.max_depth_m),
        mesh_every_n=args.mesh_every_n,
        render_every_n=args.render_every_n,
        render_scale=args.render_scale,
        raycast=RaycastConfig(max_depth_m=args.max_depth_m),
    )
    return Mapper(config, GroundTruthPoses() if args.poses == "gt" else _make_tracker())


def _make_tracker() -> Any:
    from fusion.tracker import Tracker, TrackerConfig

    return Tracker(TrackerConfig())


def make_sinks(args: argparse.Namespace, out_dir: Path) -> list[MapSink]:
    from stream.node import MapTopicSink, RerunSink, ThreadedSink

    sinks: list[MapSink] = []
    if args.viewer == "serve" and not args.allow_remote:
        raise ValueError("--viewer serve: rerun's gRPC server listens on every network interface; "
                         "pass --allow-remote to accept that (or use --viewer save/connect)")
    if args.viewer != "none":
        from stream.rerun_view import RerunView, RerunViewConfig

        out_dir.mkdir(parents=True, exist_ok=True)
        sinks.append(ThreadedSink(RerunSink(RerunView(RerunViewConfig(
            mode=args.viewer, rrd_path=out_dir / "recording.rrd", connect_url=args.connect_url, image_every_n=5,
            depth_as_mm=True,
        ))), max_pending=None if args.mode == "lossless" else 8))
    if args.map_pub:
        from stream.map_topic import MapPublisher, MapTopicConfig

        if not args.map_snapshot:
            raise ValueError("--map-pub needs --map-snapshot (late joiners ask it for the map)")
        sinks.append(MapTopicSink(MapPublisher(
            args.map_pub, args.map_snapshot, MapTopicConfig(allow_remote=args.allow_remote)
        )))
    elif args.map_snapshot:
        raise ValueError("--map-snapshot needs --map-pub")
    return sinks


def export_for_reconstruction(out_dir: Path, mapping: Any, max_points: int = 100_000) -> dict[str, str]:
    """Keyframes as nerfstudio ``transforms.json`` + COLMAP text under ``out_dir/export`` (if any keyframes)."""
    from tools.scene_export import export_keyframes

    if not mapping.keyframes:
        return {}
    with mapping.lock:
        mesh = mapping.mapper.mesh()
    step = max(1, len(mesh.vertices) // max_points)
    result = export_keyframes(out_dir / "export", mapping.keyframes, mesh.vertices[::step], mesh.colors[::step])
    return {"transforms": str(result.transforms_json), "colmap": str(result.colmap_dir)}


def evaluate_against_ground_truth(mapping: Any) -> dict[str, float] | None:
    """ATE (SE(3) and Sim(3) aligned) and RPE of the tracked trajectory when the source had ground truth."""
    import numpy as np

    from tools.trajectory_metrics import AlignMode, EvaluationConfig, evaluate_trajectories

    if len(mapping.trajectory) < 3 or len(mapping.ground_truth) < 3:
        return None
    est_s = np.array([s for s, _ in mapping.trajectory], np.float64) / 1e9
    est = np.array([T for _, T in mapping.trajectory])
    gt_s = np.array([s for s, _ in mapping.ground_truth], np.float64) / 1e9
    gt = np.array([T for _, T in mapping.ground_truth])
    se3 = evaluate_trajectories(est_s, est, gt_s, gt, EvaluationConfig(align=AlignMode.SE3, max_difference_s=1e-6))
    sim3 = evaluate_trajectories(est_s, est, gt_s, gt, EvaluationConfig(align=AlignMode.SIM3, max_difference_s=1e-6))
    return {
        "matched_poses": se3.matched_poses,
        "ate_se3_rmse_m": se3.ate.stats.rmse,
        "ate_sim3_rmse_m": sim3.ate.stats.rmse,
        "sim3_scale": sim3.ate.alignment.scale,
        "rpe_trans_rmse_m": se3.rpe.trans.rmse,
        "rpe_rot_rmse_deg": se3.rpe.rot.rmse,
    }


def summarise(built: BuiltNode, elapsed_s: float) -> dict[str, Any]:
    """Close the sinks, write the outputs, and return the run's summary (the ``--json`` contract)."""
    from stream.node import latency_summary, write_outputs

    node = built.node
    for sink in built.sinks:
        sink.close()
    outputs = write_outputs(built.out_dir, node.mapping)
    outputs.update(export_for_reconstruction(built.out_dir, node.mapping))
    if built.rrd_path is not None:
        outputs["recording"] = str(built.rrd_path)
    m = node.mapping.stats
    cap = node.capture.stats
    stages = {name: times.summary() for name, times in m.times.items()}
    # same monotonic clock in one process: capture publish -> depth arrives at the mapper -> map updated
    stages["capture_to_depth"] = latency_summary(cap.publish_ns, m.received_ns)
    stages["end_to_end"] = latency_summary(cap.publish_ns, m.mapped_ns)
    return {
        "frames_in": cap.published,
        "frames_tracked": m.tracked,
        "frames_integrated": m.integrated,
        "frames_lost": m.lost,
        "frames_rejected": m.rejected,
        # conservation: every published frame was mapped, rejected (counted apart) or dropped by a stage
        "dropped": cap.dropped_late + max(0, cap.published - node.accounted()),
        "keyframes": m.keyframes,
        "last_frame_id_in": cap.last_frame_id,
        "last_frame_id_mapped": m.last_frame_id,
        "fps": m.frames / elapsed_s if elapsed_s > 0 else 0.0,
        "elapsed_s": elapsed_s,
        "depth": built.depth_label,
        "stages": stages,
        "map_blocks": node.mapping.mapper.volume.block_count,
        "refused_blocks": m.refused_blocks,
        "last_error": m.last_error,
        "evaluation": evaluate_against_ground_truth(node.mapping),
        "outputs": outputs,
    }
