"""Weights: where they come from (local file, hub cache, random) and how they are loaded into the network.

Accepted local files: ``.onnx`` (ONNX backends only), ``.safetensors`` and ``.pth``/``.pt`` state dicts.
State dicts may use transformers' current layout, its older attention naming
(``attention.attention.query`` ...), or the original Depth Anything V2 layout (``pretrained.*`` /
``depth_head.*``, fused ``qkv``); all are mapped onto the network's own parameter names, and anything that
does not fit raises :class:`WeightsFormatError` naming the offending tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engines.errors import WeightsFormatError, WeightsUnavailableError
from engines.hub import HubConfig, fetch
from engines.models import ModelSpec

if TYPE_CHECKING:
    import torch

    from engines.torch_model import DepthAnythingV2

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt")
ONNX_SUFFIX = ".onnx"

# transformers renamed DINOv2's attention projections; both spellings map to the current one.
_LEGACY_HF_NAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)

# original Depth Anything V2 checkpoint names -> transformers names (qkv is split separately);
# a rule's replacement is a re.sub template or, where an index is renumbered, a function of the match
_LAYER = "backbone.encoder.layer."
_FUSION = "neck.fusion_stage.layers."
_ORIGINAL_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^pretrained\.cls_token$", "backbone.embeddings.cls_token"),
        (r"^pretrained\.mask_token$", "backbone.embeddings.mask_token"),
        (r"^pretrained\.pos_embed$", "backbone.embeddings.position_embeddings"),
        (r"^pretrained\.patch_embed\.proj\.(\w+)$", r"backbone.embeddings.patch_embeddings.projection.\1"),
        (r"^pretrained\.blocks\.(\d+)\.norm([12])\.(\w+)$", _LAYER + r"\1.norm\2.\3"),
        (r"^pretrained\.blocks\.(\d+)\.ls([12])\.gamma$", _LAYER + r"\1.layer_scale\2.lambda1"),
        (r"^pretrained\.blocks\.(\d+)\.mlp\.(fc[12])\.(\w+)$", _LAYER + r"\1.mlp.\2.\3"),
        (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.(\w+)$", _LAYER + r"\1.attention.o_proj.\2"),
        (r"^pretrained\.norm\.(\w+)$", r"backbone.layernorm.\1"),
        (r"^depth_head\.projects\.(\d)\.(\w+)$", r"neck.reassemble_stage.layers.\1.projection.\2"),
        (r"^depth_head\.resize_layers\.(\d)\.(\w+)$", r"neck.reassemble_stage.layers.\1.resize.\2"),
        (r"^depth_head\.scratch\.layer([1-4])_rn\.(\w+)$", lambda m: f"neck.convs.{int(m[1]) - 1}.{m[2]}"),
        (r"^depth_head\.scratch\.refinenet([1-4])\.out_conv\.(\w+)$",
         lambda m: f"{_FUSION}{4 - int(m[1])}.projection.{m[2]}"),
        (r"^depth_head\.scratch\.refinenet([1-4])\.resConfUnit([12])\.conv([12])\.(\w+)$",
         lambda m: f"{_FUSION}{4 - int(m[1])}.residual_layer{m[2]}.convolution{m[3]}.{m[4]}"),
        (r"^depth_head\.scratch\.output_conv1\.(\w+)$", r"head.conv1.\1"),
        (r"^depth_head\.scratch\.output_conv2\.0\.(\w+)$", r"head.conv2.\1"),
        (r"^depth_head\.scratch\.output_conv2\.2\.(\w+)$", r"head.conv3.\1"),
    )
)
_QKV = re.compile(r"^pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")


def canonical_key(key: str) -> str:
    """A parameter name in transformers' current spelling (legacy attention names renamed)."""
    for old, new in _LEGACY_HF_NAMES:
        key = key.replace(old, new)
    return key


def is_original_layout(keys: Iterable[str]) -> bool:
    """True for state dicts written by the original Depth Anything V2 code."""
    return any(k.startswith(("pretrained.", "depth_head.")) for k in keys)


