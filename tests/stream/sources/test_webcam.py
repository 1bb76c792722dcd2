"""WebcamSource: the real code path on a cv2.VideoCapture opened on a numbered video (no camera needed),
and a truly absent camera index."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg_server import HEIGHT_PX, WIDTH_PX, read_number, strip_rgb, write_numbered_video

from stream.messages import Intrinsics
from stream.sources.base import SourceError
from stream.sources.webcam import CameraMode, WebcamConfig, WebcamSource

FPS = 30.0
N_FRAMES = 8
ABSENT_INDEX = 57


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_numbered_video(tmp_path_factory.mktemp("webcam") / "camera.avi", "MJPG", N_FRAMES, FPS)


class FileCamera:
    """Capture factory that opens ``clip`` for any index and keeps every capture it made."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.indices: list[int] = []
        self.captures: list[cv2.VideoCapture] = []

    def __call__(self, index: int) -> cv2.VideoCapture:
        self.indices.append(index)
        cap = cv2.VideoCapture(str(self.clip))
        self.captures.append(cap)
        return cap


def test_reads_frames_through_the_real_capture_path(clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    factory = FileCamera(clip)
    stamps = itertools.count(1_000_000_000, 33_000_000)
    source = WebcamSource(
        3, WebcamConfig(width_px=640, height_px=480, fps=60.0), capture_factory=factory,
        stamp_clock=lambda: next(stamps),
    )
    assert source.is_live is True and source.nominal_fps is None
    with caplog.at_level(logging.WARNING, logger="stream.sources.webcam"):
        source.open()
    assert factory.indices == [3]
    # a video file cannot change its mode: the source reports what it really got, and warns
    assert source.actual == CameraMode(WIDTH_PX, HEIGHT_PX, FPS)
    assert source.nominal_fps == pytest.approx(FPS)
    assert any("asked for 640x480 at 60.0 fps" in r.getMessage() for r in caplog.records)

    frames = [source.read() for _ in range(N_FRAMES)]
    assert [f.frame_id for f in frames if f] == list(range(N_FRAMES))
    assert [read_number(f.image) for f in frames if f] == list(range(N_FRAMES))
    assert [f.stamp_ns for f in frames if f] == [1_000_000_000 + 33_000_000 * i for i in range(N_FRAMES)]
    for frame in frames:
        assert frame is not None and frame.image.shape == (HEIGHT_PX, WIDTH_PX, 3) and frame.image.dtype == np.uint8
        assert frame.source == "camera 3"
        r, g, b = strip_rgb(frame.image)
        assert r > 230 and g < 25 and b < 25, f"strip should be red in RGB, got {(r, g, b)}"

    # the "camera" stops delivering: a clear error after max_read_failures grabs, never a hang
    with pytest.raises(SourceError, match=r"camera 3: no frame from the camera \(3 failures in a row"):
        source.read()
    assert source.stats.read_failures == 3 and source.stats.frames_read == N_FRAMES

    cap = factory.captures[0]
    assert cap.isOpened()
    source.close()
    assert not cap.isOpened(), "close() must release the capture"
    source.close()  # idempotent
    with pytest.raises(SourceError, match="after close"):
        source.read()


def test_skip_grabs_without_decoding_and_counts_frame_ids(clip: Path) -> None:
    source = WebcamSource(0, capture_factory=FileCamera(clip))
    source.open()
    first = source.read()
    assert source.skip() is True
    assert source.skip() is True
    second = source.read()
    assert first is not None and second is not None
    assert (first.frame_id, second.frame_id) == (0, 3)
    assert (read_number(first.image), read_number(second.image)) == (0, 3)
    assert source.stats.frames_skipped == 2 and source.stats.frames_read == 2
    source.close()


def test_reopen_releases_the_previous_capture(clip: Path) -> None:
    factory = FileCamera(clip)
    source = WebcamSource(1, capture_factory=factory)
    source.open()
    source.read()
    source.open()
    assert not factory.captures[0].isOpened() and factory.captures[1].isOpened()
    frame = source.read()
    assert frame is not None and frame.frame_id == 0 and read_number(frame.image) == 0
    source.close()
    assert not factory.captures[1].isOpened()


def test_intrinsics_are_attached_and_scaled(clip: Path) -> None:
    k = Intrinsics(320, 240, 300.0, 300.0, 159.5, 119.5)
    source = WebcamSource(0, WebcamConfig(intrinsics=k), capture_factory=FileCamera(clip))
    source.open()
    frame = source.read()
    source.close()
    assert frame is not None and frame.intrinsics == k.scaled(WIDTH_PX, HEIGHT_PX)
    assert frame.intrinsics.fx == pytest.approx(150.0)


def test_absent_camera_fails_at_once_with_a_clear_error() -> None:
    source = WebcamSource(ABSENT_INDEX)
    with pytest.raises(SourceError, match=rf"camera {ABSENT_INDEX}: cannot open the camera"):
        source.open()
    source.close()  # nothing to release, still fine


def test_unopened_capture_from_the_factory_is_released(tmp_path: Path) -> None:
    factory = FileCamera(tmp_path / "missing.avi")
    source = WebcamSource(2, capture_factory=factory)
    with pytest.raises(SourceError, match="camera 2: cannot open"):
        source.open()
    assert not factory.captures[0].isOpened()


def test_read_before_open() -> None:
    with pytest.raises(SourceError, match="camera 0: read before open"):
        WebcamSource(0).read()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_px": 0}, "width_px"),
        ({"height_px": -1}, "height_px"),
        ({"width_px": 640.0}, "width_px"),
        ({"fps": 0.0}, "fps"),
        ({"fps": float("inf")}, "fps"),
        ({"fourcc": "MJPEG"}, "fourcc"),
        ({"max_read_failures": 0}, "max_read_failures"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebcamConfig(**kwargs)  # type: ignore[arg-type]


def test_index_validation() -> None:
    with pytest.raises(ValueError, match="camera index"):
        WebcamSource(-1)
