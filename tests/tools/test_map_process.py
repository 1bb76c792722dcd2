"""Stages as separate processes over tcp (capture | depth | map) give the same map as one in-process run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.tum_format import read_tum_trajectory
from tools import run

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tools.cli"]
COMMON = ["--poses", "gt", "--voxel-size-m", "0.04", "--viewer", "none"]
SOURCE = ["synthetic", "--max-frames", "15", "--width", "128", "--height", "96"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before printing {text!r}")
    raise AssertionError(f"no {text!r} within {timeout_s} s")


def _mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    m = o3d.io.read_triangle_mesh(str(path))
    return np.asarray(m.vertices), np.asarray(m.triangles)


def test_three_processes_match_in_process_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main([*SOURCE, *COMMON, "--mode", "lossless", "--out", str(tmp_path / "one"), "--quiet"]) == 0
    capsys.readouterr()

    frames, depth = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"
    procs: list[subprocess.Popen] = []
    try:
        mapper = subprocess.Popen(
            [*CLI, "map", "--sub", depth, "--mode", "lossless", "--max-frames", "15", "--idle-timeout-s", "60",
             *COMMON, "--out", str(tmp_path / "three"), "--json"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(mapper)
        _wait_for_line(mapper, "subscribed to")
        worker = subprocess.Popen(
            [*CLI, "depth", "--sub", frames, "--pub", depth, "--lossless", "--model", "passthrough", "-v"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(worker)
        _wait_for_line(worker, "depth worker")
        time.sleep(1.0)  # the map process reconnects to the now bound depth publisher (ZeroMQ retries every 0.1 s)
        capture = subprocess.run(
            [*CLI, "capture", *SOURCE, "--pub", frames, "--mode", "lossless", "--wait-subscribers", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=180,
        )
        assert capture.returncode == 0, capture.stderr
        out, err = mapper.communicate(timeout=180)
        assert mapper.returncode == 0, err
    finally:
        for p in procs:
            p.kill()
            p.wait()
    summary = json.loads(out)
    assert summary["frames"] == 15 and summary["dropped"] == 0

    one = read_tum_trajectory(tmp_path / "one" / "trajectory.txt")
    three = read_tum_trajectory(tmp_path / "three" / "trajectory.txt")
    assert np.array_equal(one.stamps_s, three.stamps_s) and np.allclose(one.T_W_C, three.T_W_C, atol=1e-12)
    v1, f1 = _mesh(tmp_path / "one" / "mesh.ply")
    v3, f3 = _mesh(tmp_path / "three" / "mesh.ply")
    assert v1.shape == v3.shape and np.allclose(v1, v3, atol=1e-6) and np.array_equal(f1, f3)
