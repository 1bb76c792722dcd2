"""open_source: what a user types picks the right source; options that do not apply are errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.sources import SourceError, SourceOptions, open_source, source_kind
from stream.sources.images import ImageFolderSource
from stream.sources.netstream import MjpegStreamSource, RtspStreamSource
from stream.sources.synthetic import SyntheticSource
from stream.sources.tum import TumSource
from stream.sources.video import VideoFileSource
from stream.sources.webcam import WebcamSource


def test_dispatch(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    images = tmp_path / "imgs"
    images.mkdir()
    tum = tmp_path / "tum"
    tum.mkdir()
    (tum / "rgb.txt").write_text("# none\n")
    assert isinstance(open_source(None), SyntheticSource)
    assert isinstance(open_source("synthetic"), SyntheticSource)
    assert isinstance(open_source("0"), WebcamSource)
    assert isinstance(open_source("http://127.0.0.1:8080/video"), MjpegStreamSource)
    assert isinstance(open_source("rtsp://127.0.0.1:8554/cam"), RtspStreamSource)
    assert isinstance(open_source(str(video)), VideoFileSource)
    assert isinstance(open_source(str(images)), ImageFolderSource)
    assert isinstance(open_source(str(tum)), TumSource)
    assert source_kind(str(tum)) == "tum"


def test_options_reach_the_source() -> None:
    source = open_source("synthetic", SourceOptions(width_px=40, height_px=30, max_frames=3, fps=10.0))
    source.open()
    frames = [source.read() for _ in range(4)]
    assert frames[3] is None and frames[0].image.shape == (30, 40, 3)
    assert frames[1].stamp_ns == 100_000_000


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("/definitely/not/here.mp4", SourceOptions(), "no such file or folder"),
        ("0", SourceOptions(stride=2), "do not apply"),
        ("synthetic", SourceOptions(depth_scale=5000.0), "do not apply"),
        ("http://127.0.0.1:1/x", SourceOptions(fps=5.0), "do not apply"),
        ("ftp://127.0.0.1/x", SourceOptions(), "scheme"),
    ],
)
def test_bad_specs(spec: str, options: SourceOptions, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        open_source(spec, options)
