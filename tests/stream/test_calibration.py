"""Calibration files (OpenCV YAML/XML, JSON, camera.txt) and chessboard calibration on synthetic views."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.calibration import (
    CalibrationFileError,
    CalibrationResult,
    calibrate_chessboard,
    load_calibration,
    read_camera_txt,
    render_chessboard_views,
    save_calibration,
)
from stream.messages import Intrinsics

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

# the camera the synthetic views are drawn with (non-square pixels, off-centre principal point)
TRUE_K = Intrinsics(640, 480, 600.0, 590.0, 322.0, 236.0)
BOARD_COLS, BOARD_ROWS, SQUARE_M = 9, 6, 0.025


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    return render_chessboard_views(TRUE_K, BOARD_COLS, BOARD_ROWS, SQUARE_M, num_views=12, seed=0)


def assert_close_to_truth(k: Intrinsics) -> None:
    assert (k.width_px, k.height_px) == (640, 480)
    assert k.fx == pytest.approx(TRUE_K.fx, rel=0.01)
    assert k.fy == pytest.approx(TRUE_K.fy, rel=0.01)
    assert abs(k.cx - TRUE_K.cx) < 2.0
    assert abs(k.cy - TRUE_K.cy) < 2.0


# ----------------------------------------------------------------------------------------------------
# chessboard calibration
# ----------------------------------------------------------------------------------------------------


def test_rendered_views_put_the_corners_where_the_camera_model_says(views: list[np.ndarray]) -> None:
    # independent check of the renderer: the corners OpenCV finds lie on a homography of the board grid
    grey = cv2.cvtColor(views[0], cv2.COLOR_RGB2GRAY)
    found, corners = cv2.findChessboardCorners(grey, (BOARD_COLS, BOARD_ROWS))
    assert found
    grid = np.mgrid[0:BOARD_COLS, 0:BOARD_ROWS].T.reshape(-1, 2).astype(np.float32) * SQUARE_M
    H, _ = cv2.findHomography(grid, corners.reshape(-1, 2))
    projected = cv2.perspectiveTransform(grid[None], H)[0]
    assert np.median(np.linalg.norm(projected - corners.reshape(-1, 2), axis=1)) < 0.3


def test_calibration_recovers_the_known_camera(views: list[np.ndarray]) -> None:
    # half of the views as grey images: both inputs are accepted
    images = [v if i % 2 else cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) for i, v in enumerate(views)]
    result = calibrate_chessboard(iter(images), BOARD_COLS, BOARD_ROWS, SQUARE_M)
    assert isinstance(result, CalibrationResult)
    assert result.num_views_used == 12 and result.num_views_seen == 12
    assert result.rms_reprojection_px < 0.5
    assert_close_to_truth(result.intrinsics)
    assert len(result.intrinsics.distortion) == 5
    k1, k2, p1, p2 = result.intrinsics.distortion[:4]
    assert abs(k1) < 0.05 and abs(p1) < 0.005 and abs(p2) < 0.005  # the views have no distortion
    assert abs(k2) < 0.5


def test_max_views_thins_evenly(views: list[np.ndarray]) -> None:
    result = calibrate_chessboard(views, BOARD_COLS, BOARD_ROWS, SQUARE_M, min_views=5, max_views=8)
    assert result.num_views_used == 8 and result.num_views_seen == 12
    assert_close_to_truth(result.intrinsics)


def test_too_few_views_is_a_clear_error(views: list[np.ndarray]) -> None:
    blank = np.full((480, 640, 3), 128, np.uint8)
    with pytest.raises(ValueError, match=r"found in 3 of 6 images; at least 5 views"):
        calibrate_chessboard([*views[:3], blank, blank, blank], BOARD_COLS, BOARD_ROWS, SQUARE_M)
    with pytest.raises(ValueError, match="no images"):
        calibrate_chessboard([], BOARD_COLS, BOARD_ROWS, SQUARE_M)


def test_wrong_board_size_finds_nothing(views: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match=r"7x5 chessboard was found in 0 of 6"):
        calibrate_chessboard(views[:6], 7, 5, SQUARE_M)


def test_bad_arguments_are_refused(views: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="first was 640x480"):
        calibrate_chessboard([views[0], views[1][:240]], BOARD_COLS, BOARD_ROWS, SQUARE_M)
    with pytest.raises(ValueError, match="square_size_m"):
        calibrate_chessboard(views, BOARD_COLS, BOARD_ROWS, 0.0)
    with pytest.raises(ValueError, match="orientation is ambiguous"):
        calibrate_chessboard(views, 6, 6, SQUARE_M)
    with pytest.raises(ValueError, match="uint8"):
        calibrate_chessboard([views[0].astype(np.float32)], BOARD_COLS, BOARD_ROWS, SQUARE_M)
    with pytest.raises(ValueError, match="no distortion"):
        render_chessboard_views(Intrinsics(640, 480, 500, 500, 320, 240, (0.1, 0, 0, 0)), 9, 6, 0.025)


# ----------------------------------------------------------------------------------------------------
# calibration files
# ----------------------------------------------------------------------------------------------------

WITH_DIST = Intrinsics(1280, 720, 910.25, 905.5, 641.125, 359.75, (0.11, -0.22, 0.001, -0.002, 0.05))
NO_DIST = Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".xml", ".json"])
@pytest.mark.parametrize("intrinsics", [WITH_DIST, NO_DIST], ids=["distortion", "none"])
def test_files_round_trip(tmp_path: Path, suffix: str, intrinsics: Intrinsics) -> None:
    path = tmp_path / f"calib{suffix}"
    save_calibration(path, intrinsics, rms_reprojection_px=0.21, num_views_used=14)
    loaded = load_calibration(path)
    assert loaded == intrinsics


def test_yaml_is_what_opencv_reads(tmp_path: Path) -> None:
    path = tmp_path / "calib.yaml"
    save_calibration(path, WITH_DIST, rms_reprojection_px=0.3)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    np.testing.assert_allclose(fs.getNode("camera_matrix").mat(), WITH_DIST.K)
    np.testing.assert_allclose(fs.getNode("distortion_coefficients").mat().ravel(), WITH_DIST.distortion)
    assert fs.getNode("image_width").real() == 1280 and fs.getNode("image_height").real() == 720
    assert fs.getNode("avg_reprojection_error").real() == pytest.approx(0.3)
    fs.release()


def test_json_layout(tmp_path: Path) -> None:
    path = tmp_path / "calib.json"
    save_calibration(path, WITH_DIST)
    body = json.loads(path.read_text())
    assert body == {"width_px": 1280, "height_px": 720, "fx": 910.25, "fy": 905.5, "cx": 641.125, "cy": 359.75,
                    "distortion": [0.11, -0.22, 0.001, -0.002, 0.05]}


OPENCV_SAMPLE = """%YAML:1.0
---
calibration_time: "Mon 01 Jan 2024 12:00:00 CET"
nframes: 20
image_width: 640
image_height: 480
board_width: 9
board_height: 6
square_size: 2.5000000372529030e-02
flags: 0
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [ 5.3e+02, 0., 3.2e+02, 0., 5.31e+02, 2.4e+02, 0., 0., 1. ]
distortion_coefficients: !!opencv-matrix
   rows: 5
   cols: 1
   dt: d
   data: [ 1.0e-01, -2.0e-01, 0., 0., 3.0e-02 ]
