"""The one place that looks at the machine: which backends are usable, which one ``auto`` means, and the
factory that builds an engine from an :class:`EngineConfig`.

``auto`` prefers TensorRT, then ONNX Runtime CUDA, then PyTorch CUDA, then ONNX Runtime CPU (PyTorch CPU
only when ONNX Runtime is missing), and logs what it chose and why every faster option was skipped.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from engines.base import DepthEngine, NetworkDepthEngine, PassThroughEngine
from engines.config import Backend, EngineConfig
from engines.errors import BackendUnavailableError
from engines.models import PASSTHROUGH, get_model_spec
from engines.processing import DepthRange

log = logging.getLogger(__name__)

_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers to the depth engines."""

    torch_version: str | None
    """PyTorch version, None when not installed."""
    torch_cuda: bool
    """PyTorch was built with CUDA and sees a device."""
    cuda_device_name: str | None
    """Name of CUDA device 0, None when there is no usable NVIDIA GPU."""
    onnxruntime_version: str | None
    """ONNX Runtime version, None when not installed."""
    ort_providers: tuple[str, ...]
    """ONNX Runtime execution providers built in."""
    tensorrt_version: str | None
    """TensorRT version, None when not installed (or its libraries fail to load)."""

    def describe(self) -> str:
        return (
            f"torch {self.torch_version or 'absent'} (CUDA {'yes' if self.torch_cuda else 'no'}), "
            f"onnxruntime {self.onnxruntime_version or 'absent'} ({', '.join(self.ort_providers) or 'no providers'}), "
            f"tensorrt {self.tensorrt_version or 'absent'}, GPU {self.cuda_device_name or 'none'}"
        )


def _import_version(module: str) -> tuple[Any, str | None]:
    try:
        mod = importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: package present, shared libraries missing
        log.debug("%s not usable: %s", module, exc)
        return None, None
    return mod, str(mod.__version__)


