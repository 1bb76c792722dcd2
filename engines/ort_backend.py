"""ONNX Runtime backend: CPU execution provider by default, CUDA execution provider when asked for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.errors import BackendUnavailableError, EngineError

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"


def onnx_parameter_count(path: Path) -> int | None:
    """Number of floating-point weights stored in an ONNX file (None when the ``onnx`` package is missing)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in float_types and len(t.dims) > 0
    )


class OrtRunner:
    """Runs an ONNX depth network (one rank-4 input, first output is the depth map) in ONNX Runtime."""

    def __init__(
        self, onnx_path: Path, *, use_cuda: bool = False, num_threads: int | None = None, device_id: int = 0,
    ) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if use_cuda and CUDA_EP not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime {ort.__version__} has no {CUDA_EP} (providers: {', '.join(available)}); "
                "install onnxruntime-gpu or use the ort-cpu backend"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        providers: list[str | tuple[str, dict[str, object]]] = (
            [(CUDA_EP, {"device_id": device_id}), CPU_EP] if use_cuda else [CPU_EP]
        )
        try:
            self._session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except (RuntimeError, ValueError) as exc:  # onnxruntime's Fail/InvalidGraph derive from RuntimeError
            raise EngineError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
        if use_cuda and CUDA_EP not in self._session.get_providers():
            raise BackendUnavailableError(
                f"ONNX Runtime could not start {CUDA_EP} (no usable GPU or CUDA libraries); it fell back to CPU"
            )
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise EngineError(
                f"{onnx_path}: expected one (batch, 3, height, width) input, got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self._input = inputs[0].name
        self._output = self._session.get_outputs()[0].name
        self._path = onnx_path
        self._num_parameters: int | None = None
        self._name = "ort-cuda" if use_cuda else "ort-cpu"
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_parameters(self) -> int | None:
        if self._num_parameters is None:
            self._num_parameters = onnx_parameter_count(self._path)
        return self._num_parameters

    def run(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("OrtRunner is closed")
        out = self._session.run([self._output], {self._input: pixel_values})[0]
        return np.asarray(out)[0]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            del self._session
