"""OpenVINO CPU backend: the fused U-Net converted in memory, compiled once per model and process.

Only imported when the OpenVINO backend is asked for (or chosen by 'auto'); knows nothing of Qt.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

INSTALL_HINT = "pip install 'napari-bloodseg[openvino]'"
# OpenVINO's INFERENCE_PRECISION_HINT per precision name. 'auto' is fp32: measured fastest for the
# shipped width-16 U-Net (2-core Xeon with AVX-512 BF16: fp32 56.9 tiles/s, bf16 34.2; CPUs without
# native bf16 run f32 whatever the hint). See benchmarks/bench_infer.py.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
DEFAULT_PRECISION = "fp32"
CACHE_SIZE = 4  # compiled models kept per process (one per checkpoint and precision)

_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()
_core = None


class OpenVINOUnavailable(ValueError):
    """The OpenVINO backend was asked for but the runtime is not installed."""


def available() -> bool:
    """Whether the OpenVINO runtime can be imported."""
    try:
        import openvino  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or a broken install: 'auto' then uses torch
        return False
    return True


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise OpenVINOUnavailable(
            f"backend 'openvino' needs the OpenVINO runtime, which is not installed: {INSTALL_HINT} "
            "(or use backend 'torch')") from None
    return ov


def weights_key(model: torch.nn.Module) -> str:
    """A digest of the module's class, parameter names, shapes and values (its checkpoint identity)."""
    h = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def compile_module(model: torch.nn.Module, precision: str = "auto", in_channels: int = 3) -> Any:
    """An ``openvino.CompiledModel`` of ``model`` (eval mode, batch norm already folded) for the CPU,
    with dynamic batch, height and width; cached per weights and precision for the process."""
    name = DEFAULT_PRECISION if precision == "auto" else precision
    if name not in HINTS:
        raise ValueError(f"unknown OpenVINO precision {precision!r}; allowed: auto, {', '.join(HINTS)}")
    ov = _openvino()
    key = (weights_key(model), name, "NCHW dynamic batch/height/width")
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        global _core
        example = torch.zeros(1, in_channels, 32, 32)
        with torch.no_grad():  # the trace check runs the net 3 more times: seconds for nothing
            traced = torch.jit.trace(model.eval().cpu(), example, check_trace=False)
        ov_model = ov.convert_model(traced, example_input=example, input=[ov.PartialShape([-1, in_channels, -1, -1])])
        _core = _core or ov.Core()
        compiled = _core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[name]})
        _cache[key] = compiled
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return compiled


def effective_precision(compiled: Any) -> str:
    """The precision the CPU plugin actually runs ('fp32' where the CPU lacks the hinted one)."""
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    return next((k for k, v in HINTS.items() if v in got), got)


class OpenVINOModule(torch.nn.Module):
    """A compiled OpenVINO model called like the torch U-Net: normalised (N, C, H, W) → logits.

    Test-time augmentation and stitching stay in torch/NumPy around it, as for the torch backend."""

    def __init__(self, compiled: Any):
        super().__init__()
        self.compiled = compiled
        self.precision = effective_precision(compiled)
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one call at a time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            out = self._request.infer({0: arr}, share_inputs=True, share_outputs=False)[0]
        return torch.from_numpy(np.asarray(out))


def openvino_module(fused: torch.nn.Module, precision: str = "auto") -> OpenVINOModule:
    """The OpenVINO stand-in for an eval-mode, batch-norm-folded torch module."""
    conv = next((m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return OpenVINOModule(compile_module(fused, precision, conv.in_channels if conv is not None else 3))
