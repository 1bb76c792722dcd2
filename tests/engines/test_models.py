"""The model table: ids, licences, typing, architectures (Small = 24.8M parameters)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engines.models import ARCH_LARGE, ARCH_SMALL, CC_BY_NC_4_0, MODELS, ModelArch, get_model_spec
from stream.messages import DepthKind


def test_table_entries() -> None:
    relative = {"small", "base", "large"}
    metric = {f"metric-{s}-{e}" for s in ("indoor", "outdoor") for e in ("small", "base", "large")}
    assert relative | metric <= set(MODELS)
    for name in relative:
        spec = MODELS[name]
        assert spec.kind is DepthKind.INVERSE_RELATIVE and spec.max_depth_m is None
        assert spec.checkpoint is not None
        assert spec.checkpoint.repo == f"depth-anything/Depth-Anything-V2-{name.title()}-hf"
        assert spec.onnx is not None and spec.onnx.repo == f"onnx-community/depth-anything-v2-{name}"
        assert spec.onnx.filename == "onnx/model.onnx"
    for name in metric:
        spec = MODELS[name]
        assert spec.kind is DepthKind.METRIC
        assert spec.max_depth_m == (20.0 if "indoor" in name else 80.0)
        assert spec.checkpoint is not None and "Metric-" in spec.checkpoint.repo
    assert MODELS["metric-outdoor-base"].checkpoint.repo == "depth-anything/Depth-Anything-V2-Metric-Outdoor-Base-hf"


def test_licences() -> None:
    for name, spec in MODELS.items():
        if name == "test-tiny":
            continue
        if name.endswith("small"):
            assert spec.licence == "Apache-2.0" and "non-commercial" not in spec.licence_notice()
        else:
            assert spec.licence == CC_BY_NC_4_0 and "non-commercial" in spec.licence_notice()


def test_v2_architecture_indices() -> None:
    # Depth Anything V2 taps intermediate layers, not transformers' default (last four, V1)
    assert ARCH_SMALL.out_indices == (3, 6, 9, 12) and MODELS["base"].arch.out_indices == (3, 6, 9, 12)
    assert ARCH_LARGE.out_indices == (5, 12, 18, 24) and ARCH_LARGE.num_layers == 24
    with pytest.raises(ValueError, match="out_indices"):
        ModelArch(32, 4, 2, (1, 2, 3, 5), (8, 8, 8, 8), 8)
    with pytest.raises(ValueError, match="divisible"):
        ModelArch(30, 4, 4, (1, 2, 3, 4), (8, 8, 8, 8), 8)


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="known models: small"):
        get_model_spec("medium")


def test_small_parameter_count_matches_published_24_8m() -> None:
    pytest.importorskip("torch", reason="needs PyTorch to build the network")
    from engines.torch_model import build_model, num_parameters

    model = build_model(MODELS["small"])
    assert num_parameters(model) == 24_785_089  # published: 24.8M
    assert list(model.config.backbone_config.out_indices) == [3, 6, 9, 12]


def test_importing_the_engines_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, engines.select, engines.worker, engines.onnx_export, engines.trt_backend, "
        "engines.ort_backend, engines.torch_backend, engines.weights, tools.depth, tools.bench_depth\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
