"""``depthslam bench tsdf``: our numba TSDF map against Open3D's CPU integrators on the same frames.

The same frames (a TUM folder with ground-truth poses, or the built-in synthetic 640x480 room) are fused
into our :class:`fusion.volume.TsdfVolume` and into Open3D's ``VoxelBlockGrid`` (CPU) and legacy
``ScalableTSDFVolume`` at the same voxel size, truncation and depth range. Per frame it times integration,
incremental meshing of the touched blocks (ours; Open3D only extracts whole meshes, timed at the end)
and raycasting depth + normals + colour at the frame's pose, and prints medians with ratios to Open3D.
The maps take turns frame by frame (ours, then each Open3D integrator), so that every one of them runs
under the same load of the machine and the ratios hold even where absolute times drift.

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
    peak_rss_mib: float
    """Peak resident memory of the process, all maps included."""
    open3d_version: str | None = None
    open3d_integrate_ms: dict[str, float] = field(default_factory=dict)
    open3d_extract_full_ms: dict[str, float] = field(default_factory=dict)
    open3d_mesh_vertices: dict[str, int] = field(default_factory=dict)
    open3d_raycast_ms: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)
    """Open3D integrate ms / ours, per Open3D integrator (> 1: ours is faster)."""
    raycast_speedup: float | None = None
    extract_speedup: float | None = None
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


class OursRun:
    """Our map, one frame at a time: integrate, mesh the touched blocks (+ MeshBlock messages), raycast."""

    def __init__(self, cfg: BenchConfig, k: Intrinsics, first_frame: Frame) -> None:
        self.k = k
        self.vol_cfg = VolumeConfig(voxel_size_m=cfg.voxel_size_m)
        self.integrator = Integrator(IntegratorConfig(truncation_vox=cfg.truncation_vox, max_depth_m=cfg.max_depth_m))
        self.ray_cfg = RaycastConfig(max_depth_m=cfg.max_depth_m)
        # first calls on a throwaway volume: numba compile or cache load, reported apart from the timings
        scratch = TsdfVolume(self.vol_cfg)
        f0 = first_frame
        self.first: dict[str, float] = {
            "integrate": _timed(lambda: self.integrator.integrate(f0.depth_m, f0.rgb, f0.T_W_C, k, scratch))[0] / 1e3,
            "mesh": _timed(lambda: mesh_blocks(scratch, blocks_affected_by(scratch, scratch.block_keys())))[0] / 1e3,
            "raycast": _timed(lambda: raycast(scratch, f0.T_W_C, k, self.ray_cfg))[0] / 1e3,
        }
        self.vol = TsdfVolume(self.vol_cfg)
        self.t_int: list[float] = []
        self.t_mesh: list[float] = []
        self.t_msg: list[float] = []
        self.t_ray: list[float] = []
        self.n_blocks: list[int] = []

    def step(self, f: Frame) -> None:
        vol, k = self.vol, self.k
        ms, res = _timed(lambda: self.integrator.integrate(f.depth_m, f.rgb, f.T_W_C, k, vol))
        self.t_int.append(ms)
        ms, meshes = _timed(lambda: mesh_blocks(vol, blocks_affected_by(vol, res.touched_keys)))
        self.t_mesh.append(ms)
        self.n_blocks.append(len(meshes))
        self.t_msg.append(_timed(meshes.to_messages)[0])
        self.t_ray.append(_timed(lambda: raycast(vol, f.T_W_C, k, self.ray_cfg))[0])

    def result(self) -> dict[str, object]:
        import numba

        extract = [_timed(lambda: extract_mesh(self.vol)) for _ in range(3)]
        return {
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": numba.threading_layer(),
            "numba_first_call_s": self.first,
            "ours_integrate_ms": _median(self.t_int), "ours_integrate_p95_ms": _p95(self.t_int),
            "ours_mesh_incremental_ms": _median(self.t_mesh), "ours_mesh_incremental_p95_ms": _p95(self.t_mesh),
            "ours_mesh_messages_ms": _median(self.t_msg), "ours_mesh_blocks_per_frame": float(np.mean(self.n_blocks)),
            "ours_raycast_ms": _median(self.t_ray), "ours_raycast_p95_ms": _p95(self.t_ray),
            "ours_extract_full_ms": min(ms for ms, _ in extract),
            "ours_mesh_vertices": int(extract[0][1].vertices.shape[0]),  # type: ignore[attr-defined]
            "ours_blocks": self.vol.block_count, "ours_map_mib": self.vol.nbytes / 2**20,
        }


class VoxelBlockGridRun:
    """Open3D's VoxelBlockGrid on CPU, one frame at a time: integrate (block coordinates + update), raycast."""

    CAPACITY_BLOCKS = 50_000
    """Blocks the grid is created for (Open3D allocates its hash map up front)."""

    def __init__(self, cfg: BenchConfig, k: Intrinsics) -> None:
        import open3d as o3d
        import open3d.core as o3c

        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # its warnings go to stdout (--json)
        self.o3d, self.o3c, self.cfg, self.k = o3d, o3c, cfg, k
        self.k_t = o3c.Tensor(np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]]))
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            ("tsdf", "weight", "color"), (o3c.float32, o3c.float32, o3c.float32), ((1), (1), (3)),
            cfg.voxel_size_m, 8, self.CAPACITY_BLOCKS, o3c.Device("CPU:0"),
        )
        self.t_int: list[float] = []
        self.t_ray: list[float] = []

    def step(self, f: Frame) -> None:
        o3d, o3c, cfg, k = self.o3d, self.o3c, self.cfg, self.k
        # conversion to Open3D's types is not timed (ours takes the numpy arrays as they are)
        depth = o3d.t.geometry.Image(o3c.Tensor(f.depth_m))
        color = o3d.t.geometry.Image(o3c.Tensor(f.rgb.astype(np.float32) / 255.0))
        ext = o3c.Tensor(np.linalg.inv(f.T_W_C))
        t0 = time.perf_counter()
        coords = self.vbg.compute_unique_block_coordinates(depth, self.k_t, ext, 1.0, cfg.max_depth_m,
                                                           cfg.truncation_vox)
        self.vbg.integrate(coords, depth, color, self.k_t, ext, 1.0, cfg.max_depth_m, cfg.truncation_vox)
        self.t_int.append((time.perf_counter() - t0) * 1e3)
        self.t_ray.append(_timed(lambda: self.vbg.ray_cast(
            coords, self.k_t, ext, k.width_px, k.height_px, ["depth", "normal", "color"], 1.0, 0.1, cfg.max_depth_m,
            1.0, cfg.truncation_vox, 8))[0])

    def result(self) -> tuple[float, float, int, float]:
        """(integrate ms, whole-mesh extraction ms, mesh vertices, raycast ms)."""
        runs = [_timed(lambda: self.vbg.extract_triangle_mesh(weight_threshold=1.0)) for _ in range(3)]
        vertices = int(runs[0][1].vertex.positions.shape[0])  # type: ignore[attr-defined]
        return _median(self.t_int), min(ms for ms, _ in runs), vertices, _median(self.t_ray)