avg_reprojection_error: 2.1e-01
"""


def test_reads_the_opencv_sample_layout(tmp_path: Path) -> None:
    path = tmp_path / "out_camera_data.yml"
    path.write_text(OPENCV_SAMPLE)
    assert load_calibration(path) == Intrinsics(640, 480, 530.0, 531.0, 320.0, 240.0, (0.1, -0.2, 0.0, 0.0, 0.03))


def test_opencv_file_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(OPENCV_SAMPLE.replace("image_height: 480\n", ""))
    with pytest.raises(CalibrationFileError, match=r"bad\.yaml: missing key 'image_height'"):
        load_calibration(path)
    path.write_text(OPENCV_SAMPLE.replace("flags: 0", "focal_guess: 3"))
    with pytest.raises(CalibrationFileError, match=r"bad\.yaml: unknown key 'focal_guess'"):
        load_calibration(path)
    path.write_text(OPENCV_SAMPLE.replace("rows: 5", "rows: 6").replace("3.0e-02 ]", "3.0e-02, 0. ]"))
    with pytest.raises(CalibrationFileError, match=r"'distortion_coefficients' must hold 0, 4, 5 or 8 values"):
        load_calibration(path)
    path.write_text("%YAML:1.0\n---\nimage_width: [unterminated\n")
    with pytest.raises(CalibrationFileError, match=r"bad\.yaml"):
        load_calibration(path)


def test_json_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    good = NO_DIST.to_wire()
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "cy"}))
    with pytest.raises(CalibrationFileError, match=r"bad\.json: missing key 'cy'"):
        load_calibration(path)
    path.write_text(json.dumps({**good, "focal": 3}))
    with pytest.raises(CalibrationFileError, match=r"bad\.json: unknown key 'focal'"):
        load_calibration(path)
    path.write_text(json.dumps({**good, "fx": "525"}))
    with pytest.raises(CalibrationFileError, match=r"key 'fx' must be a number"):
        load_calibration(path)
    path.write_text(json.dumps({**good, "fx": -1.0}))
    with pytest.raises(CalibrationFileError, match=r"bad\.json: focal lengths must be positive"):
        load_calibration(path)
    path.write_text("{not json")
    with pytest.raises(CalibrationFileError, match="not valid JSON"):
        load_calibration(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_calibration(tmp_path / "nope.yaml")
    (tmp_path / "calib.ini").write_text("fx=1")
    with pytest.raises(CalibrationFileError, match=r"unknown calibration file type '\.ini'"):
        load_calibration(tmp_path / "calib.ini")
    with pytest.raises(ValueError, match="cannot write calibration type"):
        save_calibration(tmp_path / "calib.ini", NO_DIST)


CAMERA_TXT = """# a comment line
width 640
height 480
fx 517.3   # trailing comment
fy 516.5
cx 318.6
cy 255.3
d0 0.2624
d1 -0.9531
d2 -0.0054
d3 0.0026
d4 1.1633
depth_scale 5000.0   # uint16 / 5000 = metres
"""


def test_camera_txt(tmp_path: Path) -> None:
    path = tmp_path / "camera.txt"
    path.write_text(CAMERA_TXT)
    camera = read_camera_txt(path)
    assert camera.intrinsics == Intrinsics(640, 480, 517.3, 516.5, 318.6, 255.3,
                                           (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
    assert camera.depth_scale == 5000.0
    assert load_calibration(path) == camera.intrinsics
    lines = [ln for ln in CAMERA_TXT.splitlines() if not ln.startswith(("d", "depth"))]
    path.write_text("\n".join([*lines, "distortion none (not provided)"]))
    camera = read_camera_txt(path)
    assert camera.intrinsics.distortion == () and camera.depth_scale is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("fy 516.5", "fz 516.5"), r"camera\.txt:5: unknown key 'fz'"),
        (lambda t: t.replace("cx 318.6\n", ""), r"camera\.txt: missing key 'cx'"),
        (lambda t: t.replace("d2 -0.0054\n", ""), "without gaps"),
        (lambda t: t + "fx 1.0\n", r"camera\.txt:14: key 'fx' repeated"),
        (lambda t: t.replace("cy 255.3", "cy abc"), r"camera\.txt:7: key 'cy': 'abc' is not a number"),
        (lambda t: t.replace("width 640", "width 640.5"), r"camera\.txt:2: key 'width' must be a positive integer"),
        (lambda t: t + "distortion none\n", "contradicts 'd0'"),
        (lambda t: t.replace("depth_scale 5000.0", "depth_scale 0"), "'depth_scale' must be positive"),
    ],
)
def test_camera_txt_errors(tmp_path: Path, edit: Callable[[str], str], message: str) -> None:
    path = tmp_path / "camera.txt"
    path.write_text(edit(CAMERA_TXT))
    with pytest.raises(CalibrationFileError, match=message):
        read_camera_txt(path)


@pytest.mark.realdata
def test_camera_txt_of_the_shared_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent")
    tum = read_camera_txt(DATA / "tum_fr1_rpy" / "camera.txt")
    assert (tum.intrinsics.fx, tum.intrinsics.cy, tum.depth_scale) == (517.3, 255.3, 5000.0)
    assert len(tum.intrinsics.distortion) == 5
    kitchen = read_camera_txt(DATA / "7scenes_redkitchen" / "camera.txt")
    assert kitchen.intrinsics == Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    assert kitchen.depth_scale == 1000.0
