"""``depthslam bench tsdf``: our numba TSDF map against Open3D's CPU integrators on the same frames.

The same frames (a TUM folder with ground-truth poses, or the built-in synthetic 640x480 room) are fused
into our :class:`fusion.volume.TsdfVolume` and into Open3D's ``VoxelBlockGrid`` (CPU) and legacy
``ScalableTSDFVolume`` at the same voxel size, truncation and depth range. Per frame it times integration,
incremental meshing of the touched blocks (ours; Open3D only extracts whole meshes, timed at the end)
and raycasting depth + normals + colour at the frame's pose, and prints medians with ratios to Open3D.

Numba compile (or on-disk cache load) time is measured separately, on a throwaway volume, before any
timed frame. Timings are wall clock on whatever else the machine is running: on a shared machine,
compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fusion.integrator import Integrator, IntegratorConfig
from fusion.meshing import blocks_affected_by, extract_mesh, mesh_blocks
from fusion.raycast import RaycastConfig, raycast
from fusion.volume import TsdfVolume, VolumeConfig
from stream.messages import Intrinsics
from stream.sources.base import SourceError


@dataclass(frozen=True)
class Frame:
    """One RGB-D frame with its pose. depth_m (H, W) float32; rgb (H, W, 3) uint8; T_W_C (4, 4) float64."""

    depth_m: np.ndarray
    rgb: np.ndarray
    T_W_C: np.ndarray


@dataclass(frozen=True)
class BenchConfig:
    """What to run."""

    data: Path | None = None
    """TUM folder (rgb/depth/associations/groundtruth/camera.txt); None = built-in synthetic room."""
    voxel_size_m: float = 0.02
    """Voxel edge in metres, for every integrator."""
    truncation_vox: float = 4.0
    """Truncation distance in voxels, for every integrator."""
    max_depth_m: float = 3.0
    """Depth beyond this is ignored by every integrator (and raycasts stop there)."""
    frames: int = 60
    """Frames to fuse."""
    open3d: bool = True
    """Run the Open3D integrators too."""
    scalable: bool = True
    """Include Open3D's legacy ScalableTSDFVolume (integration only is comparable in open3d 0.20)."""

    def __post_init__(self) -> None:
        if not self.voxel_size_m > 0 or not self.truncation_vox > 0 or not self.max_depth_m > 0:
            raise ValueError("voxel size, truncation and max depth must be positive")
        if self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")


