"""``depthslam calibrate`` on a folder of synthetic chessboard images and on a video of them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.calibration import load_calibration, render_chessboard_views
from stream.messages import Intrinsics
from tools import calibrate, cli

TRUE_K = Intrinsics(640, 480, 600.0, 590.0, 322.0, 236.0)


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    return render_chessboard_views(TRUE_K, 9, 6, 0.025, num_views=12, seed=3)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, views: list[np.ndarray]) -> Path:
    folder = tmp_path_factory.mktemp("shots")
    for i, view in enumerate(views):
        assert cv2.imwrite(str(folder / f"shot{i}.png"), cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    # a frame without the board and a non-image file: both must be harmless
    assert cv2.imwrite(str(folder / "shot99.png"), np.full((480, 640, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("board 9x6, 25 mm")
    return folder


def assert_close_to_truth(k: Intrinsics) -> None:
    assert (k.width_px, k.height_px) == (640, 480)
    assert k.fx == pytest.approx(TRUE_K.fx, rel=0.01)
    assert k.fy == pytest.approx(TRUE_K.fy, rel=0.01)
    assert abs(k.cx - TRUE_K.cx) < 2.0 and abs(k.cy - TRUE_K.cy) < 2.0


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_folder(image_folder: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"calib{suffix}"
    rc = calibrate.main([str(image_folder), "--board", "9x6", "--square-size-m", "0.025", "--out", str(out)])
    assert rc == 0
    assert_close_to_truth(load_calibration(out))
    text = capsys.readouterr().out
    assert "board found in 12 of 13 images" in text and str(out) in text


def test_every_n_through_the_cli_dispatcher(image_folder: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calib.yml"
    rc = cli.main(["calibrate", str(image_folder), "--board", "9x6", "--square-size-m", "0.025",
                   "--out", str(out), "--every-n", "2"])
    assert rc == 0
    assert "board found in 6 of 7 images" in capsys.readouterr().out  # files 0, 2, ..., 12 (natural order)
    k = load_calibration(out)
    assert k.fx == pytest.approx(TRUE_K.fx, rel=0.03)  # fewer views: looser


def test_video(views: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    assert writer.isOpened()
    for view in views:
        for _ in range(2):  # each view twice: --every-n 2 keeps one of each
            writer.write(cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "calib.json"
    rc = calibrate.main([str(video), "--board", "9x6", "--square-size-m", "0.025", "--out", str(out),
                         "--every-n", "2"])
    assert rc == 0
    assert "board found in 12 of 12 images" in capsys.readouterr().out
    assert_close_to_truth(load_calibration(out))


def test_no_board_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 128, np.uint8))
    out = tmp_path / "calib.yaml"
    rc = calibrate.main([str(tmp_path), "--board", "9x6", "--square-size-m", "0.025", "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert "chessboard was found in 0 of 3 images" in capsys.readouterr().err


def test_missing_input_and_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--board", "9x6", "--square-size-m", "0.025", "--out", str(tmp_path / "c.yaml")]
    assert calibrate.main([str(tmp_path / "nope"), *args]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert calibrate.main([str(tmp_path / "empty"), *args]) == 1
    assert "holds no images" in capsys.readouterr().err
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    assert calibrate.main([str(tmp_path / "junk.avi"), *args]) == 1
    assert "junk.avi" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--board", "9-6", "--square-size-m", "0.025", "--out", "c.yaml"], "COLSxROWS"),
        (["--board", "9x6", "--square-size-m", "-1", "--out", "c.yaml"], "positive number"),
        (["--board", "9x6", "--square-size-m", "0.025", "--out", "c.txt"], "must end in"),
        (["--board", "9x6", "--square-size-m", "0.025", "--out", "c.yaml", "--every-n", "0"], "positive integer"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        calibrate.main([str(tmp_path), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
