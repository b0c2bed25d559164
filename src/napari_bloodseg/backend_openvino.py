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


class _Softmax(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def compile_module(model: torch.nn.Module, precision: str = "auto", in_channels: int = 3,
                   normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Any:
    """An ``openvino.CompiledModel`` of ``model`` (eval mode, batch norm already folded) for the CPU,
    with dynamic batch, height and width; cached per weights and precision for the process.
    ``normalise`` (mean, std): instead, a model from uint8 (N, H, W, C) tiles to softmax
    probabilities, the normalisation and the softmax done inside OpenVINO."""
    name = DEFAULT_PRECISION if precision == "auto" else precision
    if name not in HINTS:
        raise ValueError(f"unknown OpenVINO precision {precision!r}; allowed: auto, {', '.join(HINTS)}")
    ov = _openvino()
    key = (weights_key(model), name, "NCHW dynamic batch/height/width",
           None if normalise is None else tuple(map(tuple, normalise)))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        global _core
        example = torch.zeros(1, in_channels, 32, 32)
        net = model.eval().cpu() if normalise is None else _Softmax(model.eval().cpu()).eval()
        with torch.no_grad():  # the trace check runs the net 3 more times: seconds for nothing
            traced = torch.jit.trace(net, example, check_trace=False)
        ov_model = ov.convert_model(traced, example_input=example, input=[ov.PartialShape([-1, in_channels, -1, -1])])
        if normalise is not None:
            from openvino.preprocess import PrePostProcessor

            mean, std = normalise
            ppp = PrePostProcessor(ov_model)
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(
                [255.0 * m for m in mean]).scale([255.0 * s for s in std])
            ov_model = ppp.build()
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

    Test-time augmentation and stitching stay in torch/NumPy around it, as for the torch backend.
    Given the input normalisation (``mean``, ``std``), :meth:`probs` also maps uint8 (N, H, W, C)
    tiles straight to softmax probabilities (normalisation and softmax inside OpenVINO: ~13 %
    faster on 1-megapixel tiles); that model is compiled at once and the logits one on first use."""

    def __init__(self, fused: torch.nn.Module, precision: str = "auto", in_channels: int = 3,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        super().__init__()
        self._args = (fused, precision, in_channels)
        self._lock = threading.Lock()  # one infer request per model: one call at a time
        self._probs_request = self._request = None
        self.normalise = None if mean is None or std is None else (tuple(mean), tuple(std))
        if self.normalise is not None:
            self.compiled = compile_module(fused, precision, in_channels, self.normalise)
            self._probs_request = self.compiled.create_infer_request()
        else:
            self.compiled = self._logits_model()
        self.precision = effective_precision(self.compiled)

    def _logits_model(self) -> Any:
        """The compiled logits model (compiled on first use when the probabilities model came first)."""
        if self._request is None:
            self._logits_compiled = compile_module(*self._args)
            self._request = self._logits_compiled.create_infer_request()
        return self._logits_compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            self._logits_model()
            out = self._request.infer({0: arr}, share_inputs=True, share_outputs=False)[0]
        return torch.from_numpy(np.asarray(out))

    def probs(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) tiles → float32 (N, classes, H, W) softmax probabilities."""
        if self._probs_request is None:
            raise ValueError("this OpenVINO module was built without the input normalisation")
        with self._lock:
            out = self._probs_request.infer({0: np.ascontiguousarray(tiles)}, share_inputs=True, share_outputs=False)[0]
        return np.asarray(out)


def openvino_module(fused: torch.nn.Module, precision: str = "auto", mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None) -> OpenVINOModule:
    """The OpenVINO stand-in for an eval-mode, batch-norm-folded torch module (with ``mean`` and
    ``std``, the input normalisation: :meth:`OpenVINOModule.probs` takes uint8 tiles)."""
    conv = next((m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return OpenVINOModule(fused, precision, conv.in_channels if conv is not None else 3, mean, std)