@dataclass
class Figures:
    """Benchmark results (milliseconds are medians over frames unless named otherwise)."""

    data: str
    width: int
    height: int
    frames: int
    voxel_size_m: float
    truncation_vox: float
    max_depth_m: float
    numba_threads: int
    numba_threading_layer: str
    numba_first_call_s: dict[str, float]
    ours_integrate_ms: float
    ours_integrate_p95_ms: float
    ours_mesh_incremental_ms: float
    ours_mesh_incremental_p95_ms: float
    ours_mesh_messages_ms: float
    ours_mesh_blocks_per_frame: float
    ours_raycast_ms: float
    ours_raycast_p95_ms: float
    ours_extract_full_ms: float
    ours_mesh_vertices: int
    ours_blocks: int
    ours_map_mib: float
    peak_rss_after_ours_mib: float
    open3d_version: str | None = None
    open3d_integrate_ms: dict[str, float] = field(default_factory=dict)
    open3d_extract_full_ms: dict[str, float] = field(default_factory=dict)
    open3d_mesh_vertices: dict[str, int] = field(default_factory=dict)
    open3d_raycast_ms: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)
    """Open3D integrate ms / ours, per Open3D integrator (> 1: ours is faster)."""
    raycast_speedup: float | None = None
    extract_speedup: float | None = None
    peak_rss_after_open3d_mib: float | None = None
    open3d_broken: list[str] = field(default_factory=list)
    """Open3D integrators that ran but produced no map in this version (left out of the comparison)."""
    machine: str = ""


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def load_frames(cfg: BenchConfig) -> tuple[list[Frame], Intrinsics, str]:
    """The frames to fuse, their (undistorted, pinhole) intrinsics and a description of the data."""
    frames: list[Frame] = []
    if cfg.data is None:
        from stream.sources.synthetic import SyntheticConfig, SyntheticSource

        source = SyntheticSource(SyntheticConfig(num_frames=cfg.frames))
        source.open()
        while (frame := source.read()) is not None:
            frames.append(Frame(frame.depth_m, frame.image, frame.T_W_C))
        source.close()
        return frames, source.intrinsics, "synthetic 640x480 room"
    from stream.sources.tum import TumSource

    source = TumSource(cfg.data)
    source.open()
    intrinsics: Intrinsics | None = None
    while len(frames) < cfg.frames and (frame := source.read()) is not None:
        if frame.depth_m is None or frame.T_W_C is None or frame.intrinsics is None:
            continue
        intrinsics = frame.intrinsics
        frames.append(Frame(frame.depth_m, frame.image, frame.T_W_C))
    source.close()
    if not frames or intrinsics is None:
        raise ValueError(f"{cfg.data}: no frame with depth, ground-truth pose and intrinsics")
    note = ""
    if intrinsics.distortion:
        note = " (lens distortion ignored: pinhole model used for every integrator)"
        intrinsics = Intrinsics(intrinsics.width_px, intrinsics.height_px, intrinsics.fx, intrinsics.fy,
                                intrinsics.cx, intrinsics.cy)
    return frames, intrinsics, f"{cfg.data}{note}"


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def run_ours(cfg: BenchConfig, frames: list[Frame], k: Intrinsics) -> dict[str, object]:
    import numba

    vol_cfg = VolumeConfig(voxel_size_m=cfg.voxel_size_m)
    integrator = Integrator(IntegratorConfig(truncation_vox=cfg.truncation_vox, max_depth_m=cfg.max_depth_m))
    ray_cfg = RaycastConfig(max_depth_m=cfg.max_depth_m)
    # first calls on a throwaway volume: numba compile or cache load, reported apart from the timings
    scratch = TsdfVolume(vol_cfg)
    f0 = frames[0]
    first: dict[str, float] = {}
    first["integrate"] = _timed(lambda: integrator.integrate(f0.depth_m, f0.rgb, f0.T_W_C, k, scratch))[0] / 1e3
    first["mesh"] = _timed(lambda: mesh_blocks(scratch, blocks_affected_by(scratch, scratch.block_keys())))[0] / 1e3
    first["raycast"] = _timed(lambda: raycast(scratch, f0.T_W_C, k, ray_cfg))[0] / 1e3

    vol = TsdfVolume(vol_cfg)
    t_int, t_mesh, t_msg, t_ray, n_blocks = [], [], [], [], []
    for f in frames:
        ms, res = _timed(lambda f=f: integrator.integrate(f.depth_m, f.rgb, f.T_W_C, k, vol))
        t_int.append(ms)
        ms, meshes = _timed(lambda res=res: mesh_blocks(vol, blocks_affected_by(vol, res.touched_keys)))
        t_mesh.append(ms)
        n_blocks.append(len(meshes))
        t_msg.append(_timed(meshes.to_messages)[0])
        t_ray.append(_timed(lambda f=f: raycast(vol, f.T_W_C, k, ray_cfg))[0])
    extract = [_timed(lambda: extract_mesh(vol)) for _ in range(3)]
    return {
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "numba_first_call_s": first,
        "ours_integrate_ms": _median(t_int), "ours_integrate_p95_ms": _p95(t_int),
        "ours_mesh_incremental_ms": _median(t_mesh), "ours_mesh_incremental_p95_ms": _p95(t_mesh),
        "ours_mesh_messages_ms": _median(t_msg), "ours_mesh_blocks_per_frame": float(np.mean(n_blocks)),
        "ours_raycast_ms": _median(t_ray), "ours_raycast_p95_ms": _p95(t_ray),
        "ours_extract_full_ms": min(ms for ms, _ in extract),
        "ours_mesh_vertices": int(extract[0][1].vertices.shape[0]),  # type: ignore[attr-defined]
        "ours_blocks": vol.block_count, "ours_map_mib": vol.nbytes / 2**20,
        "peak_rss_after_ours_mib": _peak_rss_mib(),
    }