def convert_original_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """Original Depth Anything V2 names -> transformers names; fused ``qkv`` is split into q/k/v."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in state.items():
        qkv = _QKV.match(key)
        if qkv is not None:
            layer, part = qkv[1], qkv[2]
            if value.shape[0] % 3:
                raise WeightsFormatError(f"{key}: fused qkv of shape {tuple(value.shape)} is not divisible by 3")
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{_LAYER}{layer}.attention.{name}.{part}"] = chunk
            continue
        for pattern, replacement in _ORIGINAL_RULES:
            match = pattern.match(key)
            if match is not None:
                out[replacement(match) if callable(replacement) else match.expand(replacement)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightsFormatError(
            f"{len(unknown)} tensors of the original-layout checkpoint have no place in the network, e.g. "
            f"{unknown[:5]}"
        )
    return out


def match_state_dict(state: Mapping[str, Any], model_state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` renamed to ``model_state``'s keys; raises :class:`WeightsFormatError` on any mismatch."""
    cleaned = {k.removeprefix("module."): v for k, v in state.items()}
    if is_original_layout(cleaned):
        cleaned = convert_original_state_dict(cleaned)
    by_canonical = {canonical_key(k): k for k in model_state}
    out: dict[str, Any] = {}
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    wrong_targets: set[str] = set()
    for key, value in cleaned.items():
        target = by_canonical.get(canonical_key(key))
        if target is None:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(model_state[target].shape):
            wrong_shape.append(f"{key}: {tuple(value.shape)} vs {tuple(model_state[target].shape)}")
            wrong_targets.add(target)
            continue
        out[target] = value
    missing = [k for k in model_state if k not in out and k not in wrong_targets]
    if unexpected or wrong_shape or missing:
        parts = []
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} with the wrong shape (checkpoint vs network), e.g. {wrong_shape[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
        raise WeightsFormatError(
            "checkpoint does not fit the network (is it the right model size / type?): " + "; ".join(parts)
        )
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file (``{"state_dict": ...}``/``{"model": ...}`` unwrapped)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise WeightsFormatError(f"{path} is not a valid safetensors file: {exc}") from exc
    if suffix in (".pth", ".pt"):
        import pickle

        import torch

        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise WeightsFormatError(f"{path} is not a loadable PyTorch state dict: {exc}") from exc
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise WeightsFormatError(f"{path} does not hold a state dict (name -> tensor)")
        return loaded
    raise WeightsFormatError(
        f"{path}: unsupported weights file type {suffix!r} (use {', '.join(CHECKPOINT_SUFFIXES)} or {ONNX_SUFFIX})"
    )


def checkpoint_file(
    spec: ModelSpec, hub: HubConfig, weights: Path | None, *, progress: TextIO | None,
) -> Path:
    """The state-dict file for ``spec``: ``weights`` when given, else the hub checkpoint (fetched if needed)."""
    if weights is not None:
        if weights.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise WeightsFormatError(
                f"{weights}: the PyTorch backend needs a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), "
                f"not {weights.suffix!r}; ONNX files run on the ort-cpu, ort-cuda and tensorrt backends"
            )
        if not weights.is_file():
            raise WeightsUnavailableError(f"weights file {weights} does not exist")
        return weights
    if spec.checkpoint is None:
        raise WeightsUnavailableError(
            f"model {spec.name!r} has no published weights; use random weights (--random-weights) or --weights"
        )
    return fetch(spec.checkpoint, hub, progress=progress, notice=spec.licence_notice()).path


def load_model(
    spec: ModelSpec, *, hub: HubConfig, weights: Path | None = None, random_weights: bool = False, seed: int = 0,
    progress: TextIO | None = None,
) -> DepthAnythingV2:
    """The PyTorch network of ``spec`` in eval mode, with weights from ``weights``, the hub, or random."""
    from engines.torch_model import build_model

    if random_weights:
        return build_model(spec, seed=seed)
    path = checkpoint_file(spec, hub, weights, progress=progress)
    state = read_state_dict(path)
    model = build_model(spec)
    try:
        matched = match_state_dict(state, model.state_dict())
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{path} for model {spec.name!r}: {exc}") from exc
    model.load_state_dict(matched, strict=True)
    return model.eval()
