"""The model table: Depth Anything V2 relative and metric models, their architecture, hub files and licence.

Nothing is downloaded or imported here; :mod:`engines.weights` fetches files on demand.

Architectures follow the published checkpoints (DINOv2 ViT-S/B/L backbone + DPT head). Depth Anything V2
takes the backbone's intermediate layers 3, 6, 9, 12 (ViT-L: 5, 12, 18, 24) — transformers' default
``out_indices`` (the last four layers) are Depth Anything V1's.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.hub import HubFile
from stream.messages import DepthKind

APACHE_2_0 = "Apache-2.0"
CC_BY_NC_4_0 = "CC-BY-NC-4.0"


@dataclass(frozen=True)
class ModelArch:
    """Architecture hyper-parameters of a Depth Anything (V2) network."""

    hidden_size: int
    """ViT embedding width."""
    num_layers: int
    """Number of ViT blocks."""
    num_heads: int
    """Attention heads per block."""
    out_indices: tuple[int, ...]
    """Backbone hidden states fed to the DPT neck (0 = embeddings, i = output of block i)."""
    neck_hidden_sizes: tuple[int, ...]
    """Channels of the four reassembled feature maps."""
    fusion_hidden_size: int
    """Channels of the fusion stage."""
    head_hidden_size: int = 32
    """Channels of the head's second convolution."""
    patch_size: int = 14
    """ViT patch size; network inputs are multiples of it."""
    pos_grid_px: int = 518
    """Image size the position embeddings were trained for (they are interpolated for other sizes)."""
    mlp_ratio: int = 4
    """MLP width / embedding width."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if len(self.out_indices) != 4 or len(self.neck_hidden_sizes) != 4:
            raise ValueError("Depth Anything uses exactly four backbone stages (out_indices, neck_hidden_sizes)")
        if sorted(set(self.out_indices)) != list(self.out_indices) or not (
            self.out_indices[0] >= 1 and self.out_indices[-1] <= self.num_layers
        ):
            raise ValueError(f"out_indices must be increasing within 1..{self.num_layers}, got {self.out_indices}")
        if self.pos_grid_px % self.patch_size:
            raise ValueError(f"pos_grid_px {self.pos_grid_px} must be a multiple of patch_size {self.patch_size}")


ARCH_SMALL = ModelArch(384, 12, 6, (3, 6, 9, 12), (48, 96, 192, 384), 64)
"""ViT-S/14 backbone (24.8M parameters in total)."""
ARCH_BASE = ModelArch(768, 12, 12, (3, 6, 9, 12), (96, 192, 384, 768), 128)
"""ViT-B/14 backbone (97.5M parameters)."""
ARCH_LARGE = ModelArch(1024, 24, 16, (5, 12, 18, 24), (256, 512, 1024, 1024), 256)
"""ViT-L/14 backbone (335.3M parameters)."""
ARCH_TEST_TINY = ModelArch(32, 4, 2, (1, 2, 3, 4), (8, 16, 32, 32), 16, head_hidden_size=8)
"""A tiny network with the same structure, for smoke tests and unit tests (random weights only)."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model table."""

    name: str
    """Short name used on the command line, e.g. ``small`` or ``metric-indoor-base``."""
    title: str
    """Human-readable name, carried in ``DepthFrame.model``."""
    arch: ModelArch
    """Network architecture."""
    kind: DepthKind
    """What the output means: affine-invariant inverse depth or metres."""
    licence: str
    """Licence of the weights (SPDX id)."""
    checkpoint: HubFile | None
    """transformers-layout safetensors on the hub (``None``: random weights only)."""
    onnx: HubFile | None = None
    """A ready ONNX export on the hub, where one exists."""
    max_depth_m: float | None = None
    """Metric models: the output ceiling (sigmoid x max depth); ``None`` for relative models."""
    note: str = ""
    """Training data / intended use."""

    def __post_init__(self) -> None:
        if (self.kind is DepthKind.METRIC) != (self.max_depth_m is not None):
            raise ValueError(f"model {self.name!r}: metric models need max_depth_m, relative models must not set it")

    @property
    def non_commercial(self) -> bool:
        return self.licence == CC_BY_NC_4_0

    def licence_notice(self) -> str:
        """The text shown before the weights are downloaded for the first time."""
        text = f"{self.title}: weights licensed {self.licence}"
        if self.non_commercial:
            text += " (non-commercial use only)"
        return text + (f"; {self.note}" if self.note else "")


_ENCODERS = (("small", "Small", ARCH_SMALL, APACHE_2_0), ("base", "Base", ARCH_BASE, CC_BY_NC_4_0),
             ("large", "Large", ARCH_LARGE, CC_BY_NC_4_0))


def _table() -> dict[str, ModelSpec]:
    table: dict[str, ModelSpec] = {}
    for short, title, arch, licence in _ENCODERS:
        table[short] = ModelSpec(
            name=short, title=f"depth-anything-v2-{short}", arch=arch, kind=DepthKind.INVERSE_RELATIVE,
            licence=licence, checkpoint=HubFile(f"depth-anything/Depth-Anything-V2-{title}-hf", "model.safetensors"),
            onnx=HubFile(f"onnx-community/depth-anything-v2-{short}", "onnx/model.onnx"),
            note="relative (affine-invariant inverse) depth",
        )
        for scene, max_depth_m, data in (("indoor", 20.0, "Hypersim"), ("outdoor", 80.0, "Virtual KITTI 2")):
            name = f"metric-{scene}-{short}"
            table[name] = ModelSpec(
                name=name, title=f"depth-anything-v2-{name}", arch=arch, kind=DepthKind.METRIC, licence=licence,
                checkpoint=HubFile(
                    f"depth-anything/Depth-Anything-V2-Metric-{scene.capitalize()}-{title}-hf", "model.safetensors"
                ),
                max_depth_m=max_depth_m, note=f"metric depth in metres up to {max_depth_m:g} m, trained on {data}",
            )
    table["test-tiny"] = ModelSpec(
        name="test-tiny", title="test-tiny", arch=ARCH_TEST_TINY, kind=DepthKind.INVERSE_RELATIVE,
        licence="none (random weights)", checkpoint=None, note="tiny random network for smoke tests",
    )
    return table


MODELS: dict[str, ModelSpec] = _table()
"""Every known model by short name."""

PASSTHROUGH = "passthrough"
"""Model name of the engine that forwards a source's own depth (``ColorFrame.depth_m``)."""


def get_model_spec(name: str) -> ModelSpec:
    """The table entry for ``name``; raises ValueError listing the known names."""
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join([*MODELS, PASSTHROUGH])
        raise ValueError(f"unknown depth model {name!r}; known models: {known}")
    return spec