def run_open3d(cfg: BenchConfig, frames: list[Frame], k: Intrinsics) -> dict[str, object]:
    import open3d as o3d
    import open3d.core as o3c

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # its warnings go to stdout (--json)
    trunc_m = cfg.truncation_vox * cfg.voxel_size_m
    k_t = o3c.Tensor(np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]]))
    out: dict[str, object] = {"open3d_version": o3d.__version__}
    integ: dict[str, float] = {}
    extract: dict[str, float] = {}
    verts: dict[str, int] = {}

    device = o3c.Device("CPU:0")
    vbg = o3d.t.geometry.VoxelBlockGrid(
        ("tsdf", "weight", "color"), (o3c.float32, o3c.float32, o3c.float32), ((1), (1), (3)),
        cfg.voxel_size_m, 8, 50_000, device,
    )
    images = [(o3d.t.geometry.Image(o3c.Tensor(f.depth_m)),
               o3d.t.geometry.Image(o3c.Tensor(f.rgb.astype(np.float32) / 255.0)),
               o3c.Tensor(np.linalg.inv(f.T_W_C))) for f in frames]
    t_int, t_ray = [], []
    for depth, color, ext in images:
        t0 = time.perf_counter()
        coords = vbg.compute_unique_block_coordinates(depth, k_t, ext, 1.0, cfg.max_depth_m, cfg.truncation_vox)
        vbg.integrate(coords, depth, color, k_t, ext, 1.0, cfg.max_depth_m, cfg.truncation_vox)
        t_int.append((time.perf_counter() - t0) * 1e3)
        t_ray.append(_timed(lambda coords=coords, ext=ext: vbg.ray_cast(
            coords, k_t, ext, k.width_px, k.height_px, ["depth", "normal", "color"], 1.0, 0.1, cfg.max_depth_m,
            1.0, cfg.truncation_vox, 8))[0])
    integ["VoxelBlockGrid"] = _median(t_int)
    ext_runs = [_timed(lambda: vbg.extract_triangle_mesh(weight_threshold=1.0)) for _ in range(3)]
    extract["VoxelBlockGrid"] = min(ms for ms, _ in ext_runs)
    verts["VoxelBlockGrid"] = int(ext_runs[0][1].vertex.positions.shape[0])  # type: ignore[attr-defined]
    out["open3d_raycast_ms"] = _median(t_ray)

    if cfg.scalable:
        vol = o3d.pipelines.integration.ScalableTSDFVolume(
            voxel_length=cfg.voxel_size_m, sdf_trunc=trunc_m,
            color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        )
        pinhole = o3d.camera.PinholeCameraIntrinsic(k.width_px, k.height_px, k.fx, k.fy, k.cx, k.cy)
        t_int = []
        for f in frames:
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(f.rgb)), o3d.geometry.Image(f.depth_m), depth_scale=1.0,
                depth_trunc=cfg.max_depth_m, convert_rgb_to_intensity=False,
            )
            t_int.append(_timed(lambda rgbd=rgbd, f=f: vol.integrate(rgbd, pinhole, np.linalg.inv(f.T_W_C)))[0])
        ms, mesh = _timed(vol.extract_triangle_mesh)
        verts["ScalableTSDFVolume"] = len(mesh.vertices)  # type: ignore[attr-defined]
        if len(vol.extract_voxel_point_cloud().points) == 0:
            # open3d 0.20's ScalableTSDFVolume stores nothing: its "integration" time is that of a no-op
            out["open3d_broken"] = [f"ScalableTSDFVolume (open3d {o3d.__version__}: integrates nothing, "
                                    f"median {_median(t_int):.2f} ms of a no-op; excluded)"]
        else:
            integ["ScalableTSDFVolume"] = _median(t_int)
            extract["ScalableTSDFVolume"] = ms
    out["open3d_integrate_ms"] = integ
    out["open3d_extract_full_ms"] = extract
    out["open3d_mesh_vertices"] = verts
    out["peak_rss_after_open3d_mib"] = _peak_rss_mib()
    return out


def run(cfg: BenchConfig) -> Figures:
    frames, k, description = load_frames(cfg)
    ours = run_ours(cfg, frames, k)
    figures = Figures(
        data=description, width=k.width_px, height=k.height_px, frames=len(frames),
        voxel_size_m=cfg.voxel_size_m, truncation_vox=cfg.truncation_vox, max_depth_m=cfg.max_depth_m,
        machine=f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        **ours,  # type: ignore[arg-type]
    )
    if cfg.open3d:
        o3d_figs = run_open3d(cfg, frames, k)
        for key, value in o3d_figs.items():
            setattr(figures, key, value)
        figures.speedup = {name: ms / figures.ours_integrate_ms for name, ms in figures.open3d_integrate_ms.items()}
        if figures.open3d_raycast_ms is not None:
            figures.raycast_speedup = figures.open3d_raycast_ms / figures.ours_raycast_ms
        if "VoxelBlockGrid" in figures.open3d_extract_full_ms:
            figures.extract_speedup = figures.open3d_extract_full_ms["VoxelBlockGrid"] / figures.ours_extract_full_ms
    return figures