class ScalableRun:
    """Open3D's legacy ScalableTSDFVolume, integration only (its raycasting is not exposed)."""

    def __init__(self, cfg: BenchConfig, k: Intrinsics) -> None:
        import open3d as o3d

        self.o3d, self.cfg = o3d, cfg
        self.vol = o3d.pipelines.integration.ScalableTSDFVolume(
            voxel_length=cfg.voxel_size_m, sdf_trunc=cfg.truncation_vox * cfg.voxel_size_m,
            color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        )
        self.pinhole = o3d.camera.PinholeCameraIntrinsic(k.width_px, k.height_px, k.fx, k.fy, k.cx, k.cy)
        self.t_int: list[float] = []

    def step(self, f: Frame) -> None:
        o3d = self.o3d
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(f.rgb)), o3d.geometry.Image(f.depth_m), depth_scale=1.0,
            depth_trunc=self.cfg.max_depth_m, convert_rgb_to_intensity=False,
        )
        self.t_int.append(_timed(lambda: self.vol.integrate(rgbd, self.pinhole, np.linalg.inv(f.T_W_C)))[0])

    def result(self) -> tuple[float, float, int, bool]:
        """(integrate ms, whole-mesh extraction ms, mesh vertices, whether it stored anything)."""
        ms, mesh = _timed(self.vol.extract_triangle_mesh)
        stored = len(self.vol.extract_voxel_point_cloud().points) > 0
        return _median(self.t_int), ms, len(mesh.vertices), stored  # type: ignore[attr-defined]


