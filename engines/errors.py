"""The error types of the depth engines; every message names the problem and, where possible, the fix."""

from __future__ import annotations


class EngineError(RuntimeError):
    """A depth engine cannot be built or run (backend, weights, export or runtime failure)."""


class EngineInputError(ValueError):
    """A frame or image the engine cannot process (wrong type, dtype, shape, size or missing depth)."""


class BackendUnavailableError(EngineError):
    """The requested backend (TensorRT, ONNX Runtime CUDA/CPU, PyTorch CUDA/CPU) is not usable here."""


class WeightsUnavailableError(EngineError):
    """Weights are neither local nor cached and cannot be fetched; the message says what to fetch and where."""


class WeightsFormatError(EngineError):
    """A weights file exists but does not fit the model (unknown layout, missing or unexpected tensors)."""


class ExportError(EngineError):
    """ONNX export failed, or the exported graph does not reproduce PyTorch within tolerance."""
