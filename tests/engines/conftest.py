"""Fixtures for the depth engine tests: a tiny random network (real structure), its ONNX export, and a
local HTTP server laid out like the model hub (``/<repo>/resolve/<revision>/<filename>``)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from engines.hub import HubConfig, HubFile
from engines.models import MODELS, ModelSpec
from stream.messages import DepthKind

TORCH_REASON = "building networks needs PyTorch (pip install 'depthslam[torch]')"


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    """The table's tiny relative model (same structure as Depth Anything V2, 0.18M parameters)."""
    return MODELS["test-tiny"]


@pytest.fixture(scope="session")
def tiny_metric_spec(tiny_spec: ModelSpec) -> ModelSpec:
    """A tiny metric model (sigmoid head x 20 m), with a hub checkpoint id for download tests."""
    return replace(tiny_spec, name="tiny-metric", title="tiny-metric", kind=DepthKind.METRIC, max_depth_m=20.0,
                   checkpoint=HubFile("test-org/tiny-metric-hf", "model.safetensors"))


@pytest.fixture(scope="session")
def tiny_model(tiny_spec: ModelSpec):  # -> DepthAnythingV2
    pytest.importorskip("torch", reason=TORCH_REASON)
    from engines.torch_model import build_model

    return build_model(tiny_spec, seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny network exported once (TorchScript exporter, non-square sample, verified)."""
    from engines.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_model, path)
    return path


@dataclass
class HubServer:
    """A local hub: files under ``root`` are served at ``url``; ``requests`` lists every GET path."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    def add(self, file: HubFile, data: bytes) -> None:
        path = self.root / file.repo / "resolve" / file.revision / file.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def config(self, cache_dir: Path, **kwargs: object) -> HubConfig:
        return HubConfig(base_url=self.url, cache_dir=cache_dir, timeout_s=5.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    root = tmp_path / "hub-root"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HubServer(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
