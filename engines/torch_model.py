"""The Depth Anything V2 network in PyTorch (transformers' implementation with a shape-dynamic head).

This module imports torch and transformers at import time; other modules import it lazily, inside
functions, so that ``import engines`` never pulls torch in.

transformers' head computes its upsampling size with ``int(patch_h * 14)``; both torch ONNX exporters
turn that into a constant, freezing the output at the export size. :class:`DynamicSizeHead` computes the
same size from tensor shapes instead, so exported graphs keep dynamic height and width. In eager mode the
two heads are numerically identical.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
from transformers.models.depth_anything.modeling_depth_anything import DepthAnythingDepthEstimationHead

from engines.models import ModelArch, ModelSpec
from stream.messages import DepthKind


def hf_config(arch: ModelArch, kind: DepthKind, max_depth_m: float | None) -> DepthAnythingConfig:
    """transformers config for ``arch`` (relative head: ReLU; metric head: sigmoid x ``max_depth_m``)."""
    backbone = Dinov2Config(
        hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio, image_size=arch.pos_grid_px, patch_size=arch.patch_size,
        out_indices=list(arch.out_indices), reshape_hidden_states=False, layerscale_value=1.0,
    )
    metric = kind is DepthKind.METRIC
    if metric and (max_depth_m is None or max_depth_m != int(max_depth_m) or max_depth_m <= 0):
        raise ValueError(f"metric models need a positive whole-metre max_depth_m, got {max_depth_m!r}")
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=arch.patch_size, reassemble_hidden_size=arch.hidden_size,
        neck_hidden_sizes=list(arch.neck_hidden_sizes), fusion_hidden_size=arch.fusion_hidden_size,
        head_hidden_size=arch.head_hidden_size, depth_estimation_type="metric" if metric else "relative",
        max_depth=int(max_depth_m) if metric and max_depth_m is not None else 1,
    )


class DynamicSizeHead(DepthAnythingDepthEstimationHead):
    """The DPT depth head, upsampling to ``(patch_h * 14, patch_w * 14)`` without freezing it into a constant."""

    def forward(self, hidden_states: list[torch.Tensor], patch_height: int, patch_width: int) -> torch.Tensor:
        features = hidden_states[self.head_in_index]
        x = self.conv1(features)
        size = (patch_height * self.patch_size, patch_width * self.patch_size)
        x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)
        x = self.conv3(self.activation1(self.conv2(x)))
        return (self.activation2(x) * self.max_depth).squeeze(dim=1)


class DepthAnythingV2(DepthAnythingForDepthEstimation):
    """Depth Anything V2: ``forward(pixel_values (B, 3, h, w)) -> depth (B, h, w)``; h, w multiples of 14."""

    def __init__(self, config: DepthAnythingConfig) -> None:
        super().__init__(config)
        head = DynamicSizeHead(config)
        head.load_state_dict(self.head.state_dict())
        self.head = head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(pixel_values=pixel_values, return_dict=True).predicted_depth


def build_model(spec: ModelSpec, *, seed: int | None = None) -> DepthAnythingV2:
    """The network of ``spec`` in eval mode, randomly initialised (seeded when ``seed`` is given)."""
    config = hf_config(spec.arch, spec.kind, spec.max_depth_m)
    if seed is None:
        model = DepthAnythingV2(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DepthAnythingV2(config)
    return model.eval()


def num_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of ``model``."""
    return sum(p.numel() for p in model.parameters())
