"""Configuration of the depth engines: backend names, the input size policy and :class:`EngineConfig`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import EngineInputError
from engines.hub import HubConfig


class Backend(enum.StrEnum):
    """Where the network runs. ``AUTO`` is resolved once, by :func:`engines.select.choose_backend`."""

    AUTO = "auto"
    TENSORRT = "tensorrt"
    ORT_CUDA = "ort-cuda"
    ORT_CPU = "ort-cpu"
    TORCH_CUDA = "torch-cuda"
    TORCH_CPU = "torch-cpu"

    @property
    def uses_cuda(self) -> bool:
        return self in (Backend.TENSORRT, Backend.ORT_CUDA, Backend.TORCH_CUDA)

    @property
    def needs_onnx(self) -> bool:
        return self in (Backend.TENSORRT, Backend.ORT_CUDA, Backend.ORT_CPU)


class ResizeMode(enum.StrEnum):
    """How a frame is scaled to the network input (aspect ratio is always kept)."""

    LOWER_BOUND = "lower_bound"
    """The shorter side becomes ``target_px`` (the model authors' default; larger inputs)."""
    UPPER_BOUND = "upper_bound"
    """The longer side becomes ``target_px`` (cheaper; for real-time use)."""


class Exporter(enum.StrEnum):
    """Which torch ONNX exporter writes exported graphs."""

    TORCHSCRIPT = "torchscript"
    """``torch.onnx.export(dynamo=False)``: fast to export; ONNX Runtime CPU runs it fastest."""
    DYNAMO = "dynamo"
    """``torch.onnx.export(dynamo=True)`` (torch.export based)."""


@dataclass(frozen=True)
class NetworkSize:
    """Network input size in pixels (both multiples of the patch size)."""

    width_px: int
    height_px: int


@dataclass(frozen=True)
class InputSizePolicy:
    """How the network input size follows from a frame's size.

    Each side is scaled by the same factor, then rounded to the nearest multiple of ``multiple_px`` (halves
    to even, like the reference implementation's ``np.round``); a side
    that should meet ``target_px`` (the shorter one for ``LOWER_BOUND``, the longer one for ``UPPER_BOUND``)
    is rounded up/down instead when nearest rounding would cross the target, as in the reference code.
    """

    target_px: int = 518
    """Size of the bounding side of the network input, pixels (518 is the training resolution)."""
    mode: ResizeMode = ResizeMode.LOWER_BOUND
    """Which side meets ``target_px``."""
    multiple_px: int = 14
    """Every network side is a multiple of this (the ViT patch size)."""
    max_network_side_px: int = 2058
    """Largest network side accepted; extreme aspect ratios that exceed it are rejected."""
    max_image_side_px: int = 16384
    """Largest frame side accepted."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ResizeMode):
            raise ValueError(f"InputSizePolicy.mode must be a ResizeMode, got {self.mode!r}")
        if self.multiple_px < 1:
            raise ValueError(f"InputSizePolicy.multiple_px must be >= 1, got {self.multiple_px}")
        if self.target_px < self.multiple_px:
            raise ValueError(
                f"InputSizePolicy.target_px must be >= multiple_px ({self.multiple_px}), got {self.target_px}"
            )
        if self.max_network_side_px < self.target_px:
            raise ValueError(
                f"InputSizePolicy.max_network_side_px ({self.max_network_side_px}) is below target_px "
                f"({self.target_px})"
            )
        if self.max_image_side_px < 1:
            raise ValueError(f"InputSizePolicy.max_image_side_px must be >= 1, got {self.max_image_side_px}")

    def network_size(self, width_px: int, height_px: int) -> NetworkSize:
        """Network input size for a ``width_px`` x ``height_px`` frame (exact integer arithmetic)."""
        if width_px <= 0 or height_px <= 0:
            raise EngineInputError(f"image size must be positive, got {width_px}x{height_px}")
        if max(width_px, height_px) > self.max_image_side_px:
            raise EngineInputError(
                f"image of {width_px}x{height_px} px exceeds the largest accepted side of "
                f"{self.max_image_side_px} px (InputSizePolicy.max_image_side_px)"
            )
        ref = min(width_px, height_px) if self.mode is ResizeMode.LOWER_BOUND else max(width_px, height_px)
        out = (self._side(width_px, ref), self._side(height_px, ref))
        if max(out) > self.max_network_side_px:
            raise EngineInputError(
                f"image of {width_px}x{height_px} px would need a network input of {out[0]}x{out[1]} px "
                f"(target {self.target_px}, {self.mode.value}), beyond max_network_side_px="
                f"{self.max_network_side_px}: the aspect ratio is too extreme; crop the image first"
            )
        return NetworkSize(*out)

    def _side(self, side_px: int, ref_px: int) -> int:
        # the scaled side is side_px * target / ref_px; in units of multiple_px: num / den
        m = self.multiple_px
        num, den = side_px * self.target_px, ref_px * m
        units, rem = divmod(num, den)
        if 2 * rem > den or (2 * rem == den and units % 2 == 1):  # nearest, halves to even (as numpy.round)
            units += 1
        if self.mode is ResizeMode.LOWER_BOUND and units * m < self.target_px:
            units = -(-num // den)
        elif self.mode is ResizeMode.UPPER_BOUND and units * m > self.target_px:
            units = num // den
        return max(units, 1) * m


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to build one depth engine (see :func:`engines.select.create_engine`)."""

    model: str = "small"
    """Model table name (``small``, ``base``, ``large``, ``metric-indoor-small``, ...) or ``passthrough``."""
    backend: Backend = Backend.AUTO
    """Backend; ``AUTO`` picks TensorRT, then ONNX Runtime CUDA, then PyTorch CUDA, then ONNX Runtime CPU."""
    weights: Path | None = None
    """Local weights (.onnx, .safetensors, .pth/.pt) instead of the hub; ``None`` uses the hub and cache."""
    random_weights: bool = False
    """Use the real architecture with random initialisation (benchmarks, tests); downloads nothing."""
    seed: int = 0
    """Seed of the random initialisation when ``random_weights`` is set."""
    size: InputSizePolicy = field(default_factory=InputSizePolicy)
    """Network input size policy."""
    fp16: bool = False
    """PyTorch CUDA only: run the network in half precision."""
    trt_fp16: bool = True
    """TensorRT: allow FP16 kernels when building the engine."""
    num_threads: int | None = None
    """CPU threads for PyTorch/ONNX Runtime (``None`` keeps the library default)."""
    min_depth_m: float = 0.0
    """Metric models: depths at or below this are marked invalid (0)."""
    max_depth_m: float | None = None
    """Metric models: depths above this are marked invalid (``None``: the model's own ceiling)."""
    prefer_hub_onnx: bool = True
    """ONNX backends: use the hub's ONNX export when the model table lists one (else export here)."""
    exporter: Exporter = Exporter.TORCHSCRIPT
    """Exporter used when an ONNX file has to be exported here."""
    hub: HubConfig = field(default_factory=HubConfig.from_env)
    """Hub URL, cache directory and offline switch (default: ``DEPTHSLAM_HUB_URL``/``_CACHE_DIR``/``_OFFLINE``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.backend, Backend):
            raise ValueError(f"EngineConfig.backend must be a Backend, got {self.backend!r}")
        if not isinstance(self.exporter, Exporter):
            raise ValueError(f"EngineConfig.exporter must be an Exporter, got {self.exporter!r}")
        if self.weights is not None and not isinstance(self.weights, Path):
            raise ValueError(f"EngineConfig.weights must be a pathlib.Path or None, got {self.weights!r}")
        if self.weights is not None and self.random_weights:
            raise ValueError("EngineConfig: give either weights or random_weights, not both")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"EngineConfig.num_threads must be >= 1 or None, got {self.num_threads}")
        if self.min_depth_m < 0:
            raise ValueError(f"EngineConfig.min_depth_m must be >= 0, got {self.min_depth_m}")
        if self.max_depth_m is not None and not self.max_depth_m > self.min_depth_m:
            raise ValueError(
                f"EngineConfig.max_depth_m ({self.max_depth_m}) must exceed min_depth_m ({self.min_depth_m})"
            )
        if self.fp16 and self.backend not in (Backend.AUTO, Backend.TORCH_CUDA):
            raise ValueError(
                f"EngineConfig.fp16 applies to the torch-cuda backend only (TensorRT uses trt_fp16), "
                f"got backend {self.backend.value}"
            )