def _proc_gpu_name() -> str | None:
    """GPU name from the NVIDIA driver's /proc entries (no CUDA library needed)."""
    if not _NVIDIA_GPUS.is_dir():
        return None
    for info in sorted(_NVIDIA_GPUS.glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return None


def probe_capabilities() -> Capabilities:
    """Import (lazily, once per call) torch, onnxruntime and tensorrt to see what is usable."""
    torch, torch_version = _import_version("torch")
    torch_cuda = False
    gpu: str | None = None
    if torch is not None:
        torch_cuda = bool(torch.cuda.is_available())
        if torch_cuda:
            gpu = str(torch.cuda.get_device_name(0))
    ort, ort_version = _import_version("onnxruntime")
    providers: tuple[str, ...] = () if ort is None else tuple(ort.get_available_providers())
    if gpu is None:
        gpu = _proc_gpu_name()
    _, trt_version = _import_version("tensorrt")
    return Capabilities(torch_version, torch_cuda, gpu, ort_version, providers, trt_version)


@dataclass(frozen=True)
class BackendChoice:
    """The backend to use and why."""

    backend: Backend
    reason: str


def _why_not(backend: Backend, caps: Capabilities) -> str | None:
    """None when ``backend`` is usable with ``caps``, else the reason it is not."""
    if backend is Backend.TENSORRT:
        if caps.tensorrt_version is None:
            return "tensorrt is not installed"
        if not caps.torch_cuda:
            return "it needs a CUDA GPU visible to PyTorch (for device buffers), and there is none"
        return None
    if backend in (Backend.ORT_CUDA, Backend.ORT_CPU):
        if caps.onnxruntime_version is None:
            return "onnxruntime is not installed"
        if backend is Backend.ORT_CUDA:
            if "CUDAExecutionProvider" not in caps.ort_providers:
                return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
            if caps.cuda_device_name is None:
                return "there is no NVIDIA GPU"
        return None
    if caps.torch_version is None:
        return "torch is not installed"
    if backend is Backend.TORCH_CUDA and not caps.torch_cuda:
        return "PyTorch sees no CUDA GPU"
    return None


AUTO_ORDER = (Backend.TENSORRT, Backend.ORT_CUDA, Backend.TORCH_CUDA, Backend.ORT_CPU, Backend.TORCH_CPU)


def usable_backends(caps: Capabilities) -> tuple[Backend, ...]:
    """Every concrete backend usable with ``caps``, fastest first."""
    return tuple(b for b in AUTO_ORDER if _why_not(b, caps) is None)


def choose_backend(requested: Backend, caps: Capabilities) -> BackendChoice:
    """Resolve ``requested`` (``AUTO`` or explicit) against ``caps``; raises BackendUnavailableError."""
    if requested is not Backend.AUTO:
        why = _why_not(requested, caps)
        if why is not None:
            raise BackendUnavailableError(f"backend {requested.value} is not usable: {why} ({caps.describe()})")
        return BackendChoice(requested, f"{requested.value} requested explicitly")
    skipped = []
    for backend in AUTO_ORDER:
        why = _why_not(backend, caps)
        if why is None:
            reason = f"auto chose {backend.value}"
            if skipped:
                reason += ": skipped " + "; ".join(skipped)
            log.info("%s", reason)
            return BackendChoice(backend, reason)
        skipped.append(f"{backend.value} ({why})")
    raise BackendUnavailableError(
        "no depth backend is usable: install onnxruntime (CPU) or torch; " + "; ".join(skipped)
    )


def create_engine(
    config: EngineConfig, *, caps: Capabilities | None = None, progress: TextIO | None = sys.stderr,
) -> DepthEngine:
    """Build the engine ``config`` describes: passthrough, or a network on the chosen backend.

    Weights are fetched (with a progress bar on ``progress``) or exported on first use; see
    :mod:`engines.weights` and :mod:`engines.onnx_export`.
    """
    if config.model == PASSTHROUGH:
        return PassThroughEngine()
    spec = get_model_spec(config.model)
    choice = choose_backend(config.backend, caps or probe_capabilities())
    log.info("depth engine %s on %s (%s)", spec.name, choice.backend.value, choice.reason)
    if config.fp16 and choice.backend is not Backend.TORCH_CUDA:
        raise BackendUnavailableError(f"fp16 applies to torch-cuda only; the backend is {choice.backend.value}")
    max_m = config.max_depth_m if config.max_depth_m is not None else spec.max_depth_m
    depth_range = DepthRange(config.min_depth_m, max_m if max_m is not None else float("inf"))
    label = spec.title + (f" (random weights, seed {config.seed})" if config.random_weights else "")
    backend = choice.backend
    if backend in (Backend.TORCH_CPU, Backend.TORCH_CUDA):
        from engines.torch_backend import TorchRunner
        from engines.weights import load_model

        model = load_model(spec, hub=config.hub, weights=config.weights, random_weights=config.random_weights,
                           seed=config.seed, progress=progress)
        runner = TorchRunner(model, device="cuda" if backend is Backend.TORCH_CUDA else "cpu", fp16=config.fp16,
                             num_threads=config.num_threads)
        return NetworkDepthEngine(runner, spec, config.size, depth_range, label=label)
    from engines.onnx_export import resolve_onnx

    onnx_path = resolve_onnx(spec, config, progress=progress)
    if backend is Backend.TENSORRT:
        from engines.trt_backend import TrtEngineCache, TrtRunner

        trt_runner = TrtRunner(onnx_path, spec.name, TrtEngineCache(config.hub.cache_dir / "tensorrt"),
                               fp16=config.trt_fp16)
        return NetworkDepthEngine(trt_runner, spec, config.size, depth_range, label=label)
    from engines.ort_backend import OrtRunner

    ort_runner = OrtRunner(onnx_path, use_cuda=backend is Backend.ORT_CUDA, num_threads=config.num_threads)
    return NetworkDepthEngine(ort_runner, spec, config.size, depth_range, label=label)
