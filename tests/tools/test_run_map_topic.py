"""A map subscriber process that joins `depthslam run` mid-run ends with the map the node built."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tools.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vertices(path: Path) -> np.ndarray:
    import open3d as o3d

    v = np.asarray(o3d.io.read_triangle_mesh(str(path)).vertices)
    return np.unique(v, axis=0)


def test_late_map_subscriber_ends_with_the_nodes_mesh(tmp_path: Path) -> None:
    updates, snapshot = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"
    node = subprocess.Popen(
        [*CLI, "run", "synthetic", "--poses", "gt", "--mode", "realtime", "--fps", "15", "--max-frames", "60",
         "--width", "160", "--height", "120", "--voxel-size-m", "0.04", "--viewer", "none",
         "--map-pub", updates, "--map-snapshot", snapshot, "--out", str(tmp_path / "node")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = None
    try:
        assert node.stderr is not None
        deadline = time.monotonic() + 120
        while "depth worker" not in node.stderr.readline():  # the node is up and capturing
            assert time.monotonic() < deadline and node.poll() is None, "node did not start"
        time.sleep(1.5)  # join mid-run (the run lasts 4 s at 15 fps)
        client = subprocess.Popen(
            [*CLI, "map-client", "--updates", updates, "--snapshot", snapshot, "--out", str(tmp_path / "client.ply"),
             "--events", "--json", "--timeout-s", "120"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        node.communicate(timeout=180)
        assert node.returncode == 0
        time.sleep(1.0)  # let the client apply what is still in flight
        client.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=60)
    finally:
        for p in (node, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    snapshots = [e for e in lines if e.get("event") == "synced"]
    assert snapshots, f"client applied no snapshot: {out} {err}"
    assert snapshots[0]["map_seq"] > 0, "the client should have joined after the map had updates"
    client_vertices = _vertices(tmp_path / "client.ply")
    node_vertices = _vertices(tmp_path / "node" / "mesh.ply")
    assert client_vertices.shape == node_vertices.shape
    assert np.array_equal(client_vertices, node_vertices)
