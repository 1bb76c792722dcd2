"""Engines end to end: frames in, typed depth frames of the frame's size out; ORT == PyTorch; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.base import NetworkDepthEngine, PassThroughEngine, synthetic_frame
from engines.config import Backend, EngineConfig, InputSizePolicy, ResizeMode
from engines.errors import EngineInputError, WeightsUnavailableError
from engines.hub import HubConfig
from engines.models import ModelSpec
from engines.onnx_export import relative_error
from engines.processing import DepthRange
from engines.select import create_engine
from stream.messages import ColorFrame, DepthKind, Intrinsics

pytest.importorskip("torch", reason="the network engines are built from PyTorch models here")
pytest.importorskip("onnxruntime", reason="needs onnxruntime")

ORT_RTOL = 1e-4  # ONNX Runtime vs PyTorch on the same frames, relative to the depth range (observed ~2e-6)


def _frame(width: int, height: int, frame_id: int = 3) -> ColorFrame:
    base = synthetic_frame(width, height)
    pose = np.eye(4)
    pose[:3, 3] = (0.1, -0.2, 0.3)
    return ColorFrame(frame_id=frame_id, stamp_ns=1_000 + frame_id, image=base.image, source="test",
                      intrinsics=Intrinsics.from_hfov(width, height, 60.0), T_W_C=pose)


def _config(tmp_path: Path, backend: Backend, **kwargs: object) -> EngineConfig:
    return EngineConfig(model="test-tiny", backend=backend, random_weights=True, seed=0,
                        size=InputSizePolicy(target_px=56), hub=HubConfig(cache_dir=tmp_path, offline=True),
                        **kwargs)  # type: ignore[arg-type]


def test_ort_and_torch_engines_agree(tmp_path: Path) -> None:
    frames = [_frame(101, 77), _frame(60, 90, frame_id=4)]  # two sizes -> two network sizes, one ONNX file
    outputs = {}
    for backend in (Backend.TORCH_CPU, Backend.ORT_CPU):
        engine = create_engine(_config(tmp_path, backend), progress=None)
        assert engine.name == f"test-tiny/{backend.value}"
        outputs[backend] = [engine.infer(f) for f in frames]
        engine.close()
    assert len(list((tmp_path / "exports").glob("*.onnx"))) == 1
    for frame, torch_out, ort_out in zip(frames, outputs[Backend.TORCH_CPU], outputs[Backend.ORT_CPU], strict=True):
        h, w = frame.image.shape[:2]
        for out in (torch_out, ort_out):
            assert out.depth.shape == (h, w) and out.depth.dtype == np.float32
            assert out.kind is DepthKind.INVERSE_RELATIVE
            assert (out.frame_id, out.stamp_ns) == (frame.frame_id, frame.stamp_ns)
            assert out.image is frame.image and out.intrinsics == frame.intrinsics
            assert out.T_W_C_gt is not None and np.array_equal(out.T_W_C_gt, frame.T_W_C)
            assert out.model == "test-tiny (random weights, seed 0)"
            assert np.all(out.depth >= 0) and np.count_nonzero(out.depth) > 0.5 * out.depth.size
        assert relative_error(ort_out.depth, torch_out.depth) < ORT_RTOL


def test_metric_engine_types_and_ranges(tiny_metric_spec: ModelSpec) -> None:
    from engines.torch_backend import TorchRunner
    from engines.torch_model import build_model

    runner = TorchRunner(build_model(tiny_metric_spec, seed=2))
    engine = NetworkDepthEngine(runner, tiny_metric_spec, InputSizePolicy(target_px=42), DepthRange(0.0, 20.0))
    out = engine.infer(_frame(64, 48))
    assert out.kind is DepthKind.METRIC and out.depth.shape == (48, 64)
    assert np.all((out.depth == 0) | ((out.depth > 0) & (out.depth <= 20.0)))
    clipped = NetworkDepthEngine(runner, tiny_metric_spec, InputSizePolicy(target_px=42), DepthRange(0.0, 1e-6))
    assert np.count_nonzero(clipped.infer(_frame(64, 48)).depth) == 0  # everything beyond the range is invalid
    small = engine.with_size_policy(InputSizePolicy(target_px=28, mode=ResizeMode.UPPER_BOUND))
    assert small.size_policy.target_px == 28 and small.infer(_frame(64, 48)).depth.shape == (48, 64)


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    engine = create_engine(_config(tmp_path, Backend.TORCH_CPU), progress=None)
    with pytest.raises(EngineInputError, match="ColorFrame"):
        engine.infer(np.zeros((10, 10, 3), np.uint8))  # type: ignore[arg-type]
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (17000, 100, 3))
    with pytest.raises(EngineInputError, match="largest accepted side"):
        engine.infer(ColorFrame(frame_id=0, stamp_ns=0, image=huge))
    with pytest.raises(EngineInputError, match="aspect ratio"):
        engine.infer(ColorFrame(frame_id=0, stamp_ns=0, image=np.zeros((2, 3000, 3), np.uint8)))
    # grey / wrong dtype / empty frames cannot even be built as ColorFrames; the engine check covers raw arrays
    with pytest.raises(TypeError, match="uint8"):
        ColorFrame(frame_id=0, stamp_ns=0, image=np.zeros((8, 8, 3), np.float32))
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.infer(_frame(30, 30))


def test_passthrough_engine() -> None:
    engine = create_engine(EngineConfig(model="passthrough"), progress=None)
    assert isinstance(engine, PassThroughEngine) and engine.size_policy is None
    depth = np.full((6, 8), 1.25, np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, -1.0, 0.0
    base = _frame(8, 6)
    frame = ColorFrame(frame_id=9, stamp_ns=5, image=base.image, intrinsics=base.intrinsics, depth_m=depth,
                       T_W_C=base.T_W_C)
    out = engine.infer(frame)
    assert out.kind is DepthKind.METRIC and out.model == "passthrough" and out.frame_id == 9
    assert out.depth[0, 0] == 0 and out.depth[1, 1] == 0 and out.depth[2, 2] == 0 and out.depth[3, 3] == 1.25
    assert out.depth is not depth and np.isnan(depth[0, 0])  # a cleaned copy, source untouched
    with pytest.raises(EngineInputError, match="carries no depth"):
        engine.infer(base)


def test_offline_hub_model_without_cache_says_what_to_fetch(tmp_path: Path) -> None:
    config = EngineConfig(model="small", backend=Backend.ORT_CPU, hub=HubConfig(cache_dir=tmp_path, offline=True))
    with pytest.raises(WeightsUnavailableError) as info:
        create_engine(config, progress=None)
    text = str(info.value)
    assert "https://huggingface.co/onnx-community/depth-anything-v2-small/resolve/main/onnx/model.onnx" in text
    assert str(tmp_path / "hub" / "onnx-community--depth-anything-v2-small" / "main" / "onnx" / "model.onnx") in text
    with pytest.raises(ValueError, match="unknown depth model"):
        create_engine(EngineConfig(model="medium"), progress=None)
