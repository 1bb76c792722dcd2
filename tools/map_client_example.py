"""Example map subscriber: follow a depthslam map topic from another process and save the mesh as PLY.

    python -m tools.map_client_example --updates tcp://127.0.0.1:5560 --snapshot tcp://127.0.0.1:5561 \\
        --out map.ply [--until-seq N] [--max-updates N] [--timeout-s T] [--events] [--json]

It joins at any time (snapshot + buffered updates, see :mod:`stream.map_topic`), and writes the mesh it
holds when it stops: Ctrl-C / SIGTERM, ``--until-seq`` reached, ``--max-updates`` live updates applied, or
``--timeout-s`` passed (exit status 1 in that case; the PLY is still written).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from stream.map_topic import MapClient, MapState, MapSyncError, MapTopicConfig, MergedMesh
from stream.transport import EndpointError

_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_PLY_FACE = np.dtype([("n", "u1"), ("index", "<i4", (3,))])
_PLY_HEADER = (
    "ply\nformat binary_little_endian 1.0\ncomment depthslam map\nelement vertex {n_vertices}\n"
    "property float x\nproperty float y\nproperty float z\n"
    "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    "element face {n_faces}\nproperty list uchar int vertex_indices\nend_header\n"
)


def write_ply(path: Path, mesh: MergedMesh) -> None:
    """Write a triangle mesh as binary little-endian PLY (float xyz, uchar rgb per vertex; int triangles)."""
    vertices = np.zeros(mesh.vertices.shape[0], _PLY_VERTEX)
    for i, name in enumerate(("x", "y", "z")):
        vertices[name] = mesh.vertices[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = mesh.colors[:, i]
    faces = np.zeros(mesh.faces.shape[0], _PLY_FACE)
    faces["n"] = 3
    faces["index"] = mesh.faces
    header = _PLY_HEADER.format(n_vertices=len(vertices), n_faces=len(faces)).encode("ascii")
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(header)
        f.write(vertices.tobytes())
        f.write(faces.tobytes())
    tmp.replace(path)  # readers never see a half-written file


def read_ply(path: Path) -> MergedMesh:
    """Read a PLY written by :func:`write_ply` (exactly that layout; anything else raises ValueError)."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    header = data[: end + len(b"end_header\n")].decode("ascii", "replace")
    counts: dict[str, int] = {}
    for line in header.splitlines():
        if line.startswith("element "):
            _, name, count = line.split()
            counts[name] = int(count)
    n_v, n_f = counts.get("vertex", -1), counts.get("face", -1)
    if header != _PLY_HEADER.format(n_vertices=n_v, n_faces=n_f):
        raise ValueError(f"{path}: PLY layout differs from the one write_ply() produces")
    body = data[len(header):]
    if len(body) != n_v * _PLY_VERTEX.itemsize + n_f * _PLY_FACE.itemsize:
        raise ValueError(f"{path}: body of {len(body)} bytes does not hold {n_v} vertices and {n_f} faces")
    vertices = np.frombuffer(body, _PLY_VERTEX, count=n_v)
    faces = np.frombuffer(body, _PLY_FACE, count=n_f, offset=n_v * _PLY_VERTEX.itemsize)
    if n_f and np.any(faces["n"] != 3):
        raise ValueError(f"{path}: only triangles are supported")
    return MergedMesh(
        np.stack([vertices[c] for c in ("x", "y", "z")], axis=1).astype(np.float32),
        np.ascontiguousarray(faces["index"]).astype(np.int32),
        np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8),
    )


def summary(state: MapState, client: MapClient) -> dict[str, object]:
    """What the client holds, for printing: sizes, digest of the merged mesh, sync counters."""
    mesh = state.merged_mesh()
    return {
        "map_seq": state.map_seq, "blocks": state.block_count, "vertices": int(mesh.vertices.shape[0]),
        "faces": int(mesh.faces.shape[0]), "keyframes": len(state.keyframes), "digest": mesh.digest(),
        "snapshots": client.stats.snapshots, "snapshot_map_seqs": list(client.stats.snapshot_map_seqs),
        "resyncs": client.stats.resyncs, "gaps": client.stats.gaps, "updates_applied": client.stats.updates_applied,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="map_client_example", description=__doc__.splitlines()[0])
    parser.add_argument("--updates", required=True, metavar="ENDPOINT", help="the map publisher's updates endpoint")
    parser.add_argument("--snapshot", required=True, metavar="ENDPOINT", help="its snapshot service endpoint")
    parser.add_argument("--out", required=True, type=Path, help="PLY file written when the client stops")
    parser.add_argument("--until-seq", type=int, metavar="N", help="stop once the map reached map_seq N")
    parser.add_argument("--max-updates", type=int, metavar="N", help="stop after N live updates were applied")
    parser.add_argument("--timeout-s", type=float, help="stop after this many seconds (exit status 1)")
    parser.add_argument("--sleep-s", type=float, default=0.0, help="sleep between polls (simulate a slow consumer)")
    parser.add_argument("--events", action="store_true", help="print a JSON line whenever a snapshot was applied")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow non-loopback endpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("until_seq", "max_updates"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.timeout_s is not None and not args.timeout_s > 0:
        parser.error("--timeout-s must be positive")
    if not args.sleep_s >= 0:
        parser.error("--sleep-s must be >= 0")

    try:
        client = MapClient(args.updates, args.snapshot, MapTopicConfig(allow_remote=args.allow_remote))
    except (EndpointError, ValueError) as exc:
        print(f"map_client_example: error: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = None if args.timeout_s is None else time.monotonic() + args.timeout_s
    status, seen_snapshots, timed_out = 0, 0, False
    try:
        while not stop.is_set():
            state = client.state
            if args.until_seq is not None and client.synced and state.map_seq >= args.until_seq:
                break
            if args.max_updates is not None and client.stats.updates_applied >= args.max_updates:
                break
            if deadline is not None and time.monotonic() >= deadline:
                status, timed_out = 1, True
                break
            client.poll(0.05)
            if args.events and client.stats.snapshots > seen_snapshots:
                seen_snapshots = client.stats.snapshots
                print(json.dumps({"event": "synced", **summary(client.state, client)}), flush=True)
            if args.sleep_s:
                time.sleep(args.sleep_s)
    except KeyboardInterrupt:
        pass
    except MapSyncError as exc:
        print(f"map_client_example: error: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()
    write_ply(args.out, client.state.merged_mesh())
    result = summary(client.state, client)
    result["ply"] = str(args.out)
    result["timed_out"] = timed_out
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"map_seq {result['map_seq']}: {result['blocks']} blocks, {result['vertices']} vertices, "
              f"{result['faces']} faces -> {args.out} (resyncs {result['resyncs']})", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
