"""TensorRT backend: an FP16 engine built from the ONNX graph, cached on disk, run on CUDA device buffers.

An engine is built for one input shape (min = opt = max in its optimisation profile: the fastest kernels).
Engines are cached in ``<cache>/tensorrt/`` under a name derived from :class:`TrtEngineKey` — model, ONNX
content hash, input shape, GPU name, TensorRT version and precision — with the key stored beside each
engine as JSON. Any change of the key gives a new name, so the engine is rebuilt; stale engines for the
same model, shape and GPU are deleted after a rebuild.

Execution uses torch CUDA tensors as device buffers (``set_tensor_address`` + ``execute_async_v3`` on
torch's current stream). Requires TensorRT >= 10 and a CUDA build of PyTorch; imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import BackendUnavailableError, EngineError

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 4 << 30
MAX_SHAPES = 4
"""Engines (input shapes) kept loaded at once by one runner."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


@dataclass(frozen=True)
class TrtEngineKey:
    """Everything a serialized TensorRT engine depends on."""

    model: str
    """Model name, e.g. ``small``."""
    onnx_sha256: str
    """SHA-256 of the ONNX file the engine was built from."""
    input_shape: tuple[int, int, int, int]
    """(batch, 3, height, width) of the network input."""
    gpu_name: str
    """CUDA device name, e.g. ``NVIDIA H100 80GB HBM3``."""
    trt_version: str
    """``tensorrt.__version__``."""
    fp16: bool
    """FP16 kernels allowed."""

    def __post_init__(self) -> None:
        if len(self.input_shape) != 4 or any(d <= 0 for d in self.input_shape):
            raise ValueError(f"TrtEngineKey.input_shape must be 4 positive dims, got {self.input_shape}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def family(self) -> str:
        """Name prefix shared by engines of the same model, shape and GPU."""
        _, _, h, w = self.input_shape
        return f"{_slug(self.model)}-{w}x{h}-{_slug(self.gpu_name)}"

    def filename(self) -> str:
        precision = "fp16" if self.fp16 else "fp32"
        return f"{self.family}-trt{_slug(self.trt_version)}-{precision}-{self.digest[:12]}.engine"


@dataclass(frozen=True)
class CachedEngine:
    """A serialized engine and where it lives."""

    path: Path
    data: bytes
    built: bool
    """True when this call built it (cache miss)."""


class TrtEngineCache:
    """Serialized engines on disk, keyed by :class:`TrtEngineKey`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, key: TrtEngineKey) -> Path:
        return self.directory / key.filename()

    def lookup(self, key: TrtEngineKey) -> Path | None:
        """The cached engine for ``key`` if present and its stored key matches exactly."""
        path = self.path_for(key)
        meta = path.with_suffix(".json")
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            stored = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("unreadable TensorRT cache metadata %s (%s); rebuilding", meta, exc)
            return None
        if stored != key.as_dict():
            log.warning("TensorRT cache entry %s was built for another key; rebuilding", path)
            return None
        return path

    def get_or_build(self, key: TrtEngineKey, build: Callable[[], bytes]) -> CachedEngine:
        """The engine for ``key``, built with ``build()`` and stored when missing or stale."""
        found = self.lookup(key)
        if found is not None:
            return CachedEngine(found, found.read_bytes(), built=False)
        log.info("building TensorRT engine for %s (%s); this takes minutes once", key.model, key.input_shape)
        data = build()
        if not data:
            raise EngineError(f"TensorRT produced an empty engine for {key.model} {key.input_shape}")
        path = self.path_for(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        _write_atomic(path.with_suffix(".json"), json.dumps(key.as_dict(), indent=1, sort_keys=True).encode())
        self._prune(key, keep=path)
        return CachedEngine(path, data, built=True)

    def _prune(self, key: TrtEngineKey, keep: Path) -> None:
        for old in self.directory.glob(f"{key.family}-trt*.engine"):
            if old != keep:
                log.info("removing stale TensorRT engine %s", old)
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def build_serialized_engine(
    onnx_path: Path, input_shape: tuple[int, int, int, int], *, fp16: bool = True,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for exactly ``input_shape`` (TensorRT >= 10)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    if network.num_inputs != 1:
        raise EngineError(f"{onnx_path}: expected one network input, got {network.num_inputs}")
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, input_shape, input_shape, input_shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} for {input_shape} (see its log)")
    return bytes(serialized)


@dataclass
class _Loaded:
    engine: Any
    context: Any
    input_name: str
    input_buffer: Any
    output_buffers: dict[str, Any]
    first_output: str
    path: Path


class TrtRunner:
    """Runs the network through TensorRT engines (one per input shape, built or loaded on first use)."""

    def __init__(
        self, onnx_path: Path, model_name: str, cache: TrtEngineCache, *, fp16: bool = True, device_index: int = 0,
        builder: Callable[..., bytes] = build_serialized_engine,
    ) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"the TensorRT backend needs tensorrt and torch: {exc}") from exc
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the TensorRT backend needs a CUDA GPU; PyTorch sees none")
        self._trt = trt
        self._torch = torch
        self._device = torch.device("cuda", device_index)
        self._gpu_name = torch.cuda.get_device_name(device_index)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._onnx_path = onnx_path
        self._onnx_sha256 = file_sha256(onnx_path)
        self._model_name = model_name
        self._cache = cache
        self._fp16 = fp16
        self._builder = builder
        self._loaded: OrderedDict[tuple[int, ...], _Loaded] = OrderedDict()
        self._name = "tensorrt-fp16" if fp16 else "tensorrt"
        self._num_parameters: int | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_parameters(self) -> int | None:
        if self._num_parameters is None:
            from engines.ort_backend import onnx_parameter_count

            self._num_parameters = onnx_parameter_count(self._onnx_path)
        return self._num_parameters

    def key(self, input_shape: tuple[int, int, int, int]) -> TrtEngineKey:
        return TrtEngineKey(
            self._model_name, self._onnx_sha256, input_shape, self._gpu_name, self._trt.__version__, self._fp16
        )

    def prepare(self, input_shape: tuple[int, int, int, int]) -> Path:
        """Build or load the engine for ``input_shape`` and allocate its buffers; returns the engine file."""
        return self._load(input_shape).path

    def _torch_dtype(self, trt_dtype: Any) -> Any:
        trt, torch = self._trt, self._torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.int64: torch.int64, trt.bool: torch.bool}
        if trt_dtype not in table:
            raise EngineError(f"TensorRT tensor type {trt_dtype} is not supported by this runner")
        return table[trt_dtype]

    def _load(self, input_shape: tuple[int, int, int, int]) -> _Loaded:
        shape = tuple(int(d) for d in input_shape)
        loaded = self._loaded.get(shape)
        if loaded is not None:
            self._loaded.move_to_end(shape)
            return loaded
        trt, torch = self._trt, self._torch
        key = self.key(input_shape)
        cached = self._cache.get_or_build(
            key, lambda: self._builder(self._onnx_path, input_shape, fp16=self._fp16)
        )
        engine = self._runtime.deserialize_cuda_engine(cached.data)
        if engine is None:
            raise EngineError(
                f"TensorRT cannot deserialize {cached.path} (corrupt, or built by another version); "
                "delete it to rebuild"
            )
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise EngineError(f"{cached.path}: expected one input and at least one output, got {names}")
        if not context.set_input_shape(inputs[0], input_shape):
            raise EngineError(f"{cached.path}: TensorRT refused input shape {input_shape}")
        input_buffer = torch.empty(
            input_shape, dtype=self._torch_dtype(engine.get_tensor_dtype(inputs[0])), device=self._device
        )
        context.set_tensor_address(inputs[0], input_buffer.data_ptr())
        output_buffers = {}
        for name in outputs:
            out_shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise EngineError(f"{cached.path}: output {name} has unresolved shape {out_shape}")
            buf = torch.empty(out_shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=self._device)
            context.set_tensor_address(name, buf.data_ptr())
            output_buffers[name] = buf
        loaded = _Loaded(engine, context, inputs[0], input_buffer, output_buffers, outputs[0], cached.path)
        self._loaded[shape] = loaded
        while len(self._loaded) > MAX_SHAPES:
            self._loaded.popitem(last=False)
        return loaded

    def run(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("TrtRunner is closed")
        torch = self._torch
        shape = tuple(int(d) for d in pixel_values.shape)
        if len(shape) != 4:
            raise EngineError(f"TensorRT runner takes (1, 3, h, w) input, got shape {shape}")
        loaded = self._load((shape[0], shape[1], shape[2], shape[3]))
        with torch.cuda.device(self._device):
            stream = torch.cuda.current_stream(self._device)
            loaded.input_buffer.copy_(torch.from_numpy(pixel_values))
            if not loaded.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT execution failed for {loaded.path}")
            out = loaded.output_buffers[loaded.first_output].float().cpu()  # waits for the stream
        return out.numpy()[0]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loaded.clear()
            self._torch.cuda.empty_cache()
