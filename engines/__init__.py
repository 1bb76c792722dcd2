"""Depth engines: Depth Anything V2 (relative and metric) on PyTorch, ONNX Runtime or TensorRT, plus
pass-through depth for RGB-D sources. Frames in, typed :class:`stream.messages.DepthFrame` out.

Modules (importing this package imports none of torch, onnxruntime or tensorrt):

- ``config``: :class:`~engines.config.EngineConfig`, backends, the input size policy.
- ``models``: the model table (hub ids, licences, architectures, output typing).
- ``hub`` / ``weights`` / ``onnx_export``: fetching and caching weights, loading checkpoints, ONNX export.
- ``processing``: the one shared pre/postprocessing implementation.
- ``base``: the :class:`~engines.base.DepthEngine` protocol, the network engine and the pass-through engine.
- ``torch_backend`` / ``ort_backend`` / ``trt_backend``: the backends (tensors only).
- ``select``: the only place that inspects the machine; ``create_engine(config)`` builds an engine.
- ``worker``: the depth worker stage (ZeroMQ ``frames`` -> ``depth``) and the reorder buffer.
"""
