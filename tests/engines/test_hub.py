"""Hub downloads against a local HTTP server laid out like the hub: progress, cache hits, offline errors."""

from __future__ import annotations

import http.server
import io
import socket
import threading
from pathlib import Path

import pytest

from engines.errors import WeightsUnavailableError
from engines.hub import HubConfig, HubFile, fetch

FILE = HubFile("test-org/tiny-hf", "onnx/model.onnx")


def test_download_progress_then_cache_hit(hub_server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 10_000  # 2.56 MB: several chunks
    hub_server.add(FILE, payload)
    config = hub_server.config(tmp_path / "cache")
    progress = io.StringIO()
    first = fetch(FILE, config, progress=progress, notice="Tiny: weights licensed Apache-2.0")
    assert first.downloaded and first.size_bytes == len(payload)
    assert first.path == tmp_path / "cache" / "hub" / "test-org--tiny-hf" / "main" / "onnx" / "model.onnx"
    assert first.path.read_bytes() == payload
    text = progress.getvalue()
    assert text.startswith("Tiny: weights licensed Apache-2.0\n")
    assert "model.onnx" in text and "100.0%" in text and "2.6/2.6 MB" in text
    assert hub_server.requests == ["/test-org/tiny-hf/resolve/main/onnx/model.onnx"]
    assert not list(first.path.parent.glob("*.part"))

    progress2 = io.StringIO()
    second = fetch(FILE, config, progress=progress2, notice="licence text")
    assert not second.downloaded and second.path == first.path
    assert len(hub_server.requests) == 1  # no network on a cache hit
    assert progress2.getvalue() == ""  # licence shown on first fetch only


def test_offline_without_cache_names_url_and_path(tmp_path: Path) -> None:
    config = HubConfig(base_url="http://127.0.0.1:9", cache_dir=tmp_path / "cache", offline=True)
    with pytest.raises(WeightsUnavailableError) as info:
        fetch(FILE, config, progress=None)
    text = str(info.value)
    assert "offline" in text
    assert "http://127.0.0.1:9/test-org/tiny-hf/resolve/main/onnx/model.onnx" in text
    assert str(tmp_path / "cache" / "hub" / "test-org--tiny-hf" / "main" / "onnx" / "model.onnx") in text
    assert "--weights" in text


def test_offline_uses_the_cache(hub_server, tmp_path: Path) -> None:
    hub_server.add(FILE, b"onnx bytes")
    fetch(FILE, hub_server.config(tmp_path / "c"), progress=None)
    hit = fetch(FILE, hub_server.config(tmp_path / "c", offline=True), progress=None)
    assert hit.path.read_bytes() == b"onnx bytes" and not hit.downloaded


def test_missing_file_and_unreachable_hub(hub_server, tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="HTTP 404"):
        fetch(FILE, hub_server.config(tmp_path / "c"), progress=None)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsUnavailableError, match="network error"):
        fetch(FILE, HubConfig(base_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path / "c"), progress=None)
    assert not (tmp_path / "c" / "hub" / "test-org--tiny-hf" / "main" / "onnx" / "model.onnx").exists()


def test_truncated_download_leaves_nothing(tmp_path: Path) -> None:
    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 400)  # then close: a truncated body

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = HubConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}", cache_dir=tmp_path, timeout_s=5)
        with pytest.raises(WeightsUnavailableError, match="download truncated: got 400 of 1000 bytes"):
            fetch(FILE, config, progress=io.StringIO())
    finally:
        server.shutdown()
        server.server_close()
    folder = tmp_path / "hub" / "test-org--tiny-hf" / "main" / "onnx"
    assert not (folder / "model.onnx").exists() and not list(folder.glob("*"))


def test_config_from_env_and_validation(tmp_path: Path) -> None:
    config = HubConfig.from_env({"DEPTHSLAM_HUB_URL": "http://127.0.0.1:8080", "DEPTHSLAM_CACHE_DIR": str(tmp_path),
                                 "DEPTHSLAM_OFFLINE": "1"})
    assert (config.base_url, config.cache_dir, config.offline) == ("http://127.0.0.1:8080", tmp_path, True)
    assert HubConfig.from_env({}).base_url == "https://huggingface.co"
    assert FILE.url(config) == "http://127.0.0.1:8080/test-org/tiny-hf/resolve/main/onnx/model.onnx"
    with pytest.raises(ValueError, match="DEPTHSLAM_OFFLINE"):
        HubConfig.from_env({"DEPTHSLAM_OFFLINE": "maybe"})
    with pytest.raises(ValueError, match="http"):
        HubConfig(base_url="ftp://x")
    with pytest.raises(ValueError, match="owner/name"):
        HubFile("no-owner", "model.onnx")
    with pytest.raises(ValueError, match=r"\.\."):
        HubFile("a/b", "../../etc/passwd")
