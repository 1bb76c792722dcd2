"""Real frames: the 7-Scenes redkitchen slice fused with its ground-truth poses, compared with Open3D's
VoxelBlockGrid mesh of the same frames at the same voxel size, truncation and depth range.

Stated bounds (measured values in brackets; 20 frames, 2 cm voxels, truncation 4 voxels, 3 m range):
symmetric Chamfer distance between the two meshes' vertices (mean of both directions' mean
nearest-neighbour distances) <= 0.25 voxel [3.5 mm = 0.18 voxel]; >= 99 % of Open3D's vertices within
1 voxel of ours [99.8 %]; >= 90 % of ours within 1 voxel of Open3D's [93 %] -- our mesh covers ~7 % more
surface, mostly near depth edges (about 60 % of those extra vertices lie within 1 cm of some frame's
measured depth; Open3D allocates blocks from every 4th pixel only). Skips when the data or Open3D is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from fusion.integrator import Integrator, IntegratorConfig
from fusion.meshing import extract_mesh
from fusion.raycast import RaycastConfig, raycast
from fusion.volume import TsdfVolume, VolumeConfig
from stream.messages import Intrinsics

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "7scenes_redkitchen"
K = Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
VOXEL = 0.02
TRUNC_VOX = 4.0
MAX_DEPTH = 3.0

pytestmark = pytest.mark.realdata


def _quat_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz]) / np.linalg.norm([qw, qx, qy, qz])
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _load_frames(step: int = 5, count: int = 100) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if not (DATA / "associations.txt").is_file() or not (DATA / "groundtruth.txt").is_file():
        pytest.skip(f"7-Scenes slice not found at {DATA.resolve()}")
    gt = {}
    for line in (DATA / "groundtruth.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            vals = [float(x) for x in line.split()]
            T = np.eye(4)
            T[:3, :3] = _quat_to_matrix(*vals[4:8])
            T[:3, 3] = vals[1:4]
            gt[round(vals[0], 4)] = T
    frames = []
    lines = [ln.split() for ln in (DATA / "associations.txt").read_text().splitlines() if ln and ln[0] != "#"]
    for _t_rgb, rgb_name, t_depth, depth_name in lines[:count:step]:
        depth = cv2.imread(str(DATA / depth_name), cv2.IMREAD_UNCHANGED)
        bgr = cv2.imread(str(DATA / rgb_name), cv2.IMREAD_COLOR)
        assert depth is not None and depth.dtype == np.uint16 and bgr is not None
        T = gt[round(float(t_depth), 4)]
        frames.append((depth.astype(np.float32) / 1000.0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), T))
    return frames


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return _load_frames()


def _open3d_mesh_vertices(frames) -> np.ndarray:
    try:
        import open3d as o3d
        import open3d.core as o3c
    except (ImportError, OSError) as exc:  # e.g. libusb-1.0 missing: apt-get install libusb-1.0-0
        pytest.skip(f"open3d cannot be imported here: {exc}")
    device = o3c.Device("CPU:0")
    vbg = o3d.t.geometry.VoxelBlockGrid(
        ("tsdf", "weight", "color"), (o3c.float32, o3c.float32, o3c.float32), ((1), (1), (3)), VOXEL, 8, 20_000, device,
    )
    k = o3c.Tensor(np.array([[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1.0]]))
    for depth, rgb, T in frames:
        ext = o3c.Tensor(np.linalg.inv(T))
        d = o3d.t.geometry.Image(o3c.Tensor(depth))
        c = o3d.t.geometry.Image(o3c.Tensor(rgb.astype(np.float32) / 255.0))
        coords = vbg.compute_unique_block_coordinates(d, k, ext, 1.0, MAX_DEPTH, TRUNC_VOX)
        vbg.integrate(coords, d, c, k, ext, 1.0, MAX_DEPTH, TRUNC_VOX)
    mesh = vbg.extract_triangle_mesh(weight_threshold=1.0)
    return mesh.vertex.positions.numpy().astype(np.float64)


def test_mesh_matches_open3d_voxel_block_grid(frames) -> None:
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    integ = Integrator(IntegratorConfig(truncation_vox=TRUNC_VOX, max_depth_m=MAX_DEPTH))
    for depth, rgb, T in frames:
        integ.integrate(depth, rgb, T, K, vol)
    ours = extract_mesh(vol).vertices.astype(np.float64)
    theirs = _open3d_mesh_vertices(frames)
    assert len(ours) > 20_000 and len(theirs) > 20_000
    d_ours, _ = cKDTree(theirs).query(ours)
    d_theirs, _ = cKDTree(ours).query(theirs)
    chamfer = 0.5 * (d_ours.mean() + d_theirs.mean())
    assert chamfer <= 0.25 * VOXEL, f"Chamfer {chamfer * 1000:.2f} mm"
    assert np.mean(d_theirs <= VOXEL) >= 0.99
    assert np.mean(d_ours <= VOXEL) >= 0.90


def test_raycast_reproduces_the_sensor_depth(frames) -> None:
    vol = TsdfVolume(VolumeConfig(voxel_size_m=VOXEL))
    integ = Integrator(IntegratorConfig(truncation_vox=TRUNC_VOX, max_depth_m=MAX_DEPTH))
    for depth, rgb, T in frames:
        integ.integrate(depth, rgb, T, K, vol)
    depth, _rgb, T = frames[len(frames) // 2]
    rc = raycast(vol, T, K, RaycastConfig(max_depth_m=MAX_DEPTH))
    sensor = (depth > 0.1) & (depth < MAX_DEPTH - 0.1)
    both = sensor & rc.valid
    assert both.sum() / sensor.sum() >= 0.95
    err = np.abs(rc.depth_m[both] - depth[both])
    # Kinect noise and ~1-2 cm pose error: the fused surface is within a few mm of this frame's depth
    assert np.median(err) <= 0.5 * VOXEL
    assert np.percentile(err, 90) <= 2.0 * VOXEL
