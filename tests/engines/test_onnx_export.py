"""The shape-dynamic head and ONNX export: two different sizes through one exported graph, ORT == PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.config import Exporter
from engines.errors import ExportError
from engines.models import ModelSpec

torch = pytest.importorskip("torch", reason="export needs PyTorch")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")
onnx = pytest.importorskip("onnx", reason="needs the onnx package")

from engines.onnx_export import ExportConfig, export_onnx, relative_error  # noqa: E402
from engines.torch_model import hf_config  # noqa: E402

ORT_RTOL = 1e-4  # observed ~5e-6 (float32 reassociation); relative to the output's range


def _run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_dynamic_head_equals_transformers_head(tiny_model, tiny_spec: ModelSpec) -> None:
    from transformers import DepthAnythingForDepthEstimation

    reference = DepthAnythingForDepthEstimation(hf_config(tiny_spec.arch, tiny_spec.kind, None)).eval()
    reference.load_state_dict(tiny_model.state_dict())
    x = torch.randn(1, 3, 70, 98, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = tiny_model(x)
        theirs = reference(pixel_values=x).predicted_depth
    assert ours.shape == (1, 70, 98)
    assert torch.equal(ours, theirs)


def test_export_is_dynamic_and_matches_pytorch(tiny_model, tiny_onnx: Path) -> None:
    graph = onnx.load(str(tiny_onnx)).graph
    in_dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert isinstance(in_dims[2], str) and isinstance(in_dims[3], str)
    assert isinstance(out_dims[1], str) and isinstance(out_dims[2], str)  # not frozen at the sample size
    gen = torch.Generator().manual_seed(5)
    for height, width in ((42, 84), (112, 56)):  # neither is the 196x280 tracing sample
        x = torch.randn(1, 3, height, width, generator=gen)
        with torch.no_grad():
            ref = tiny_model(x).numpy()
        got = _run_ort(tiny_onnx, x.numpy())
        assert got.shape == (1, height, width)
        assert relative_error(got, ref) < ORT_RTOL


def test_transformers_head_alone_freezes_the_output_size(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """Why DynamicSizeHead exists: the stock head exports a constant output size."""
    from transformers import DepthAnythingForDepthEstimation

    class Stock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = DepthAnythingForDepthEstimation(hf_config(tiny_spec.arch, tiny_spec.kind, None)).eval()

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.m(pixel_values=pixel_values).predicted_depth

    stock = Stock()
    path = tmp_path / "stock.onnx"
    export_onnx(stock, path, ExportConfig(verify_sizes=()))
    out = _run_ort(path, np.zeros((1, 3, 56, 112), np.float32))
    assert out.shape == (1, 196, 280)  # the sample's size, not the input's
    with pytest.raises(ExportError, match="not dynamic"):
        export_onnx(stock, tmp_path / "stock2.onnx", ExportConfig())
    assert not (tmp_path / "stock2.onnx").exists()  # a failed export leaves nothing behind
    assert not list(tmp_path.glob("*.tmp.onnx"))


@pytest.mark.slow
def test_dynamo_exporter_is_dynamic_too(tiny_model, tmp_path: Path) -> None:
    result = export_onnx(tiny_model, tmp_path / "dynamo.onnx", ExportConfig(exporter=Exporter.DYNAMO))
    assert result.max_rel_error is not None and result.max_rel_error < ORT_RTOL
    assert not list(tmp_path.glob("*.data"))  # weights embedded, one file
    out = _run_ort(result.path, np.zeros((1, 3, 28, 70), np.float32))
    assert out.shape == (1, 28, 70)


def test_export_config_validation() -> None:
    with pytest.raises(ValueError, match="square"):
        ExportConfig(sample_width_px=196, sample_height_px=196)
    with pytest.raises(ValueError, match="multiples of 14"):
        ExportConfig(verify_sizes=((100, 56),))
