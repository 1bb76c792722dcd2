"""Map files (save / resume a session) and PLY export of meshes and point clouds.

Map file: an uncompressed (or compressed) numpy ``.npz`` archive, read back with ``allow_pickle=False``,
holding only plain arrays:

- ``format``: the string ``"depthslam.tsdf"``; ``version``: int, :data:`MAP_FORMAT_VERSION`;
- ``voxel_size_m`` (float64), ``block_size_vox``, ``max_blocks`` (int64): the :class:`VolumeConfig`;
- ``block_keys`` (N, 3) int32, ``tsdf`` (N, B^3) float32, ``weight`` (N, B^3) float32,
  ``color`` (N, B^3, 3) uint8: the allocated blocks. Weights are 0 (unobserved; the tsdf stored there is
  ignored on load, files of this version hold :data:`fusion.volume.UNOBSERVED_TSDF` or, when written before
  that marker existed, 0) or at least 1; loading refuses anything else (see ``TsdfVolume.from_blocks``).

A file written by a newer format version is refused with a clear error instead of being misread.

PLY files are binary little-endian with ``float x, y, z``, optional ``float nx, ny, nz``,
``uchar red, green, blue`` per vertex and ``list uchar int vertex_indices`` per face (Open3D,
MeshLab and CloudCompare read them).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fusion.meshing import MeshingConfig, TriangleMesh, extract_mesh
from fusion.volume import TsdfVolume, VolumeConfig

MAP_FORMAT = "depthslam.tsdf"
MAP_FORMAT_VERSION = 1


class MapFileError(ValueError):
    """A map file is missing, corrupt, of another format or of an unsupported version."""


def save_map(path: str | Path, volume: TsdfVolume, *, compress: bool = False) -> Path:
    """Write ``volume`` to ``path`` (``.npz`` is appended by numpy when missing); returns the path written."""
    if not isinstance(volume, TsdfVolume):
        raise TypeError(f"volume must be a TsdfVolume, got {type(volume).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    n = volume.block_count
    cfg = volume.config
    arrays = {
        "format": np.array(MAP_FORMAT),
        "version": np.array(MAP_FORMAT_VERSION, np.int64),
        "voxel_size_m": np.array(cfg.voxel_size_m, np.float64),
        "block_size_vox": np.array(cfg.block_size_vox, np.int64),
        "max_blocks": np.array(cfg.max_blocks, np.int64),
        "block_keys": volume.block_keys(),
        "tsdf": volume.tsdf[:n],
        "weight": volume.weight[:n],
        "color": volume.color[:n],
    }
    tmp = path.with_name(path.name + ".part.npz")
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    tmp.replace(path)
    return path


def _scalar(data: Any, name: str, kind: str, where: Path) -> Any:
    if name not in data.files:
        raise MapFileError(f"{where}: missing entry {name!r}")
    value = data[name]
    if value.shape != () or value.dtype.kind != kind:
        raise MapFileError(f"{where}: entry {name!r} must be a scalar of kind {kind!r}, got {value.dtype}{value.shape}")
    return value.item()


def load_map(path: str | Path, *, max_blocks: int | None = None) -> TsdfVolume:
    """Read a map written by :func:`save_map`. ``max_blocks`` overrides the stored memory budget.

    Raises :class:`MapFileError` for a missing, corrupt, foreign or newer-version file.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"{path}: no such map file")
    try:
        with np.load(path, allow_pickle=False) as data:
            fmt = _scalar(data, "format", "U", path)
            if fmt != MAP_FORMAT:
                raise MapFileError(f"{path}: not a depthslam map (format {fmt!r})")
            version = _scalar(data, "version", "i", path)
            if version != MAP_FORMAT_VERSION:
                raise MapFileError(
                    f"{path}: map format version {version} is not supported (this build reads {MAP_FORMAT_VERSION})"
                )
            try:
                stored_max = int(_scalar(data, "max_blocks", "i", path))
                config = VolumeConfig(
                    voxel_size_m=float(_scalar(data, "voxel_size_m", "f", path)),
                    block_size_vox=int(_scalar(data, "block_size_vox", "i", path)),
                    max_blocks=stored_max if max_blocks is None else max_blocks,
                )
            except ValueError as exc:
                if isinstance(exc, MapFileError):
                    raise
                raise MapFileError(f"{path}: invalid volume settings: {exc}") from exc
            arrays = {}
            for name in ("block_keys", "tsdf", "weight", "color"):
                if name not in data.files:
                    raise MapFileError(f"{path}: missing entry {name!r}")
                arrays[name] = data[name]
    except MapFileError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:  # ValueError: not an npz (pickle refused)
        raise MapFileError(f"{path}: cannot read map file: {exc}") from exc
    keys = arrays["block_keys"]
    if keys.ndim != 2 or keys.shape[1] != 3 or keys.dtype != np.int32:
        raise MapFileError(f"{path}: block_keys must be (N, 3) int32, got {keys.shape} {keys.dtype}")
    if not np.all(np.isfinite(arrays["tsdf"])) or not np.all(np.isfinite(arrays["weight"])):
        raise MapFileError(f"{path}: tsdf/weight hold non-finite values")
    if arrays["weight"].size and arrays["weight"].min() < 0:
        raise MapFileError(f"{path}: negative weights")
    try:
        return TsdfVolume.from_blocks(config, keys, arrays["tsdf"], arrays["weight"], arrays["color"])
    except ValueError as exc:
        raise MapFileError(f"{path}: {exc}") from exc


