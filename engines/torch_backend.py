"""PyTorch backend: the reference implementation, on CPU or CUDA, optionally in fp16 (CUDA only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engines.errors import BackendUnavailableError

if TYPE_CHECKING:
    from torch import nn


class TorchRunner:
    """Runs a ``(B, 3, h, w) -> (B, h, w)`` torch module on ``device`` (``cpu`` or ``cuda[:N]``)."""

    def __init__(
        self, model: nn.Module, *, device: str = "cpu", fp16: bool = False, num_threads: int | None = None,
    ) -> None:
        import torch

        from engines.torch_model import num_parameters

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"PyTorch {torch.__version__} sees no CUDA device (asked for {device})")
        if fp16 and not device.startswith("cuda"):
            raise BackendUnavailableError("fp16 inference is offered on CUDA only (CPU half precision is slow)")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self._device = torch.device(device)
        self._dtype = torch.float16 if fp16 else torch.float32
        self._model: nn.Module | None = model.eval().to(self._device, self._dtype)
        self._num_parameters = num_parameters(model)
        self._name = ("torch-cuda" if device.startswith("cuda") else "torch-cpu") + ("-fp16" if fp16 else "")

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_parameters(self) -> int:
        return self._num_parameters

    def run(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("TorchRunner is closed")
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(pixel_values).to(self._device, self._dtype)
            out = self._model(x)
            return out.float().cpu().numpy()[0]

    def close(self) -> None:
        if self._model is not None:
            self._model = None
            if self._device.type == "cuda":
                self._torch.cuda.empty_cache()
