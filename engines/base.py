"""What every depth engine is (:class:`DepthEngine`) and the network engine built from a backend runner.

A network engine = shared preprocessing -> a backend :class:`Runner` (PyTorch, ONNX Runtime or TensorRT)
-> shared postprocessing -> :class:`DepthFrame`. Backends only run tensors; they never see frames.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from engines.config import InputSizePolicy
from engines.errors import EngineInputError
from engines.models import ModelSpec
from engines.processing import DepthRange, depth_frame, postprocess, preprocess
from stream.messages import ColorFrame, DepthFrame, DepthKind

log = logging.getLogger(__name__)


class DepthEngine(Protocol):
    """Turns colour frames into depth frames."""

    @property
    def name(self) -> str:
        """``model/backend``, e.g. ``small/ort-cpu``; used in logs and status messages."""
        ...

    @property
    def size_policy(self) -> InputSizePolicy | None:
        """How the network input size follows from the frame size (``None``: no network)."""
        ...

    def warm_up(self, width_px: int, height_px: int, runs: int = 1) -> None:
        """Run ``runs`` inferences on a synthetic frame of this size (builds kernels, engines, caches)."""
        ...

    def infer(self, frame: ColorFrame) -> DepthFrame:
        """Depth for ``frame``, same size as its image; raises :class:`EngineInputError` for bad frames."""
        ...

    def close(self) -> None:
        """Release the backend; safe to call twice."""
        ...


class Runner(Protocol):
    """A backend that runs the network on preprocessed tensors."""

    @property
    def name(self) -> str:
        """Backend name, e.g. ``ort-cpu``."""
        ...

    @property
    def num_parameters(self) -> int | None:
        """Number of network parameters (for reports); None when it cannot be counted."""
        ...

    def run(self, pixel_values: np.ndarray) -> np.ndarray:
        """(1, 3, h, w) float32 -> (h', w') float32 raw output (h' = h, w' = w for dynamic graphs)."""
        ...

    def close(self) -> None:
        """Release memory and devices; safe to call twice."""
        ...


def synthetic_frame(width_px: int, height_px: int, frame_id: int = 0) -> ColorFrame:
    """A smooth RGB test pattern (for warm-up and benchmarks)."""
    if width_px <= 0 or height_px <= 0:
        raise EngineInputError(f"warm-up frame size must be positive, got {width_px}x{height_px}")
    ys, xs = np.mgrid[0:height_px, 0:width_px]
    image = np.stack(
        [xs * 255 // max(width_px - 1, 1), ys * 255 // max(height_px - 1, 1), (xs + ys) % 256], axis=-1
    ).astype(np.uint8)
    return ColorFrame(frame_id=frame_id, stamp_ns=0, image=image, source="synthetic")


class NetworkDepthEngine:
    """A Depth Anything network on one backend: preprocess -> runner -> postprocess -> DepthFrame."""

    def __init__(
        self, runner: Runner, spec: ModelSpec, size_policy: InputSizePolicy, depth_range: DepthRange,
        *, label: str | None = None,
    ) -> None:
        self._runner = runner
        self.spec = spec
        self._policy = size_policy
        self._range = depth_range
        self._label = label or spec.title
        self._warned_fixed_output = False
        self._closed = False

    @property
    def name(self) -> str:
        return f"{self.spec.name}/{self._runner.name}"

    @property
    def backend(self) -> str:
        return self._runner.name

    @property
    def size_policy(self) -> InputSizePolicy:
        return self._policy

    @property
    def kind(self) -> DepthKind:
        return self.spec.kind

    @property
    def num_parameters(self) -> int | None:
        return self._runner.num_parameters

    def with_size_policy(self, size_policy: InputSizePolicy) -> NetworkDepthEngine:
        """The same network and backend (shared, not copied) with another input size policy."""
        return NetworkDepthEngine(self._runner, self.spec, size_policy, self._range, label=self._label)

    def infer(self, frame: ColorFrame) -> DepthFrame:
        if not isinstance(frame, ColorFrame):
            raise EngineInputError(f"infer() takes a ColorFrame, got {type(frame).__name__}")
        if self._closed:
            raise RuntimeError(f"engine {self.name} is closed")
        net_in = preprocess(frame.image, self._policy)
        raw = self._runner.run(net_in.pixel_values)
        expected = (net_in.size.height_px, net_in.size.width_px)
        if tuple(np.shape(raw)[-2:]) != expected and not self._warned_fixed_output:
            self._warned_fixed_output = True
            log.warning(
                "%s: network output %s for input %s: this ONNX graph has a fixed output size; "
                "export it here (depthslam export %s) for a truly dynamic one", self.name,
                tuple(np.shape(raw)[-2:]), expected, self.spec.name,
            )
        depth = postprocess(raw, net_in.frame_width_px, net_in.frame_height_px, self.spec.kind, self._range)
        return depth_frame(frame, depth, self.spec.kind, self._label)

    def warm_up(self, width_px: int, height_px: int, runs: int = 1) -> None:
        frame = synthetic_frame(width_px, height_px)
        for _ in range(runs):
            self.infer(frame)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._runner.close()


class PassThroughEngine:
    """Forwards the depth a source already carries (``ColorFrame.depth_m``) as a METRIC depth frame."""

    name = "passthrough"
    size_policy = None

    def __init__(self, label: str = "passthrough") -> None:
        self._label = label

    def infer(self, frame: ColorFrame) -> DepthFrame:
        if not isinstance(frame, ColorFrame):
            raise EngineInputError(f"infer() takes a ColorFrame, got {type(frame).__name__}")
        if frame.depth_m is None:
            raise EngineInputError(
                f"frame {frame.frame_id} from source {frame.source or '(unnamed)'} carries no depth; the passthrough "
                "engine needs an RGB-D source (e.g. a TUM RGB-D sequence) or choose a depth model"
            )
        depth = np.array(frame.depth_m, dtype=np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth < 0.0)] = 0.0
        return depth_frame(frame, depth, DepthKind.METRIC, self._label)

    def warm_up(self, width_px: int, height_px: int, runs: int = 1) -> None:
        """Nothing to warm up."""

    def close(self) -> None:
        """Nothing to release."""
