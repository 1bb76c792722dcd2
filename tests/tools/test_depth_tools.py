"""``depthslam export``, ``engine``, ``depth`` and ``bench depth`` on the tiny network (fast, offline)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the depth tools build networks with PyTorch")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")

from tools import bench_depth, cli, depth, engine, export  # noqa: E402


def test_export_writes_a_dynamic_verified_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.onnx"
    rc = export.main(["test-tiny", "--random-weights", "--out", str(out), "--json", "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["exporter"] == "torchscript"
    assert report["num_parameters"] == 180_745 and report["max_rel_error"] < 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for h, w in ((28, 56), (70, 42)):
        assert session.run(None, {"pixel_values": np.zeros((1, 3, h, w), np.float32)})[0].shape == (1, h, w)


def test_export_offline_without_weights_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = export.main(["small", "--offline", "--cache-dir", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "depth-anything/Depth-Anything-V2-Small-hf/resolve/main/model.safetensors" in err
    assert "Apache-2.0" not in err  # nothing was downloaded, so no licence notice
    assert export.main(["small", "--weights", str(tmp_path / "x.onnx")]) == 2


def test_bench_depth_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["bench", "depth", "--model", "test-tiny", "--random-weights", "--sizes", "70x56,64x48",
                   "--repeats", "2", "--warmup", "0", "--backend", "ort-cpu,torch-cpu", "--json",
                   "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_parameters"] == 180_745 and report["random_weights"] is True
    rows = {(r["backend"], r["frame_width_px"], r["frame_height_px"]): r for r in report["results"]}
    assert set(rows) == {(b, w, h) for b in ("ort-cpu", "torch-cpu") for w, h in ((70, 56), (64, 48))}
    small = rows[("ort-cpu", 64, 48)]  # upper bound 64: 4.57 patches -> 5 would exceed 64 -> 4
    assert (small["network_width_px"], small["network_height_px"]) == (56, 42)
    for r in rows.values():
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p95_ms"] and r["repeats"] == 2


def test_bench_depth_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_depth.main(["--sizes", "518"]) == 2
    assert bench_depth.main(["--backend", "cuda-magic"]) == 2
    assert "unknown backend" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_without_tensorrt_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = engine.main(["test-tiny", "--random-weights", "--frame-size", "64x48", "--cache-dir", str(tmp_path)])
    assert rc == 1
    assert "TensorRT backend needs tensorrt" in capsys.readouterr().err


def test_depth_stage_runs_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    rc = depth.main(["--sub", "inproc://tool-frames", "--pub", "inproc://tool-depth", "--model", "passthrough",
                     "--duration-s", "0.2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "passthrough inproc://tool-frames -> inproc://tool-depth" in err and "received 0, published 0" in err
    assert depth.main(["--sub", "inproc://a", "--pub", "inproc://b", "--input-size", "5"]) == 2
    assert depth.main(["--sub", "nonsense", "--pub", "inproc://c", "--model", "passthrough",
                       "--duration-s", "0.1"]) == 1
    assert "cannot open the sockets" in capsys.readouterr().err
