"""Shared pre/postprocessing: normalisation, sizes, masking, typing and clear errors for bad images."""

from __future__ import annotations

import numpy as np
import pytest

from engines.config import InputSizePolicy
from engines.errors import EngineInputError
from engines.processing import IMAGENET_MEAN, IMAGENET_STD, DepthRange, depth_frame, postprocess, preprocess
from stream.messages import ColorFrame, DepthKind, Intrinsics


def test_preprocess_normalises_and_resizes() -> None:
    rgb = np.round(IMAGENET_MEAN * 255).astype(np.uint8)  # (124, 116, 103)
    image = np.broadcast_to(rgb, (480, 640, 3)).copy()
    out = preprocess(image, InputSizePolicy())
    assert out.pixel_values.shape == (1, 3, 518, 686)
    assert out.pixel_values.dtype == np.float32 and out.pixel_values.flags["C_CONTIGUOUS"]
    assert (out.size.width_px, out.size.height_px, out.frame_width_px, out.frame_height_px) == (686, 518, 640, 480)
    expected = (rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # |.| < 0.01: rounding of the mean to uint8
    np.testing.assert_allclose(out.pixel_values[0].mean(axis=(1, 2)), expected, atol=1e-5)
    np.testing.assert_allclose(out.pixel_values[0].std(axis=(1, 2)), 0.0, atol=1e-5)


def test_preprocess_channel_order_and_scale() -> None:
    image = np.zeros((28, 42, 3), np.uint8)
    image[..., 0] = 255  # pure red, already a multiple of 14 at target 28 -> no resampling
    out = preprocess(image, InputSizePolicy(target_px=28))
    assert out.pixel_values.shape == (1, 3, 28, 42)
    np.testing.assert_allclose(out.pixel_values[0, :, 5, 5], (np.array([1.0, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD,
                               rtol=1e-6)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((48, 64), np.uint8), "grey"),
        (np.zeros((48, 64, 1), np.uint8), "grey"),
        (np.zeros((48, 64, 4), np.uint8), "RGBA"),
        (np.zeros((48, 64, 3), np.float32), "uint8"),
        (np.zeros((48, 64, 3), np.uint16), "uint8"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        (np.zeros((48, 64, 5), np.uint8), "shape"),
        (np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 30000, 3)), "largest accepted side"),
        (np.zeros((10, 3000, 3), np.uint8), "aspect ratio"),
        ([[1, 2, 3]], "numpy"),
    ],
)
def test_preprocess_rejects_bad_images(image: object, message: str) -> None:
    with pytest.raises(EngineInputError, match=message):
        preprocess(image, InputSizePolicy())  # type: ignore[arg-type]


def test_postprocess_resizes_back_and_masks_relative() -> None:
    raw = np.full((1, 28, 42), 2.0, np.float32)
    raw[0, 0, 0] = np.nan
    raw[0, 27, 41] = -1.0
    raw[0, 10, 10] = np.inf
    out = postprocess(raw, 84, 56, DepthKind.INVERSE_RELATIVE, DepthRange())
    assert out.shape == (56, 84) and out.dtype == np.float32
    assert out[0, 0] == 0.0 and out[55, 83] == 0.0  # invalid corners stay invalid after resizing
    assert np.all(np.isfinite(out))
    assert out[30, 60] == pytest.approx(2.0)  # far from the bad pixels


def test_postprocess_metric_range() -> None:
    raw = np.array([[0.0, 0.3, 1.0], [5.0, 19.9, 20.0]], np.float32)
    out = postprocess(raw, 3, 2, DepthKind.METRIC, DepthRange(0.5, 10.0))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert raw[1, 2] == 20.0  # input untouched
    with pytest.raises(ValueError, match="one"):
        postprocess(np.zeros((2, 3, 4), np.float32), 4, 3, DepthKind.METRIC, DepthRange())
    with pytest.raises(ValueError, match="min_m"):
        DepthRange(2.0, 1.0)


def test_depth_frame_carries_frame_data() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    pose = np.eye(4)
    pose[0, 3] = 1.5
    k = Intrinsics(6, 4, 5.0, 5.0, 2.5, 1.5)
    frame = ColorFrame(frame_id=7, stamp_ns=123, image=image, intrinsics=k, T_W_C=pose)
    out = depth_frame(frame, np.ones((4, 6), np.float32), DepthKind.METRIC, "m")
    assert (out.frame_id, out.stamp_ns, out.kind, out.model, out.intrinsics) == (7, 123, DepthKind.METRIC, "m", k)
    assert out.image is image and out.T_W_C_gt is not None and out.T_W_C_gt[0, 3] == 1.5