def run(cfg: BenchConfig) -> Figures:
    """Fuse the frames into every map, frame by frame in turn (ours, then each Open3D integrator), so that
    all of them run under the same machine load; medians per map."""
    frames, k, description = load_frames(cfg)
    ours = OursRun(cfg, k, frames[0])
    vbg = VoxelBlockGridRun(cfg, k) if cfg.open3d else None
    scalable = ScalableRun(cfg, k) if cfg.open3d and cfg.scalable else None
    for f in frames:
        ours.step(f)
        if vbg is not None:
            vbg.step(f)
        if scalable is not None:
            scalable.step(f)
    figures = Figures(
        data=description, width=k.width_px, height=k.height_px, frames=len(frames),
        voxel_size_m=cfg.voxel_size_m, truncation_vox=cfg.truncation_vox, max_depth_m=cfg.max_depth_m,
        machine=f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        peak_rss_mib=0.0,
        **ours.result(),  # type: ignore[arg-type]
    )
    if vbg is not None:
        import open3d as o3d

        figures.open3d_version = o3d.__version__
        ms, extract_ms, vertices, ray_ms = vbg.result()
        figures.open3d_integrate_ms["VoxelBlockGrid"] = ms
        figures.open3d_extract_full_ms["VoxelBlockGrid"] = extract_ms
        figures.open3d_mesh_vertices["VoxelBlockGrid"] = vertices
        figures.open3d_raycast_ms = ray_ms
    if scalable is not None:
        ms, extract_ms, vertices, stored = scalable.result()
        figures.open3d_mesh_vertices["ScalableTSDFVolume"] = vertices
        if stored:
            figures.open3d_integrate_ms["ScalableTSDFVolume"] = ms
            figures.open3d_extract_full_ms["ScalableTSDFVolume"] = extract_ms
        else:
            # open3d 0.20's ScalableTSDFVolume stores nothing: its "integration" time is that of a no-op
            figures.open3d_broken.append(f"ScalableTSDFVolume (open3d {figures.open3d_version}: integrates nothing, "
                                         f"median {ms:.2f} ms of a no-op; excluded)")
    figures.speedup = {name: ms / figures.ours_integrate_ms for name, ms in figures.open3d_integrate_ms.items()}
    if figures.open3d_raycast_ms is not None:
        figures.raycast_speedup = figures.open3d_raycast_ms / figures.ours_raycast_ms
    if "VoxelBlockGrid" in figures.open3d_extract_full_ms:
        figures.extract_speedup = figures.open3d_extract_full_ms["VoxelBlockGrid"] / figures.ours_extract_full_ms
    figures.peak_rss_mib = _peak_rss_mib()
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
    rss = f"peak RSS of the process: {f.peak_rss_mib:.0f} MiB"
    if f.open3d_version is not None:
        rss += (f" (with open3d {f.open3d_version}, whose VoxelBlockGrid is created for "
                f"{VoxelBlockGridRun.CAPACITY_BLOCKS} blocks)")
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
