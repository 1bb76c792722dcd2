"""Wire format: exact round trips, and hostile payloads raise WireError only (never crash, never over-allocate)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from stream.messages import (
    ColorFrame,
    Control,
    ControlCommand,
    DecodeLimits,
    DepthFrame,
    DepthKind,
    Intrinsics,
    MapUpdate,
    MeshBlock,
    PoseUpdate,
    Status,
    TrackingState,
    WireError,
    decode,
    decode_array,
    encode_array,
)

RNG = np.random.default_rng(7)
K = Intrinsics(64, 48, 50.0, 51.0, 31.5, 23.5, (0.1, -0.2, 0.001, 0.002, 0.03))


def _pose() -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = RNG.normal(size=3)
    return T


def _color(h: int = 48, w: int = 64) -> ColorFrame:
    return ColorFrame(
        frame_id=12, stamp_ns=1_305_031_229_528_748_000, image=RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),
        intrinsics=K.scaled(w, h), depth_m=RNG.uniform(0.0, 5.0, (h, w)).astype(np.float32), T_W_C=_pose(),
        source="test",
    )


def test_color_frame_round_trip_exact() -> None:
    frame = _color()
    back = ColorFrame.decode(frame.encode(seq=5))
    assert back.same_as(frame)
    assert decode(frame.encode(seq=5)).seq == 5


def test_color_frame_without_optionals() -> None:
    frame = ColorFrame(0, 0, np.zeros((2, 3, 3), np.uint8))
    back = ColorFrame.decode(frame.encode())
    assert back.same_as(frame) and back.intrinsics is None and back.depth_m is None and back.T_W_C is None


def test_color_frame_jpeg_quality_chosen_by_sender() -> None:
    # a smooth image so JPEG error is small and measurable
    yy, xx = np.mgrid[0:96, 0:128]
    image = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    frame = ColorFrame(1, 2, image)
    raw, high, low = frame.encode(), frame.encode(jpeg_quality=95), frame.encode(jpeg_quality=30)
    assert len(high) < len(raw) / 3 and len(low) < len(high)
    for payload, tol in ((high, 3.0), (low, 8.0)):
        back = ColorFrame.decode(payload)
        assert back.image.shape == image.shape and back.image.dtype == np.uint8
        assert np.abs(back.image.astype(float) - image).mean() < tol
    # channel order survives JPEG: a pure red image stays red
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    back = ColorFrame.decode(ColorFrame(0, 0, red).encode(jpeg_quality=90)).image
    assert back[..., 0].min() > 240 and back[..., 1:].max() < 15


def test_other_messages_round_trip() -> None:
    depth = DepthFrame(
        3, 4, RNG.uniform(0, 1, (48, 64)).astype(np.float32), DepthKind.INVERSE_RELATIVE, K,
        image=RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8), confidence=np.ones((48, 64), np.float32),
        T_W_C_gt=_pose(), model="da2-small",
    )
    back = DepthFrame.decode(depth.encode())
    assert back.kind is DepthKind.INVERSE_RELATIVE and back.model == "da2-small" and back.intrinsics == K
    for name in ("depth", "image", "confidence", "T_W_C_gt"):
        assert np.array_equal(getattr(back, name), getattr(depth, name))

    pose = PoseUpdate(5, 6, _pose(), TrackingState.RELOCALISED, is_keyframe=True, depth_scale=1.25)
    pback = PoseUpdate.decode(pose.encode())
    assert np.array_equal(pback.T_W_C, pose.T_W_C) and pback.state is TrackingState.RELOCALISED
    assert pback.is_keyframe and pback.depth_scale == 1.25

    block = MeshBlock(
        (1, -2, 3), RNG.normal(size=(5, 3)).astype(np.float32), np.array([[0, 1, 2], [2, 3, 4]], np.int32),
        RNG.integers(0, 256, (5, 3), dtype=np.uint8),
    )
    empty = MeshBlock((0, 0, 0), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))
    update = MapUpdate(9, 10, 11, (block, empty), is_snapshot=True, voxel_size_m=0.02)
    mback = MapUpdate.decode(update.encode())
    assert mback.map_seq == 9 and mback.is_snapshot and mback.voxel_size_m == 0.02
    assert all(a.same_as(b) for a, b in zip(mback.blocks, update.blocks, strict=True))

    status = Status("capture", 7, "reconnecting", "stream dropped", {"reconnects": 2, "fps": 29.5})
    assert Status.decode(status.encode()) == status
    control = Control(ControlCommand.SAVE, "map", 8)
    assert Control.decode(control.encode()) == control


def test_big_endian_and_noncontiguous_arrays_encode() -> None:
    a = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    back = decode_array(encode_array(a), "a", DecodeLimits())
    assert back.dtype == np.dtype("<f4") and np.array_equal(back, a)


def test_construction_validates() -> None:
    with pytest.raises(TypeError, match="uint8"):
        ColorFrame(0, 0, np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="last axis 3"):
        ColorFrame(0, 0, np.zeros((4, 4), np.uint8)[..., None])
    with pytest.raises(ValueError, match="intrinsics are for 64x48"):
        ColorFrame(0, 0, np.zeros((4, 4, 3), np.uint8), intrinsics=K)
    with pytest.raises(ValueError, match="depth_m shape"):
        ColorFrame(0, 0, np.zeros((4, 4, 3), np.uint8), depth_m=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="focal"):
        Intrinsics(10, 10, -1.0, 1.0, 5.0, 5.0)
    with pytest.raises(TypeError, match="dtype"):
        encode_array(np.zeros(3, np.complex64))


def test_intrinsics_helpers() -> None:
    k = Intrinsics.from_hfov(640, 480, 90.0)
    assert k.fx == pytest.approx(320.0) and k.cx == 319.5 and k.cy == 239.5
    half = k.scaled(320, 240)
    assert half.fx == pytest.approx(160.0) and half.cx == pytest.approx(159.5) and half.cy == pytest.approx(119.5)
    assert np.allclose(half.K, [[160, 0, 159.5], [0, 160, 119.5], [0, 0, 1]])


# ----------------------------------------------------------------------------------------------------
# hostile input
# ----------------------------------------------------------------------------------------------------


def _envelope(body: dict, kind: str = "color", v: int = 1) -> bytes:
    return msgpack.packb({"type": kind, "v": v, "seq": 0, "body": body}, use_bin_type=True)


def _color_body() -> dict:
    return ColorFrame(0, 0, np.zeros((4, 4, 3), np.uint8)).body()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b["image"].update(shape=[4, 4, 4]), "needs 64 bytes"),
        (lambda b: b["image"].update(dtype="|O"), "allow-list"),
        (lambda b: b["image"].update(dtype="<c8"), "allow-list"),
        (lambda b: b["image"].update(shape=[1, 1, 1, 1, 48]), "dimensions"),
        (lambda b: b["image"].update(shape=[4, -4, 3]), "bad dimension"),
        (lambda b: b["image"].update(shape=[100000, 100000, 3]), "too large|exceeds"),
        (lambda b: b["image"].update(shape=[4, 4.0, 3]), "bad dimension"),
        (lambda b: b["image"].update(data="text"), "data"),
        (lambda b: b["image"].update(dtype="<f4", shape=[4, 4], data=b"\0" * 64), "uint8|last axis"),
        (lambda b: b.update(frame_id="1"), "frame_id"),
        (lambda b: b.update(frame_id=True), "frame_id"),
        (lambda b: b.pop("stamp_ns"), "missing field 'stamp_ns'"),
        (lambda b: b.update(T_W_C=encode_array(np.eye(3))), "4x4"),
        (lambda b: b.update(T_W_C=encode_array(np.full((4, 4), np.nan))), "non-finite"),
        (lambda b: b.update(intrinsics={"width_px": 4}), "missing field"),
        (lambda b: b.update(intrinsics=Intrinsics(5, 4, 1, 1, 1, 1).to_wire()), "intrinsics are for"),
        (lambda b: b.update(depth_m=encode_array(np.zeros((3, 4), np.float32))), "depth_m shape"),
        (lambda b: b.update(image={"jpeg": b"\xff\xd8garbage", "shape": [4, 4, 3]}), "jpeg"),
    ],
)
def test_hostile_color_bodies_raise_wire_error(mutate, match: str) -> None:
    body = _color_body()
    mutate(body)
    with pytest.raises(WireError, match=match):
        decode(_envelope(body))


def test_jpeg_lying_about_its_size_is_rejected_before_decoding() -> None:
    good = ColorFrame(0, 0, np.zeros((8, 8, 3), np.uint8)).body(jpeg_quality=80)
    good["image"]["shape"] = [16, 16, 3]
    with pytest.raises(WireError, match="differs from declared"):
        decode(_envelope(good))
    # a JPEG whose header claims a huge image is refused from the header, under limits
    huge = ColorFrame(0, 0, np.zeros((8, 8, 3), np.uint8)).body(jpeg_quality=80)
    huge["image"]["shape"] = [20000, 20000, 3]
    with pytest.raises(WireError, match="exceeds"):
        decode(_envelope(huge))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "msgpack"),
        (b"\xc1", "msgpack"),
        (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
        (msgpack.packb({"type": "color"}), "missing field 'v'"),
        (_envelope({}, kind="nope"), "unknown message type"),
        (_envelope({}, v=99), "wire version 99"),
        (msgpack.packb({1: 2}), "msgpack"),
        (msgpack.packb({"type": "color", "v": 1, "seq": -1, "body": {}}), "seq"),
        (_envelope({}, kind="pose"), "missing field"),
        (_envelope({"state": "dancing"}, kind="pose"), "unknown tracking state"),
        (_envelope({"kind": "fake"}, kind="depth"), "unknown depth kind"),
        (_envelope({"blocks": [{"key": [1, 2]}]}, kind="map"), "key"),
        (_envelope({"command": "explode", "target": "*", "stamp_ns": 0}, kind="control"), "unknown command"),
    ],
)
def test_hostile_payloads_raise_wire_error(payload: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode(payload)


def test_limits_are_enforced_before_allocation() -> None:
    frame = _color()
    payload = frame.encode()
    with pytest.raises(WireError, match="exceeds the limit"):
        decode(payload, DecodeLimits(max_message_bytes=len(payload) - 1))
    with pytest.raises(WireError, match=r"exceeds the limit|msgpack"):
        decode(payload, DecodeLimits(max_array_bytes=1000))
    mesh = MapUpdate(0, 0, 0, tuple(
        MeshBlock((i, 0, 0), np.zeros((1, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((1, 3), np.uint8))
        for i in range(20)
    ))
    with pytest.raises(WireError):
        decode(mesh.encode(), DecodeLimits(max_list_items=10))


def test_mesh_face_index_out_of_range() -> None:
    body = {
        "map_seq": 0, "stamp_ns": 0, "frame_id": 0, "is_snapshot": False, "voxel_size_m": 0.01,
        "blocks": [{
            "key": [0, 0, 0], "vertices": encode_array(np.zeros((3, 3), np.float32)),
            "faces": encode_array(np.array([[0, 1, 7]], np.int32)), "colors": encode_array(np.zeros((3, 3), np.uint8)),
        }],
    }
    with pytest.raises(WireError, match="faces index"):
        decode(_envelope(body, kind="map"))


def test_random_mutations_only_ever_raise_wire_error() -> None:
    """Fuzz: flip, truncate and splice bytes of valid payloads; decoding either succeeds or raises WireError."""
    rng = np.random.default_rng(1)
    seeds = [
        _color(8, 8).encode(), _color(8, 8).encode(jpeg_quality=70),
        PoseUpdate(1, 2, np.eye(4), TrackingState.TRACKING).encode(),
        Status("s", 1, "ok", "x", {"a": 1}).encode(),
    ]
    ok = failed = 0
    for i in range(3000):
        data = bytearray(seeds[i % len(seeds)])
        op = rng.integers(0, 3)
        if op == 0:
            for _ in range(rng.integers(1, 8)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        elif op == 1:
            data = data[: rng.integers(0, len(data))]
        else:
            pos = rng.integers(0, len(data))
            data[pos:pos] = rng.integers(0, 256, rng.integers(1, 16)).astype(np.uint8).tobytes()
        try:
            decode(bytes(data), DecodeLimits(max_array_bytes=1 << 20, max_image_side_px=4096))
            ok += 1
        except WireError:
            failed += 1
    assert ok + failed == 3000 and failed > 1000
