"""Loading weights: safetensors, .pth in three layouts, from the (local) hub, and clear errors."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import pytest

from engines.errors import WeightsFormatError, WeightsUnavailableError
from engines.hub import HubConfig
from engines.models import ModelArch, ModelSpec

torch = pytest.importorskip("torch", reason="loading checkpoints needs PyTorch")
from safetensors.torch import save_file  # noqa: E402

from engines.weights import load_model  # noqa: E402


def _same_outputs(a, b) -> bool:
    x = torch.randn(1, 3, 42, 70, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        return bool(torch.equal(a(x), b(x)))


def _legacy_names(state: dict) -> dict:
    """transformers' older DINOv2 attention names."""
    renames = (("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
               ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."))
    out = {}
    for key, value in state.items():
        for new, old in renames:
            key = key.replace(new, old)
        out[key] = value
    return out


def _original_layout(state: dict, num_layers: int) -> dict:
    """The original Depth Anything V2 checkpoint layout (written independently of engines.weights)."""
    out = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    fusion = {0: 4, 1: 3, 2: 2, 3: 1}  # fusion layer -> refinenet number
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("backbone.encoder.layer."):
            i, rest = int(parts[3]), ".".join(parts[4:])
            if rest.startswith("attention.") and parts[5] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((i, parts[6]), {})[parts[5]] = value
                continue
            rest = (rest.replace("attention.o_proj.", "attn.proj.").replace("layer_scale1.lambda1", "ls1.gamma")
                    .replace("layer_scale2.lambda1", "ls2.gamma"))
            out[f"pretrained.blocks.{i}.{rest}"] = value
        elif key.startswith("backbone.embeddings."):
            name = {"cls_token": "cls_token", "mask_token": "mask_token", "position_embeddings": "pos_embed"}.get(
                parts[2], f"patch_embed.proj.{parts[-1]}")
            out[f"pretrained.{name}"] = value
        elif key.startswith("backbone.layernorm."):
            out[f"pretrained.norm.{parts[-1]}"] = value
        elif key.startswith("neck.reassemble_stage.layers."):
            kind = "projects" if parts[4] == "projection" else "resize_layers"
            out[f"depth_head.{kind}.{parts[3]}.{parts[-1]}"] = value
        elif key.startswith("neck.convs."):
            out[f"depth_head.scratch.layer{int(parts[2]) + 1}_rn.{parts[-1]}"] = value
        elif key.startswith("neck.fusion_stage.layers."):
            n = fusion[int(parts[3])]
            if parts[4] == "projection":
                out[f"depth_head.scratch.refinenet{n}.out_conv.{parts[-1]}"] = value
            else:
                unit = parts[4][-1]
                conv = parts[5][-1]
                out[f"depth_head.scratch.refinenet{n}.resConfUnit{unit}.conv{conv}.{parts[-1]}"] = value
        elif key.startswith("head."):
            name = {"conv1": "output_conv1", "conv2": "output_conv2.0", "conv3": "output_conv2.2"}[parts[1]]
            out[f"depth_head.scratch.{name}.{parts[-1]}"] = value
        else:
            raise AssertionError(f"test mapping misses {key}")
    for (i, part), d in qkv.items():
        out[f"pretrained.blocks.{i}.attn.qkv.{part}"] = torch.cat([d["q_proj"], d["k_proj"], d["v_proj"]], dim=0)
    assert len([k for k in out if ".attn.qkv." in k]) == 2 * num_layers
    return out


def test_safetensors_roundtrip(tiny_model, tiny_spec: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    loaded = load_model(tiny_spec, hub=HubConfig(cache_dir=tmp_path, offline=True), weights=path)
    assert _same_outputs(loaded, tiny_model)


def test_pth_with_legacy_names_and_wrapper(tiny_model, tiny_spec: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    state = _legacy_names(tiny_model.state_dict())
    assert any("attention.attention.query" in k for k in state)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_model(tiny_spec, hub=HubConfig(cache_dir=tmp_path, offline=True), weights=path)
    assert _same_outputs(loaded, tiny_model)


def test_pth_in_original_depth_anything_layout(tiny_model, tiny_spec: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(_original_layout(tiny_model.state_dict(), tiny_spec.arch.num_layers), path)
    loaded = load_model(tiny_spec, hub=HubConfig(cache_dir=tmp_path, offline=True), weights=path)
    assert _same_outputs(loaded, tiny_model)


def test_mismatched_checkpoints_are_refused(tiny_model, tiny_spec: ModelSpec, tmp_path: Path) -> None:
    hub = HubConfig(cache_dir=tmp_path, offline=True)
    other = replace(tiny_spec, arch=ModelArch(32, 4, 2, (1, 2, 3, 4), (8, 16, 32, 32), 24, head_hidden_size=8))
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    with pytest.raises(WeightsFormatError, match="wrong shape"):
        load_model(other, hub=hub, weights=path)
    extra = tmp_path / "extra.pth"
    torch.save({**tiny_model.state_dict(), "decoder.bias": torch.zeros(3)}, extra)
    with pytest.raises(WeightsFormatError, match=re.escape("1 unexpected, e.g. ['decoder.bias']")):
        load_model(tiny_spec, hub=hub, weights=extra)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in tiny_model.state_dict().items() if not k.startswith("head.")}, partial)
    with pytest.raises(WeightsFormatError, match="6 missing"):
        load_model(tiny_spec, hub=hub, weights=partial)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsFormatError, match="not a valid safetensors"):
        load_model(tiny_spec, hub=hub, weights=garbage)
    with pytest.raises(WeightsFormatError, match="checkpoint"):
        load_model(tiny_spec, hub=hub, weights=tmp_path / "model.bin")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_model(tiny_spec, hub=hub, weights=tmp_path / "absent.pth")


def test_checkpoint_from_the_hub(hub_server, tiny_model, tiny_metric_spec: ModelSpec, tmp_path: Path) -> None:
    from engines.torch_model import build_model

    metric = build_model(tiny_metric_spec, seed=4)
    data = tmp_path / "metric.safetensors"
    save_file({k: v.contiguous() for k, v in metric.state_dict().items()}, str(data))
    assert tiny_metric_spec.checkpoint is not None
    offline = HubConfig(base_url=hub_server.url, cache_dir=tmp_path / "cache", offline=True)
    url = f"{hub_server.url}/test-org/tiny-metric-hf/resolve/main/model.safetensors"
    with pytest.raises(WeightsUnavailableError, match=re.escape(url)):
        load_model(tiny_metric_spec, hub=offline)
    hub_server.add(tiny_metric_spec.checkpoint, data.read_bytes())
    progress = io.StringIO()
    loaded = load_model(tiny_metric_spec, hub=hub_server.config(tmp_path / "cache"), progress=progress)
    assert _same_outputs(loaded, metric)
    assert "tiny-metric: weights licensed" in progress.getvalue() and "100.0%" in progress.getvalue()
    again = load_model(tiny_metric_spec, hub=offline)  # cached: offline is fine now
    assert _same_outputs(again, metric) and len(hub_server.requests) == 1
