"""Input size policy (exact network sizes) and configuration validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import Backend, EngineConfig, InputSizePolicy, ResizeMode
from engines.errors import EngineInputError


@pytest.mark.parametrize(
    ("frame", "policy", "expected"),
    [
        # reference behaviour (lower bound 518): shorter side 518, longer side nearest multiple of 14
        ((640, 480), InputSizePolicy(), (686, 518)),  # 690.67 -> 49.33 patches -> 49
        ((480, 640), InputSizePolicy(), (518, 686)),
        ((518, 518), InputSizePolicy(), (518, 518)),
        ((1280, 720), InputSizePolicy(), (924, 518)),  # 920.9 -> 65.78 -> 66
        ((100, 50), InputSizePolicy(), (1036, 518)),  # upscaled small frame
        # upper bound: longer side = target
        ((640, 480), InputSizePolicy(mode=ResizeMode.UPPER_BOUND), (518, 392)),  # 388.5 -> 27.75 -> 28
        ((364, 273), InputSizePolicy(target_px=364, mode=ResizeMode.UPPER_BOUND), (364, 280)),  # 19.5 -> 20 (even)
        ((259, 518), InputSizePolicy(mode=ResizeMode.UPPER_BOUND), (252, 518)),  # 18.5 -> 18 (even)
        ((336, 252), InputSizePolicy(target_px=336, mode=ResizeMode.UPPER_BOUND), (336, 252)),
        # a side that would round below the lower bound is rounded up instead
        ((1000, 1000), InputSizePolicy(target_px=500), (504, 504)),  # 35.71 -> 36
        ((1000, 1000), InputSizePolicy(target_px=505), (518, 518)),  # 36.07 -> 36 = 504 < 505 -> 37
        ((1000, 1000), InputSizePolicy(target_px=512, mode=ResizeMode.UPPER_BOUND), (504, 504)),  # 36.57 -> 37 > 512
    ],
)
def test_network_size_exact(frame: tuple[int, int], policy: InputSizePolicy, expected: tuple[int, int]) -> None:
    size = policy.network_size(*frame)
    assert (size.width_px, size.height_px) == expected


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_network_size_properties(mode: ResizeMode) -> None:
    policy = InputSizePolicy(target_px=364, mode=mode, max_network_side_px=100_000)
    for w in range(40, 1300, 37):
        for h in range(30, 1000, 41):
            size = policy.network_size(w, h)
            assert size.width_px % 14 == 0 and size.height_px % 14 == 0
            bound = min(size.width_px, size.height_px) if mode is ResizeMode.LOWER_BOUND else max(
                size.width_px, size.height_px)
            if mode is ResizeMode.LOWER_BOUND:
                assert bound >= 364
            else:
                assert bound <= 364
            # aspect kept to within rounding (half a patch on each side)
            scale = 364 / (min(w, h) if mode is ResizeMode.LOWER_BOUND else max(w, h))
            assert abs(size.width_px - w * scale) <= 14 and abs(size.height_px - h * scale) <= 14


def test_network_size_rejects_bad_frames() -> None:
    policy = InputSizePolicy()
    with pytest.raises(EngineInputError, match="positive"):
        policy.network_size(0, 480)
    with pytest.raises(EngineInputError, match="largest accepted side"):
        policy.network_size(20000, 480)
    with pytest.raises(EngineInputError, match="aspect ratio is too extreme"):
        policy.network_size(5000, 100)  # lower bound 518 on the short side -> 25900 px wide


def test_policy_and_config_validation() -> None:
    with pytest.raises(ValueError, match="target_px"):
        InputSizePolicy(target_px=10)
    with pytest.raises(ValueError, match="max_network_side_px"):
        InputSizePolicy(target_px=518, max_network_side_px=500)
    with pytest.raises(ValueError, match="mode"):
        InputSizePolicy(mode="lower_bound")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        EngineConfig(weights=Path("w.onnx"), random_weights=True)
    with pytest.raises(ValueError, match="num_threads"):
        EngineConfig(num_threads=0)
    with pytest.raises(ValueError, match="max_depth_m"):
        EngineConfig(min_depth_m=5.0, max_depth_m=2.0)
    with pytest.raises(ValueError, match="torch-cuda"):
        EngineConfig(fp16=True, backend=Backend.ORT_CPU)
    with pytest.raises(ValueError, match="Backend"):
        EngineConfig(backend="auto")  # type: ignore[arg-type]
    assert EngineConfig().backend is Backend.AUTO


def test_engine_config_reads_the_hub_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("DEPTHSLAM_HUB_URL", "http://127.0.0.1:8765")
    monkeypatch.setenv("DEPTHSLAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DEPTHSLAM_OFFLINE", "yes")
    hub = EngineConfig().hub
    assert (hub.base_url, hub.cache_dir, hub.offline) == ("http://127.0.0.1:8765", tmp_path, True)
