"""VideoFileSource on real videos written with cv2.VideoWriter (MJPG in .avi, mp4v in .mp4).

Every frame carries its index as big black/white blocks under a pure red strip (see mjpeg_server.py),
so order, count, stride, start offset and the RGB channel order are checked against the content.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from mjpeg_server import (
    HEIGHT_PX,
    WIDTH_PX,
    encode_jpeg,
    numbered_image,
    read_number,
    strip_rgb,
    write_numbered_video,
)

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import SourceError
from stream.sources.video import IntrinsicsFit, VideoConfig, VideoFileSource, rgb_from_opencv

FPS = 24.0
N_FRAMES = 30
CONTAINERS = {"avi-mjpg": ("clip.avi", "MJPG"), "mp4-mp4v": ("clip.mp4", "mp4v")}


@pytest.fixture(scope="module", params=sorted(CONTAINERS))
def video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name, fourcc = CONTAINERS[request.param]
    return write_numbered_video(tmp_path_factory.mktemp(request.param) / name, fourcc, N_FRAMES, FPS)


@pytest.fixture(scope="module")
def avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_numbered_video(tmp_path_factory.mktemp("avi") / "clip.avi", "MJPG", N_FRAMES, FPS)


def read_all(source: VideoFileSource) -> list[ColorFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
        assert len(frames) <= N_FRAMES, "source does not end"
    return frames


def stamp_ns(index: int) -> int:
    return round(index * 1e9 / FPS)


def test_reads_every_frame_in_order_as_rgb(video: Path) -> None:
    source = VideoFileSource(video)
    source.open()
    frames = read_all(source)
    source.close()
    assert [f.frame_id for f in frames] == list(range(N_FRAMES))
    assert [read_number(f.image) for f in frames] == list(range(N_FRAMES))
    assert [f.stamp_ns for f in frames] == [stamp_ns(i) for i in range(N_FRAMES)]
    assert source.nominal_fps == pytest.approx(FPS)
    assert source.is_live is False
    assert source.frame_count == N_FRAMES
    assert source.stats.frames_read == N_FRAMES and source.stats.read_failures == 0
    for frame in frames:
        assert frame.image.shape == (HEIGHT_PX, WIDTH_PX, 3) and frame.image.dtype == np.uint8
        assert frame.intrinsics is None
        assert frame.source == f"video {video}"
        r, g, b = strip_rgb(frame.image)
        assert r > 230 and g < 25 and b < 25, f"strip should be red in RGB, got {(r, g, b)}"


@pytest.mark.parametrize(("name", "fourcc"), CONTAINERS.values(), ids=list(CONTAINERS))
def test_pure_red_video_stays_red(tmp_path: Path, name: str, fourcc: str) -> None:
    path = write_numbered_video(tmp_path / name, fourcc, 3, FPS, red_only=True)
    source = VideoFileSource(path)
    source.open()
    frames = read_all(source)
    assert len(frames) == 3
    for frame in frames:
        mean_rgb = frame.image.reshape(-1, 3).mean(axis=0)
        assert mean_rgb[0] > 240 and mean_rgb[1] < 15 and mean_rgb[2] < 15, mean_rgb


def test_stride_and_start_frame(video: Path) -> None:
    source = VideoFileSource(video, VideoConfig(start_frame=5, stride=3))
    source.open()
    frames = read_all(source)
    expected = list(range(5, N_FRAMES, 3))
    assert [f.frame_id for f in frames] == expected
    assert [read_number(f.image) for f in frames] == expected
    assert [f.stamp_ns for f in frames] == [stamp_ns(i) for i in expected]
    assert source.nominal_fps == pytest.approx(FPS / 3)
    assert source.container_fps == pytest.approx(FPS)


def test_start_offset_rounds_to_nearest_frame(video: Path) -> None:
    # 0.3 s at 24 fps is frame 7.2 -> 7 (not a key frame in the mp4, so the seek must decode forward)
    source = VideoFileSource(video, VideoConfig(start_offset_s=0.3, max_frames=4))
    source.open()
    frames = read_all(source)
    assert [f.frame_id for f in frames] == [7, 8, 9, 10]
    assert [read_number(f.image) for f in frames] == [7, 8, 9, 10]
    assert frames[0].stamp_ns == stamp_ns(7)


def test_raw_mjpeg_file_without_index_seeks_by_grabbing(tmp_path: Path) -> None:
    # concatenated JPEGs (FFmpeg's raw "mjpeg" format): no frame count, and the demuxer cannot seek by frame
    path = tmp_path / "clip.mjpeg"
    path.write_bytes(b"".join(encode_jpeg(numbered_image(i)) for i in range(12)))
    source = VideoFileSource(path, VideoConfig(start_frame=7))
    source.open()
    assert source.frame_count is None
    frames = read_all(source)
    assert [f.frame_id for f in frames] == [7, 8, 9, 10, 11]
    assert [read_number(f.image) for f in frames] == [7, 8, 9, 10, 11]
    assert source.stats.read_failures == 0


def test_max_frames_counts_skipped_frames(avi: Path) -> None:
    source = VideoFileSource(avi, VideoConfig(stride=2, max_frames=4))
    source.open()
    first = source.read()
    assert source.skip() is True
    rest = read_all(source)
    assert first is not None
    assert [first.frame_id] + [f.frame_id for f in rest] == [0, 4, 6]
    assert [read_number(f.image) for f in rest] == [4, 6]
    assert source.skip() is False
    assert source.stats.frames_read == 3 and source.stats.frames_skipped == 1


def test_skip_passes_over_frames_and_ends(avi: Path) -> None:
    source = VideoFileSource(avi, VideoConfig(start_frame=N_FRAMES - 4))
    source.open()
    assert source.skip() is True
    assert source.skip() is True
    frame = source.read()
    assert frame is not None and frame.frame_id == N_FRAMES - 2 and read_number(frame.image) == N_FRAMES - 2
    assert source.skip() is True
    assert source.skip() is False
    assert source.read() is None
    assert source.stats.read_failures == 0


def test_missing_file(tmp_path: Path) -> None:
    source = VideoFileSource(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match=r"nope\.mp4: no such file"):
        source.open()


@pytest.mark.parametrize("content", ["garbage", "empty", "header-only"])
def test_unreadable_file(tmp_path: Path, avi: Path, content: str) -> None:
    data = {"garbage": np.random.default_rng(0).bytes(5000), "empty": b"", "header-only": avi.read_bytes()[:200]}
    path = tmp_path / "broken.avi"
    path.write_bytes(data[content])
    with pytest.raises(SourceError, match=r"broken\.avi: cannot read video"):
        VideoFileSource(path).open()


def test_truncated_file_ends_early_with_a_counted_warning(
    tmp_path: Path, avi: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = avi.read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(data[: len(data) // 2])
    source = VideoFileSource(path)
    source.open()
    assert source.frame_count == N_FRAMES  # the header still declares them all
    with caplog.at_level(logging.WARNING, logger="stream.sources.video"):
        frames = read_all(source)
        assert source.read() is None  # and it stays ended
    assert 0 < len(frames) < N_FRAMES
    # the frames before the cut are intact (FFmpeg conceals the cut frame itself by repeating the previous one)
    assert [read_number(f.image) for f in frames[:-1]] == list(range(len(frames) - 1))
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    assert source.stats.read_failures == 1
    assert any("corrupt or truncated" in r.getMessage() for r in caplog.records)


def test_corrupt_bytes_mid_file_end_the_stream(tmp_path: Path, avi: Path) -> None:
    data = bytearray(avi.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = np.random.default_rng(1).bytes(400)
    path = tmp_path / "corrupt.avi"
    path.write_bytes(bytes(data))
    source = VideoFileSource(path)
    source.open()
    frames = read_all(source)
    assert 0 < len(frames) < N_FRAMES
    assert source.stats.read_failures == 1
    numbers = [read_number(f.image) for f in frames]
    # intact before the damage; FFmpeg conceals damaged frames (repeats/drops), but never reorders
    assert numbers[:8] == list(range(8))
    assert numbers == sorted(numbers)


def test_start_beyond_end(avi: Path) -> None:
    with pytest.raises(SourceError, match=r"start frame 30 is beyond the end of the video \(30 frames\)"):
        VideoFileSource(avi, VideoConfig(start_frame=N_FRAMES)).open()
    with pytest.raises(SourceError, match="beyond the end"):
        VideoFileSource(avi, VideoConfig(start_offset_s=10.0)).open()


def test_read_before_open_and_after_close(avi: Path) -> None:
    source = VideoFileSource(avi)
    with pytest.raises(SourceError, match="before open"):
        source.read()
    source.open()
    assert source.read() is not None
    source.close()
    source.close()  # idempotent
    with pytest.raises(SourceError, match="after close"):
        source.skip()


def test_reopen_starts_over(avi: Path) -> None:
    source = VideoFileSource(avi, VideoConfig(start_frame=3))
    source.open()
    source.read()
    source.read()
    source.open()
    frame = source.read()
    assert frame is not None and frame.frame_id == 3 and read_number(frame.image) == 3


def test_intrinsics_attached_scaled_or_refused(avi: Path) -> None:
    exact = Intrinsics(WIDTH_PX, HEIGHT_PX, 150.0, 151.0, 79.5, 59.5)
    source = VideoFileSource(avi, VideoConfig(intrinsics=exact))
    source.open()
    frame = source.read()
    assert frame is not None and frame.intrinsics == exact

    full_res = Intrinsics(640, 480, 600.0, 604.0, 319.5, 239.5, (0.1, -0.2, 0.0, 0.0))
    source = VideoFileSource(avi, VideoConfig(intrinsics=full_res))
    source.open()
    frame = source.read()
    assert frame is not None and frame.intrinsics is not None
    k = frame.intrinsics
    assert (k.width_px, k.height_px) == (WIDTH_PX, HEIGHT_PX)
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((150.0, 151.0, 79.5, 59.5))
    assert k.distortion == full_res.distortion

    wide = Intrinsics(1280, 720, 900.0, 900.0, 639.5, 359.5)
    source = VideoFileSource(avi, VideoConfig(intrinsics=wide))
    source.open()
    with pytest.raises(SourceError, match=r"intrinsics are for 1280x720 .* delivers 160x120"):
        source.read()


def test_intrinsics_fit_tolerates_rounding_of_the_aspect_ratio() -> None:
    k = Intrinsics(1280, 720, 1000.0, 1000.0, 639.5, 359.5)
    fit = IntrinsicsFit(k, "test")
    scaled = fit.for_size(854, 480)  # 16:9 rounded to whole pixels
    assert scaled is not None and scaled.fx == pytest.approx(1000.0 * 854 / 1280)
    assert fit.for_size(854, 480) is scaled  # cached
    assert IntrinsicsFit(None, "test").for_size(10, 10) is None


def test_rgb_from_opencv_layouts() -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    assert rgb_from_opencv(bgr, "t")[0, 0].tolist() == [0, 0, 200]
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 2] = 90
    assert rgb_from_opencv(bgra, "t")[0, 0].tolist() == [90, 0, 0]
    assert rgb_from_opencv(np.full((2, 3), 7, np.uint8), "t")[0, 0].tolist() == [7, 7, 7]
    with pytest.raises(SourceError, match="unsupported pixel type uint16"):
        rgb_from_opencv(np.zeros((2, 3, 3), np.uint16), "t")
    with pytest.raises(SourceError, match="unsupported image layout"):
        rgb_from_opencv(np.zeros((2, 3, 2), np.uint8), "t")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_frame": 1, "start_offset_s": 1.0}, "not both"),
        ({"start_offset_s": -1.0}, "start_offset_s"),
        ({"start_offset_s": float("nan")}, "start_offset_s"),
        ({"start_frame": -2}, "start_frame"),
        ({"start_frame": 2.5}, "start_frame"),
        ({"stride": 0}, "stride"),
        ({"stride": 1.5}, "stride"),
        ({"max_frames": 0}, "max_frames"),
        ({"fallback_fps": 0.0}, "fallback_fps"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoConfig(**kwargs)  # type: ignore[arg-type]
