"""TensorRT engine cache: keys, hits, rebuilds on key change, pruning (no TensorRT needed);
the TensorRT runtime itself is tested only where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engines.errors import EngineError
from engines.trt_backend import TrtEngineCache, TrtEngineKey

KEY = TrtEngineKey("small", "ab" * 32, (1, 3, 518, 686), "NVIDIA H100 80GB HBM3", "10.9.0.34", True)


class FakeBuilder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine #{self.calls}".encode()


def test_key_digest_and_filename() -> None:
    assert KEY.filename().startswith("small-686x518-nvidia-h100-80gb-hbm3-trt10.9.0.34-fp16-")
    assert KEY.filename().endswith(KEY.digest[:12] + ".engine")
    variants = [replace(KEY, model="base"), replace(KEY, onnx_sha256="cd" * 32),
                replace(KEY, input_shape=(1, 3, 518, 518)), replace(KEY, gpu_name="NVIDIA L4"),
                replace(KEY, trt_version="10.10.0"), replace(KEY, fp16=False)]
    digests = {KEY.digest, *(v.digest for v in variants)}
    assert len(digests) == 1 + len(variants)  # every field is part of the key
    assert replace(KEY).digest == KEY.digest
    with pytest.raises(ValueError, match="input_shape"):
        replace(KEY, input_shape=(1, 3, 0, 5))


def test_cache_hit_rebuild_and_prune(tmp_path: Path) -> None:
    cache = TrtEngineCache(tmp_path / "tensorrt")
    build = FakeBuilder()
    first = cache.get_or_build(KEY, build)
    assert first.built and first.data == b"engine #1" and build.calls == 1
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta == KEY.as_dict() and meta["input_shape"] == [1, 3, 518, 686]

    hit = cache.get_or_build(KEY, build)
    assert not hit.built and hit.data == b"engine #1" and build.calls == 1

    upgraded = replace(KEY, trt_version="10.10.0")  # same model, shape and GPU: the old engine is stale
    rebuilt = cache.get_or_build(upgraded, build)
    assert rebuilt.built and build.calls == 2 and rebuilt.path != first.path
    assert not first.path.exists() and not first.path.with_suffix(".json").exists()

    other_gpu = replace(upgraded, gpu_name="NVIDIA L4")  # another machine sharing the cache: both kept
    cache.get_or_build(other_gpu, build)
    assert rebuilt.path.exists() and build.calls == 3
    assert len(list((tmp_path / "tensorrt").glob("*.engine"))) == 2


def test_tampered_metadata_forces_rebuild(tmp_path: Path) -> None:
    cache = TrtEngineCache(tmp_path)
    build = FakeBuilder()
    entry = cache.get_or_build(KEY, build)
    entry.path.with_suffix(".json").write_text("{not json")
    assert cache.get_or_build(KEY, build).built and build.calls == 2
    data = KEY.as_dict()
    data["trt_version"] = "9.0"
    entry.path.with_suffix(".json").write_text(json.dumps(data))
    assert cache.get_or_build(KEY, build).built and build.calls == 3
    assert cache.lookup(KEY) == entry.path


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = TrtEngineCache(tmp_path)

    def broken() -> bytes:
        raise EngineError("TensorRT failed to build")

    with pytest.raises(EngineError, match="failed to build"):
        cache.get_or_build(KEY, broken)
    with pytest.raises(EngineError, match="empty engine"):
        cache.get_or_build(KEY, lambda: b"")
    assert list(tmp_path.glob("*")) == []


def _trt_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (the TensorRT runtime test needs tensorrt and an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU (the TensorRT runtime test needs tensorrt and an NVIDIA GPU)"
    return None


@pytest.mark.skipif(_trt_skip_reason() is not None, reason=str(_trt_skip_reason()))
def test_tensorrt_runner_matches_pytorch(tiny_model, tiny_onnx: Path, tmp_path: Path) -> None:
    import torch

    from engines.onnx_export import relative_error
    from engines.trt_backend import TrtRunner

    runner = TrtRunner(tiny_onnx, "test-tiny", TrtEngineCache(tmp_path), fp16=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 56, 84)).astype(np.float32)
    got = runner.run(x)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()[0]
    assert got.shape == ref.shape == (56, 84)
    assert relative_error(got, ref) < 2e-2  # FP16 kernels
    assert len(list(tmp_path.glob("*.engine"))) == 1
    again = TrtRunner(tiny_onnx, "test-tiny", TrtEngineCache(tmp_path), fp16=True)
    assert np.array_equal(again.run(x), got)  # loaded from the cache, same engine
    runner.close()
    again.close()
