"""The depthslam command line: dispatch, --version, and `depthslam capture` as its own process over tcp."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream.sources.synthetic import SyntheticConfig, SyntheticSource
from stream.transport import DeliveryMode, Subscriber, TransportConfig
from tools import cli

DEPTHSLAM = [sys.executable, "-m", "tools.cli"]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("depthslam ")
    assert cli.main([]) == 2
    assert "capture" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err


def test_capture_process_publishes_exact_synthetic_frames_over_tcp() -> None:
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*DEPTHSLAM, "capture", "synthetic", "--pub", endpoint, "--mode", "lossless", "--wait-subscribers", "1",
         "--max-frames", "12", "--width", "80", "--height", "60", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with Subscriber(endpoint, ["frames"], TransportConfig(mode=DeliveryMode.LOSSLESS)) as sub:
            got = []
            while len(got) < 12:
                item = sub.recv(timeout_s=60.0)
                assert item is not None, "capture process published nothing"
                got.append(item.message)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert '"published": 12' in out
    reference = SyntheticSource(SyntheticConfig(width_px=80, height_px=60, num_frames=12))
    reference.open()
    assert all(frame.same_as(reference.read()) for frame in got)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["capture", "/no/such/video.mp4", "--pub", "tcp://127.0.0.1:5999"], "no such file or folder"),
        (["capture", "synthetic", "--pub", "tcp://0.0.0.0:5999"], "only loopback"),
        (["capture", "0", "--stride", "2", "--pub", "tcp://127.0.0.1:5999"], "do not apply"),
        (["capture", "synthetic", "--pub", "tcp://127.0.0.1:5999", "--intrinsics", "/no/cam.yaml"], "cam.yaml"),
    ],
)
def test_capture_bad_input_gives_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err
