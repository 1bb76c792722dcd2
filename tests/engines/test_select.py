"""Backend selection: auto order (TensorRT > ORT CUDA > torch CUDA > ORT CPU > torch CPU) with reasons."""

from __future__ import annotations

import logging

import pytest

from engines.config import Backend
from engines.errors import BackendUnavailableError
from engines.select import Capabilities, choose_backend, probe_capabilities, usable_backends

CPU_ONLY = Capabilities("2.13.0", False, None, "1.32.0", ("CPUExecutionProvider",), None)
FULL_GPU = Capabilities("2.13.0", True, "NVIDIA H100", "1.32.0", ("CUDAExecutionProvider", "CPUExecutionProvider"),
                        "10.9.0")


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (FULL_GPU, Backend.TENSORRT),
        (Capabilities("2.13.0", True, "NVIDIA H100", "1.32.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), None),
         Backend.ORT_CUDA),
        (Capabilities("2.13.0", True, "NVIDIA H100", "1.32.0", ("CPUExecutionProvider",), None), Backend.TORCH_CUDA),
        (CPU_ONLY, Backend.ORT_CPU),
        (Capabilities("2.13.0", False, None, None, (), "10.9.0"), Backend.TORCH_CPU),  # TensorRT without a GPU
        (Capabilities(None, False, "NVIDIA T4", "1.32.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), "10.9"),
         Backend.ORT_CUDA),  # TensorRT needs torch for device buffers
    ],
)
def test_auto_order(caps: Capabilities, expected: Backend) -> None:
    assert choose_backend(Backend.AUTO, caps).backend is expected


def test_auto_on_cpu_explains_every_skip(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="engines.select"):
        choice = choose_backend(Backend.AUTO, CPU_ONLY)
    assert choice.backend is Backend.ORT_CPU
    assert "tensorrt (tensorrt is not installed)" in choice.reason
    assert "ort-cuda (onnxruntime has no CUDAExecutionProvider" in choice.reason
    assert "torch-cuda (PyTorch sees no CUDA GPU)" in choice.reason
    assert choice.reason in caplog.text


def test_explicit_backends() -> None:
    assert choose_backend(Backend.TORCH_CPU, CPU_ONLY).backend is Backend.TORCH_CPU
    with pytest.raises(BackendUnavailableError, match="tensorrt is not usable: tensorrt is not installed"):
        choose_backend(Backend.TENSORRT, CPU_ONLY)
    with pytest.raises(BackendUnavailableError, match="no NVIDIA GPU"):
        choose_backend(Backend.ORT_CUDA, Capabilities(None, False, None, "1.32", ("CUDAExecutionProvider",), None))
    with pytest.raises(BackendUnavailableError, match="no depth backend is usable"):
        choose_backend(Backend.AUTO, Capabilities(None, False, None, None, (), None))
    assert usable_backends(CPU_ONLY) == (Backend.ORT_CPU, Backend.TORCH_CPU)
    assert usable_backends(FULL_GPU)[0] is Backend.TENSORRT


def test_this_machine() -> None:
    caps = probe_capabilities()
    choice = choose_backend(Backend.AUTO, caps)
    if caps.cuda_device_name is None:  # this project's development machines and CI: CPU only
        assert choice.backend is Backend.ORT_CPU, choice.reason
        assert "ort-cuda" in choice.reason and "torch-cuda (PyTorch sees no CUDA GPU)" in choice.reason
    else:
        assert choice.backend in (Backend.TENSORRT, Backend.ORT_CUDA, Backend.TORCH_CUDA), choice.reason
