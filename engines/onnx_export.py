"""ONNX export with truly dynamic height/width, verified against PyTorch, and the ONNX file resolver.

The export traces :class:`engines.torch_model.DepthAnythingV2` (whose head takes its output size from
tensor shapes) with a *non-square* sample, so neither the position-embedding interpolation nor the head
can be specialised to one size; the written graph is then run by ONNX Runtime at sizes other than the
sample's and compared with PyTorch before it is moved into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from engines.config import EngineConfig, Exporter
from engines.errors import BackendUnavailableError, ExportError, WeightsUnavailableError
from engines.hub import fetch
from engines.models import ModelSpec
from engines.weights import CHECKPOINT_SUFFIXES, ONNX_SUFFIX, load_model

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "predicted_depth"


@dataclass(frozen=True)
class ExportConfig:
    """How a network is exported to ONNX."""

    exporter: Exporter = Exporter.TORCHSCRIPT
    """Which torch exporter to use."""
    opset: int = 17
    """ONNX opset (TorchScript exporter; the dynamo exporter picks its own, at least 18)."""
    sample_width_px: int = 280
    """Width of the tracing sample; must differ from its height (a square sample can specialise)."""
    sample_height_px: int = 196
    """Height of the tracing sample."""
    verify_sizes: tuple[tuple[int, int], ...] = ((182, 126), (98, 168))
    """(width, height) inputs at which ONNX Runtime must reproduce PyTorch; empty skips verification."""
    max_rel_error: float = 1e-3
    """Largest accepted max |onnx - torch| / max |torch| over the verification sizes."""

    def __post_init__(self) -> None:
        if not isinstance(self.exporter, Exporter):
            raise ValueError(f"ExportConfig.exporter must be an Exporter, got {self.exporter!r}")
        if self.sample_width_px == self.sample_height_px:
            raise ValueError("ExportConfig: the tracing sample must not be square (it would freeze the aspect)")
        sizes = ((self.sample_width_px, self.sample_height_px), *self.verify_sizes)
        if any(w <= 0 or h <= 0 or w % 14 or h % 14 for w, h in sizes):
            raise ValueError(f"ExportConfig: sample and verification sizes must be positive multiples of 14: {sizes}")
        if not 11 <= self.opset <= 23:
            raise ValueError(f"ExportConfig.opset must be in 11..23, got {self.opset}")
        if not self.max_rel_error > 0:
            raise ValueError(f"ExportConfig.max_rel_error must be positive, got {self.max_rel_error}")


@dataclass(frozen=True)
class ExportResult:
    """A written, verified ONNX file."""

    path: Path
    """The ONNX file (weights embedded)."""
    exporter: Exporter
    """Exporter that wrote it."""
    seconds: float
    """Export + verification wall time."""
    num_parameters: int
    """Parameters of the exported network."""
    max_rel_error: float | None
    """Largest relative deviation from PyTorch over the verification sizes (None: not verified)."""


def export_onnx(model: nn.Module, out_path: Path, config: ExportConfig = ExportConfig()) -> ExportResult:
    """Export ``model`` (``(B, 3, h, w) -> (B, h, w)``) to ``out_path`` with dynamic batch, height and width.

    The file is written next to ``out_path`` under a temporary name, verified, then renamed, so a failed
    or interrupted export never leaves a broken file behind. Raises :class:`ExportError`.
    """
    import torch

    from engines.torch_model import num_parameters

    start = time.monotonic()
    model = model.eval().float().cpu()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=out_path.name + ".", suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        gen = torch.Generator().manual_seed(0)
        sample = torch.randn(1, 3, config.sample_height_px, config.sample_width_px, generator=gen)
        _run_exporter(model, sample, tmp, config)
        max_rel = _verify(model, tmp, config) if config.verify_sizes else None
        if max_rel is not None and not max_rel <= config.max_rel_error:
            raise ExportError(
                f"exported ONNX deviates from PyTorch by {max_rel:.2e} (relative), above {config.max_rel_error:.0e}"
            )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - start
    log.info("exported %s (%s) in %.1f s, max relative error %s", out_path, config.exporter.value, seconds, max_rel)
    return ExportResult(out_path, config.exporter, seconds, num_parameters(model), max_rel)


def _run_exporter(model: nn.Module, sample: object, path: Path, config: ExportConfig) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # tracing warns about Python control flow on shapes; the head no longer has any that matters
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        try:
            if config.exporter is Exporter.TORCHSCRIPT:
                torch.onnx.export(
                    model, (sample,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                  OUTPUT_NAME: {0: "batch", 1: "height", 2: "width"}},
                    opset_version=config.opset, do_constant_folding=True, dynamo=False,
                )
            else:
                dim = torch.export.Dim
                # the dynamo exporter warns about every torchvision op it cannot register; none is used here
                registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
                level = registration_log.level
                registration_log.setLevel(logging.ERROR)
                try:
                    torch.onnx.export(
                        model, (sample,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                        dynamic_shapes={"pixel_values": {2: dim("height", min=14, max=8192),
                                                         3: dim("width", min=14, max=8192)}},
                        dynamo=True, external_data=False, verbose=False,
                    )
                finally:
                    registration_log.setLevel(level)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExportError(f"torch.onnx.export ({config.exporter.value}) failed: {exc}") from exc


def _verify(model: nn.Module, path: Path, config: ExportConfig) -> float:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    for width, height in config.verify_sizes:
        x = torch.randn(1, 3, height, width, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(
                f"exported ONNX gives shape {got.shape} for a {width}x{height} input, PyTorch {ref.shape}: "
                "the graph is not dynamic in height/width"
            )
        worst = max(worst, relative_error(got, ref))
    return worst


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (ref's range as the scale)."""
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / max(scale, 1e-12)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def export_path(spec: ModelSpec, config: EngineConfig) -> Path:
    """Cache path of the ONNX file exported here for ``spec`` with ``config``'s weights and exporter."""
    if config.random_weights:
        source = f"random-seed{config.seed}"
    elif config.weights is not None:
        source = "file-" + _file_digest(config.weights)[:16]
    elif spec.checkpoint is not None:
        source = "hub-" + spec.checkpoint.revision
    else:
        source = "none"
    return config.hub.cache_dir / "exports" / f"{spec.name}-{source}-{config.exporter.value}.onnx"


