"""ImageFolderSource: natural order, formats, numbering, stride/skip and errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.messages import ColorFrame, Intrinsics
from stream.sources.base import FrameSource, SourceError
from stream.sources.images import ImageFolderConfig, ImageFolderSource, natural_key

W, H = 8, 6


def bgr(value: int) -> np.ndarray:
    """A BGR image whose blue, green and red channels are value, value + 1, value + 2."""
    image = np.empty((H, W, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = value, value + 1, value + 2
    return image


def write(path: Path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), image)


def read_all(source: ImageFolderSource) -> list[ColorFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """frame1 .. frame12 as PNG, colour value 10 * n (lossless), plus things that are not images."""
    for n in range(1, 13):
        write(tmp_path / f"frame{n}.png", bgr(10 * n))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder with an image suffix is not an image
    return tmp_path


def test_natural_order_and_rgb(folder: Path) -> None:
    source = ImageFolderSource(folder, ImageFolderConfig(fps=10.0))
    as_protocol: FrameSource = source  # statically checked: implements the protocol
    assert as_protocol.nominal_fps == 10.0
    source.open()
    assert [p.name for p in source.files] == [f"frame{n}.png" for n in range(1, 13)]
    frames = read_all(source)
    assert [f.frame_id for f in frames] == list(range(12))
    assert [f.stamp_ns for f in frames] == [n * 100_000_000 for n in range(12)]
    for n, frame in enumerate(frames, start=1):
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        # BGR on disk -> RGB in the frame: red first
        assert frame.image[0, 0].tolist() == [10 * n + 2, 10 * n + 1, 10 * n]
        assert frame.intrinsics is None and frame.source == f"images:{folder}"
    assert source.read() is None and not source.skip()
    assert source.nominal_fps == 10.0 and not source.is_live
    source.close()
    source.close()  # twice is fine


def test_natural_key() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "IMG1.png", "img2.png", "img2b.png", "img10.png"]


def test_suffixes_are_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path / "a1.JPG", bgr(100))
    write(tmp_path / "a2.jpeg", bgr(100))
    write(tmp_path / "a3.BMP", bgr(100))
    write(tmp_path / "a4.Tif", bgr(100))
    write(tmp_path / "a5.tiff", bgr(100))
    write(tmp_path / "a6.PNG", bgr(100))
    with ImageFolderSource(tmp_path) as source:
        frames = read_all(source)
    assert len(frames) == 6
    for frame in frames:  # JPEG is lossy: within a few levels
        assert np.abs(frame.image.astype(int) - [102, 101, 100]).max() <= 3


def test_stride_start_and_skip(folder: Path) -> None:
    # frame5.png (index 4) is corrupt: it is never decoded because stride/skip pass over it
    (folder / "frame5.png").write_bytes(b"not a png")
    source = ImageFolderSource(folder, ImageFolderConfig(fps=20.0, stride=3, start_index=1))
    source.open()
    assert len(source) == 4  # indices 1, 4, 7, 10
    assert source.nominal_fps == pytest.approx(20.0 / 3)
    first = source.read()
    assert first is not None
    assert (first.frame_id, first.stamp_ns) == (0, 50_000_000)  # file index 1 at 20 fps
    assert first.image[0, 0, 2] == 20  # frame2.png
    assert source.skip()  # index 4, the corrupt one, not decoded
    third = source.read()
    assert third is not None
    assert (third.frame_id, third.stamp_ns) == (6, 350_000_000)  # index 7: frame8.png
    assert third.image[0, 0, 2] == 80
    assert source.skip()  # index 10
    assert not source.skip()
    assert source.read() is None


def test_greyscale_and_alpha_become_rgb(tmp_path: Path) -> None:
    write(tmp_path / "0.png", np.full((H, W), 77, np.uint8))
    write(tmp_path / "1.png", np.dstack([bgr(40), np.full((H, W), 255, np.uint8)]))
    with ImageFolderSource(tmp_path) as source:
        grey, rgba = read_all(source)
    assert grey.image.shape == (H, W, 3) and np.all(grey.image == 77)
    assert rgba.image.shape == (H, W, 3) and rgba.image[0, 0].tolist() == [42, 41, 40]


def test_intrinsics_are_attached_and_checked(folder: Path) -> None:
    k = Intrinsics(W, H, 10.0, 10.0, 3.5, 2.5)
    with ImageFolderSource(folder, ImageFolderConfig(intrinsics=k)) as source:
        frame = source.read()
        assert frame is not None and frame.intrinsics == k
    wrong = Intrinsics(W * 2, H * 2, 10.0, 10.0, 3.5, 2.5)
    with ImageFolderSource(folder, ImageFolderConfig(intrinsics=wrong)) as source, \
            pytest.raises(SourceError, match=r"frame1\.png is 8x6 but the intrinsics are for 16x12"):
        source.read()


def test_size_change_is_an_error(folder: Path) -> None:
    write(folder / "frame3.png", np.zeros((H + 2, W, 3), np.uint8))
    with ImageFolderSource(folder) as source:
        source.read()
        source.read()
        with pytest.raises(SourceError, match=r"frame3\.png is 8x8 but the folder's first image is 8x6"):
            source.read()


def test_corrupt_image_names_the_file(folder: Path) -> None:
    (folder / "frame2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "frame3.png").write_bytes(b"")
    with ImageFolderSource(folder) as source:
        assert source.read() is not None
        with pytest.raises(SourceError, match=r"frame2\.png is corrupt"):
            source.read()
        with pytest.raises(SourceError, match=r"frame3\.png is corrupt"):
            source.read()


def test_sixteen_bit_images_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "deep.png", np.full((H, W, 3), 4000, np.uint16))
    with ImageFolderSource(tmp_path) as source, pytest.raises(SourceError, match=r"deep\.png is a uint16 colour"):
        source.read()


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        ImageFolderSource(tmp_path / "nope").open()
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SourceError, match="holds no images"):
        ImageFolderSource(tmp_path).open()
    with pytest.raises(SourceError, match="is not a folder"):
        ImageFolderSource(tmp_path / "readme.md").open()


def test_start_past_the_end_and_read_before_open(folder: Path) -> None:
    with pytest.raises(SourceError, match="start_index 12 is past the last of 12 images"):
        ImageFolderSource(folder, ImageFolderConfig(start_index=12)).open()
    with pytest.raises(SourceError, match="not open"):
        ImageFolderSource(folder).read()


@pytest.mark.parametrize(
    "kwargs", [{"fps": 0.0}, {"fps": float("nan")}, {"stride": 0}, {"stride": 1.5}, {"start_index": -1}]
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="ImageFolderConfig"):
        ImageFolderConfig(**kwargs)  # type: ignore[arg-type]