def _ply_header(n_vertices: int, n_faces: int, with_normals: bool) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", "comment written by depthslam", f"element vertex {n_vertices}",
             "property float x", "property float y", "property float z"]
    if with_normals:
        lines += ["property float nx", "property float ny", "property float nz"]
    lines += ["property uchar red", "property uchar green", "property uchar blue"]
    if n_faces:
        lines += [f"element face {n_faces}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(
    path: str | Path,
    vertices: np.ndarray,
    colors: np.ndarray,
    faces: np.ndarray | None = None,
    normals: np.ndarray | None = None,
) -> Path:
    """Write a binary PLY: vertices (N, 3) float, colors (N, 3) uint8, optional faces (M, 3) int and normals (N, 3)."""
    vertices = np.asarray(vertices)
    n = vertices.shape[0]
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (N, 3), got {vertices.shape}")
    if colors.shape != (n, 3) or colors.dtype != np.uint8:
        raise ValueError(f"colors must be ({n}, 3) uint8, got {colors.shape} {colors.dtype}")
    if normals is not None and normals.shape != (n, 3):
        raise ValueError(f"normals must be ({n}, 3), got {normals.shape}")
    fields = [("xyz", "<f4", (3,))]
    if normals is not None:
        fields.append(("n", "<f4", (3,)))
    fields.append(("rgb", "u1", (3,)))
    vert = np.empty(n, dtype=np.dtype(fields))
    vert["xyz"] = vertices
    if normals is not None:
        vert["n"] = normals
    vert["rgb"] = colors
    n_faces = 0 if faces is None else int(faces.shape[0])
    path = Path(path)
    with path.open("wb") as fh:
        fh.write(_ply_header(n, n_faces, normals is not None))
        fh.write(vert.tobytes())
        if faces is not None and n_faces:
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise ValueError(f"faces must be (M, 3), got {faces.shape}")
            if faces.min() < 0 or faces.max() >= n:
                raise ValueError(f"faces index outside 0..{n - 1}")
            face = np.empty(n_faces, dtype=np.dtype([("count", "u1"), ("idx", "<i4", (3,))]))
            face["count"] = 3
            face["idx"] = faces
            fh.write(face.tobytes())
    return path


def write_mesh_ply(path: str | Path, mesh: TriangleMesh, *, with_normals: bool = True) -> Path:
    """Write a :class:`TriangleMesh` as binary PLY (with area-weighted vertex normals unless disabled)."""
    normals = mesh.vertex_normals() if with_normals else None
    return write_ply(path, mesh.vertices, mesh.colors, mesh.faces, normals)


def export_mesh_ply(path: str | Path, volume: TsdfVolume, config: MeshingConfig | None = None) -> TriangleMesh:
    """Extract the whole mesh of ``volume`` and write it to ``path``; returns the mesh."""
    mesh = extract_mesh(volume, config)
    write_mesh_ply(path, mesh)
    return mesh


def export_point_cloud_ply(path: str | Path, volume: TsdfVolume, config: MeshingConfig | None = None) -> int:
    """Write the map's surface points (the mesh vertices: one per TSDF zero crossing on a voxel edge)
    with colours and normals as a PLY point cloud; returns the number of points."""
    mesh = extract_mesh(volume, config)
    write_ply(path, mesh.vertices, mesh.colors, None, mesh.vertex_normals())
    return int(mesh.vertices.shape[0])