def resolve_onnx(spec: ModelSpec, config: EngineConfig, *, progress: TextIO | None) -> Path:
    """The ONNX file for ``spec``: ``config.weights`` (.onnx), the hub's export, or one exported here.

    Exporting needs torch (and the checkpoint, fetched as usual); the result is cached by model, weights
    source and exporter, so it happens once.
    """
    weights = config.weights
    if weights is not None and weights.suffix.lower() == ONNX_SUFFIX:
        if not weights.is_file():
            raise WeightsUnavailableError(f"ONNX file {weights} does not exist")
        return weights
    if weights is not None and weights.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise WeightsUnavailableError(
            f"{weights}: unsupported weights file type {weights.suffix!r} (.onnx, .safetensors, .pth, .pt)"
        )
    if weights is None and not config.random_weights and spec.onnx is not None and config.prefer_hub_onnx:
        return fetch(spec.onnx, config.hub, progress=progress, notice=spec.licence_notice()).path
    path = export_path(spec, config)
    if path.is_file():
        return path
    try:
        import torch  # noqa: F401 - only to fail early with a clear message
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model {spec.name!r} needs an ONNX export, which needs PyTorch (pip install 'depthslam[torch]'); "
            f"or pass an exported .onnx file with --weights"
        ) from exc
    log.info("exporting %s to ONNX at %s (first use; cached afterwards)", spec.name, path)
    model = load_model(spec, hub=config.hub, weights=weights, random_weights=config.random_weights,
                       seed=config.seed, progress=progress)
    export_onnx(model, path, ExportConfig(exporter=config.exporter))
    return path