def print_table(f: Figures) -> None:
    print(f"data: {f.data}, {f.frames} frames {f.width}x{f.height}, voxel {f.voxel_size_m * 100:g} cm, "
          f"truncation {f.truncation_vox:g} voxels, max depth {f.max_depth_m:g} m")
    print(f"numba: {f.numba_threads} threads ({f.numba_threading_layer}); first calls (compile or cache load): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in f.numba_first_call_s.items()))
    print(f"{'median ms/frame':<34}{'ours':>9}{'open3d':>10}{'ratio':>8}")
    vbg = f.open3d_integrate_ms.get("VoxelBlockGrid")
    rows: list[tuple[str, float, float | None]] = [
        ("integrate (VoxelBlockGrid CPU)", f.ours_integrate_ms, vbg),
    ]
    if "ScalableTSDFVolume" in f.open3d_integrate_ms:
        scalable = f.open3d_integrate_ms["ScalableTSDFVolume"]
        rows.append(("integrate (ScalableTSDFVolume)", f.ours_integrate_ms, scalable))
    rows += [
        ("mesh touched blocks (incremental)", f.ours_mesh_incremental_ms, None),
        ("  + build MeshBlock messages", f.ours_mesh_messages_ms, None),
        ("raycast depth+normal+colour", f.ours_raycast_ms, f.open3d_raycast_ms),
        ("extract whole mesh (once, at end)", f.ours_extract_full_ms, f.open3d_extract_full_ms.get("VoxelBlockGrid")),
    ]
    for name, ours, theirs in rows:
        ratio = f"{theirs / ours:>7.2f}x" if theirs else ""
        theirs_s = f"{theirs:>10.2f}" if theirs is not None else f"{'-':>10}"
        print(f"{name:<34}{ours:>9.2f}{theirs_s}{ratio}")
    print(f"p95: integrate {f.ours_integrate_p95_ms:.2f}, incremental mesh {f.ours_mesh_incremental_p95_ms:.2f} "
          f"({f.ours_mesh_blocks_per_frame:.0f} blocks/frame), raycast {f.ours_raycast_p95_ms:.2f} ms")
    print(f"map: {f.ours_blocks} blocks, {f.ours_map_mib:.1f} MiB; mesh vertices ours {f.ours_mesh_vertices}, open3d "
          + ", ".join(f"{k} {v}" for k, v in f.open3d_mesh_vertices.items()))
    rss = f"peak RSS: {f.peak_rss_after_ours_mib:.0f} MiB after ours"
    if f.peak_rss_after_open3d_mib is not None:
        rss += f", {f.peak_rss_after_open3d_mib:.0f} MiB after open3d {f.open3d_version}"
    print(rss)
    for line in f.open3d_broken:
        print(f"not compared: {line}")
    if f.numba_threading_layer == "omp":
        print("note: numba's OpenMP threads spin between kernels; on a machine shared with other busy processes "
              "OMP_WAIT_POLICY=passive (or NUMBA_NUM_THREADS=1) avoids losing time slices to the spinning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depthslam bench tsdf", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="TUM folder (default: synthetic 640x480 room)")
    parser.add_argument("--voxel-size-m", type=float, default=0.02)
    parser.add_argument("--truncation-vox", type=float, default=4.0)
    parser.add_argument("--max-depth-m", type=float, default=3.0)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--no-open3d", action="store_true", help="time our map only")
    parser.add_argument("--no-scalable", action="store_true", help="skip Open3D's legacy ScalableTSDFVolume")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        cfg = BenchConfig(data=args.data, voxel_size_m=args.voxel_size_m, truncation_vox=args.truncation_vox,
                          max_depth_m=args.max_depth_m, frames=args.frames, open3d=not args.no_open3d,
                          scalable=not args.no_scalable)
        figures = run(cfg)
    except ImportError as exc:
        print(f"depthslam bench tsdf: cannot import open3d ({exc}); install libusb-1.0-0 "
              "(apt-get install -y libusb-1.0-0) or pass --no-open3d", file=sys.stderr)
        return 1
    except (ValueError, SourceError) as exc:
        print(f"depthslam bench tsdf: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(figures), indent=2))
    else:
        print_table(figures)
    return 0
