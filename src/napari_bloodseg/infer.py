"""Inference on any image size: input checks, RBC-scale estimate, tiles with blended stitching."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, transform

from .checkpoint import ModelInfo, load_checkpoint
from .classes import NOT_WBC, NUM_CLASSES, PARTIAL_LABELS, BloodClass
from .model import TILE, UNet
from .postprocess import WBC_IDS, tighten_wbcs
from .steps import drain


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(str, Enum):
    AUTO = "auto"  # bf16 on CPUs with native bf16 and on CUDA with bf16, fp16 on other GPUs, else fp32
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Backend(str, Enum):
    """What runs the network. OpenVINO (CPU only) needs ``pip install 'napari-bloodseg[openvino]'``."""

    AUTO = "auto"  # OpenVINO on the CPU when installed, torch bf16 on CPUs with AMX, else torch; torch on GPUs
    TORCH = "torch"
    OPENVINO = "openvino"


def _backend(backend: str | Backend) -> Backend:
    try:
        return Backend(str(getattr(backend, "value", backend)).lower())
    except ValueError:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(b.value for b in Backend)}") from None


class TTA(str, Enum):
    """Test-time augmentation: average the softmax over flipped/rotated copies of each tile."""

    NONE = "none"
    FLIP = "flip"  # identity + left-right mirror: 2 passes
    D4 = "d4"  # the 8 flips and 90° rotations: 8 passes


def _tta_mode(tta: str | TTA) -> TTA:
    try:
        return TTA(str(getattr(tta, "value", tta)).lower())
    except ValueError:
        raise ValueError(f"unknown test-time augmentation {tta!r}; allowed: {', '.join(t.value for t in TTA)}") from None


def predict_probs(model: torch.nn.Module, x: torch.Tensor, tta: str | TTA = TTA.NONE,
                  first_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities (N, C, H, W) of ``model`` on normalised input ``x`` (square tiles for
    'd4'), averaged over the test-time augmentation's transforms. ``first_logits``: the plain
    pass's logits when the caller already has them."""
    mode = _tta_mode(tta)
    logits = model(x) if first_logits is None else first_logits
    probs = torch.softmax(logits.float(), dim=1)
    if mode is TTA.NONE:
        return probs
    ops = [(0, True)] if mode is TTA.FLIP else [(k, f) for k in range(4) for f in (False, True) if (k, f) != (0, False)]
    for k, flip in ops:
        t = torch.rot90(x, k, (2, 3)) if k else x
        t = t.flip(3) if flip else t
        p = torch.softmax(model(t).float(), dim=1)
        p = p.flip(3) if flip else p
        probs += torch.rot90(p, -k, (2, 3)) if k else p
    return probs / (len(ops) + 1)


class ScaleMethod(str, Enum):
    """How an unknown RBC diameter is found."""

    NETWORK = "network"  # the model's own RBCs at a few candidate scales (autoscale.py)
    CLASSICAL = "classical"  # thresholds: median size of isolated round cells


def _scale_method(method: str | ScaleMethod) -> ScaleMethod:
    try:
        return ScaleMethod(str(getattr(method, "value", method)).lower())
    except ValueError:
        raise ValueError(f"unknown scale method {method!r}; allowed: {', '.join(m.value for m in ScaleMethod)}") from None


class InputError(ValueError):
    """An image this tool cannot segment, with the reason in user terms."""


class Cancelled(Exception):
    """Raised when the caller asked to stop."""


def resolve_device(device: str | Device = "auto") -> torch.device:
    """'auto' → cuda > mps > cpu; a named device must be available."""
    try:
        name = Device(str(device).lower().split(":")[0])
    except ValueError:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(d.value for d in Device)}") from None
    if name is Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name is Device.CUDA and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name is Device.MPS and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available; use 'auto' or 'cpu'")
    return torch.device(str(device).lower())


def _cpu_supports(check: str) -> bool:
    """One of torch.cpu's private feature probes; False where this torch lacks it."""
    probe = getattr(torch.cpu, check, None)
    return bool(probe()) if probe is not None else False


def cpu_has_amx() -> bool:
    """Intel AMX tiles (Sapphire Rapids and later), where torch runs bf16 convolutions on the tiles."""
    return _cpu_supports("_is_amx_tile_supported")


def cpu_has_native_bf16() -> bool:
    return _cpu_supports("_is_avx512_bf16_supported") or cpu_has_amx()


def resolve_precision(precision: str | Precision, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device`` ('auto': the fastest that keeps results)."""
    try:
        p = Precision(str(precision).lower())
    except ValueError:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(x.value for x in Precision)}") from None
    if p is Precision.AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[p]


def resolve_backend(backend: str | Backend, device: torch.device, fast: bool = True,
                    precision: str | Precision = "auto") -> Backend:
    """The backend that runs on ``device``: 'auto' → OpenVINO on the CPU when it is installed (and the
    fast path is on), except on CPUs with AMX when the precision comes out bf16: there torch's bf16
    convolutions on the AMX tiles were 2x OpenVINO fp32 (benchmarks/bench_infer.py, README);
    else torch. 'openvino' on a GPU, or without OpenVINO installed → ValueError."""
    b = _backend(backend)
    if b is Backend.TORCH:
        return b
    from . import backend_openvino

    if b is Backend.AUTO:
        cpu = device.type == "cpu" and fast
        if cpu and cpu_has_amx() and resolve_precision(precision, device) == torch.bfloat16:
            return Backend.TORCH
        return Backend.OPENVINO if cpu and backend_openvino.available() else Backend.TORCH
    if device.type != "cpu":
        raise ValueError(f"backend 'openvino' runs on the CPU, not on {device.type}; use device 'cpu' or backend 'torch'")
    backend_openvino._openvino()  # OpenVINOUnavailable (a ValueError) with the install command
    return b


def inference_module(model: UNet, device: torch.device, backend: str | Backend = Backend.AUTO,
                     precision: str | Precision = "auto", fast: bool = True,
                     normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                     ) -> tuple[torch.nn.Module, Backend, torch.dtype]:
    """(module, backend, compute dtype): the eval-mode callable that maps normalised (N, 3, H, W)
    input to logits. ``fast``: batch norm folded, channels-last (torch; OpenVINO always folds).
    ``normalise`` (mean, std): an OpenVINO module also maps uint8 tiles to probabilities itself
    (``module.probs``). An OpenVINO failure under 'auto' falls back to torch with a warning."""
    resolve_precision(precision, device)  # validates the name for both backends
    chosen = resolve_backend(backend, device, fast, precision)
    model = model.to(device).eval()
    if chosen is Backend.OPENVINO:
        from .backend_openvino import openvino_module

        try:
            module = openvino_module(fuse_for_inference(model), str(getattr(precision, "value", precision)).lower(),
                                     *(normalise or (None, None)))
        except Exception as e:  # noqa: BLE001 - a conversion failure must not stop an 'auto' run
            if _backend(backend) is Backend.OPENVINO:
                raise ValueError(f"OpenVINO could not compile the model: {e}") from e
            warnings.warn(f"OpenVINO could not compile the model ({e}); running it with torch", UserWarning, stacklevel=2)
            chosen = Backend.TORCH
        else:
            return module, chosen, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(module.precision, torch.float32)
    if fast:  # same results up to rounding, faster on CPU and GPU
        model = fuse_for_inference(model).to(memory_format=torch.channels_last)
    return model, chosen, resolve_precision(precision, device)


def fuse_for_inference(model: UNet) -> UNet:
    """A copy with each batch norm folded into the convolution before it (eval-mode only)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if isinstance(seq, torch.nn.Sequential):
            mods = list(seq)
            for i in range(len(mods) - 1):
                if isinstance(mods[i], torch.nn.Conv2d) and isinstance(mods[i + 1], torch.nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(mods[i], mods[i + 1])
                    seq[i + 1] = torch.nn.Identity()
    return fused


def prepare_image(image: np.ndarray) -> np.ndarray:
    """Any supported 2-D colour image → (H, W, 3) uint8 RGB; everything else → InputError."""
    arr = np.asarray(image)
    if arr.dtype == bool or arr.dtype.kind not in "uif":
        raise InputError(f"unsupported pixel type {arr.dtype}; expected an RGB image")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1):
        raise InputError("grayscale image: blood smear segmentation needs a colour (RGB) image")
    if arr.ndim == 3 and arr.shape[-1] == 2:
        raise InputError("two-channel image: expected RGB or RGBA")
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(
            f"image of shape {arr.shape}: expected one 2-D RGB image (height, width, 3); "
            "stacks and time series: segment one plane at a time"
        )
    if min(arr.shape[:2]) < 8:
        raise InputError(f"image of {arr.shape[0]}x{arr.shape[1]} pixels is too small to segment")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            n = int((~finite).any(axis=-1).sum())
            warnings.warn(f"{n} of {finite.shape[0] * finite.shape[1]} pixels had NaN or infinite values; "
                          "they were set to 0 (black) before segmenting", UserWarning, stacklevel=2)
            arr = np.where(finite, arr, 0)
        hi = float(arr.max()) if arr.size else 1.0
        scale = 1.0 if hi <= 1.0 else (255.0 if hi <= 255.0 else hi)
        return (np.clip(arr / scale, 0, 1) * 255 + 0.5).astype(np.uint8)
    # integer types wider than 8 bit: 16-bit scans often use only 12 bits
    hi = int(arr.max()) if arr.size else 255
    if hi <= 255:
        return arr.astype(np.uint8)
    bits = max(8, int(math.ceil(math.log2(hi + 1))))
    return (arr.astype(np.float64) / (2**bits - 1) * 255 + 0.5).astype(np.uint8)


# Segmentation tiles (at most; :func:`_layout`): large tiles compute few pixels twice (tile 224
# with overlap 32 computes a 1000x1000 field 1.8 times, tiles of at most 1024 px 1.02 times) at the
# same cost per pixel. See benchmarks/bench_infer.py and the README.
SEGMENT_TILE = 1024

RELIABLE_RBC_COUNT = 10  # isolated round cells an estimate should rest on (rendered and Chula fields: 35-80)
RELIABLE_NETWORK_COUNT = 5  # RBCs the network's measurement (one window) should rest on


def estimate_rbc_diameter(rgb: np.ndarray) -> float:
    """Typical healthy-RBC diameter (px) in an RGB smear image: median size of isolated round cells.

    Raises InputError when no cell-like objects are found.
    """
    return measure_rbc_diameter(rgb)[0]


def measure_rbc_diameter(rgb: np.ndarray) -> tuple[float, int]:
    """(diameter px, isolated round cells it rests on). Fewer than ``RELIABLE_RBC_COUNT`` cells
    (crowded or pale fields such as BCCD, single-cell crops) means the value is a guess."""
    rgb = prepare_image(rgb)
    h, w = rgb.shape[:2]
    factor = max(1.0, max(h, w) / 1500)  # estimate on at most ~1500 px: plenty of RBCs, bounded time
    if factor > 1:
        rgb = (transform.resize(rgb, (round(h / factor), round(w / factor)), anti_aliasing=True) * 255).astype(np.uint8)
    # Stained cells absorb green; background glass is bright.
    green = ndi.gaussian_filter(rgb[..., 1].astype(np.float32), 1.0)
    if float(green.max() - green.min()) < 10:
        raise InputError("cannot estimate the RBC diameter: the image has no visible cells")
    # three levels (dark nuclei, cells, glass): a dark WBC must not pull the cell/glass threshold down
    fg = green < filters.threshold_multiotsu(green, classes=3, nbins=128)[1]
    fg = ndi.binary_fill_holes(fg)  # central pallor
    fg = ndi.binary_opening(fg, morphology.disk(1))
    lab = measure.label(fg)
    diam = []
    for r in measure.regionprops(lab):
        if r.area < 40:
            continue
        minr, minc, maxr, maxc = r.bbox
        if minr == 0 or minc == 0 or maxr == fg.shape[0] or maxc == fg.shape[1]:
            continue
        if r.solidity > 0.92 and r.eccentricity < 0.8:
            diam.append(r.equivalent_diameter_area)
    if len(diam) < 3:
        # few isolated whole cells (touching cells, small crops): each blob's widest inscribed disc
        dist = ndi.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
        widths = np.asarray(ndi.maximum(dist, lab, index=np.arange(1, lab.max() + 1))) * 2
        areas = np.bincount(lab.ravel())[1:]
        keep = (areas >= 40) & (widths >= 6)
        if not keep.any():
            raise InputError("cannot estimate the RBC diameter: no cell-like objects found; give it explicitly")
        widths, areas = widths[keep], areas[keep]
        order = np.argsort(widths)  # area-weighted median: specks and debris barely count
        cum = np.cumsum(areas[order])
        return float(widths[order][np.searchsorted(cum, cum[-1] / 2)] * factor), len(diam)
    diam = np.array(diam)
    # The bulk of round cells are RBCs; larger WBCs and small platelets sit in the tails.
    med = np.median(diam)
    core = diam[(diam > 0.6 * med) & (diam < 1.4 * med)]
    return float(np.median(core if core.size else diam) * factor), int(core.size)


def _resize_uint8(arr: np.ndarray, h: int, w: int, smooth: bool) -> np.ndarray:
    """Resize uint8 data without a float copy of the whole image (Pillow works in uint8):
    antialiased bilinear for images, nearest for class maps."""
    from PIL import Image

    method = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.array(Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), method))  # writable: users edit class maps


def _ramp(tile: int, overlap: int) -> np.ndarray:
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = r
        ramp[-overlap:] = np.minimum(ramp[-overlap:], r[::-1])
    return ramp


def _blend_window(tile: int, overlap: int, width: int | None = None) -> np.ndarray:
    """Stitching weights of a (tile, width or tile) tile: linear ramps over ``overlap`` px at each edge."""
    return np.outer(_ramp(tile, overlap), _ramp(tile if width is None else width, overlap))


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile + 1, stride))
    if s[-1] != n - tile:
        s.append(n - tile)
    return s


def _layout(n: int, tile: int, overlap: int, min_tile: int = TILE) -> tuple[int, list[int]]:
    """(tile length, starts) along one image side of ``n`` px: the fewest tiles of at most ``tile``
    px that overlap by at least ``overlap`` px, then shrunk (to a multiple of 16) and spread evenly,
    so little is computed twice. A side of at most ``tile`` px is one tile, padded to a multiple of
    16 and to at least ``min_tile`` px (the size the network was trained on). Tiles that are not
    shrunk keep the fixed stride ``tile - overlap`` (the last one flush with the side)."""
    if n <= tile:
        return max(-(-n // 16) * 16, min(min_tile, tile)), [0]
    k = -(-(n - overlap) // (tile - overlap))
    t = min(tile, max(-(-(-(-(n - overlap) // k) + overlap) // 16) * 16, min_tile))
    if t == tile:  # not shrunk: the fixed stride of earlier versions (tile=224 gives their labels)
        return t, _starts(n, t, t - overlap)
    return t, [(i * (n - t)) // (k - 1) for i in range(k)]


@dataclass
class Segmentation:
    labels: np.ndarray  # (H, W) uint8 class ids, input size
    confidence: np.ndarray  # (H, W) uint8, winning class probability x 255
    rbc_diameter: float  # px in the input image (given or estimated)
    rbc_diameter_estimated: bool
    scale: float  # model pixels per input pixel
    rbc_cells_measured: int | None = None  # RBCs behind an estimate (None: diameter given)
    rbc_scale_method: str = "given"  # 'given', 'pixel size', 'network' or 'classical'
    backend: str = "torch"  # what ran the network, e.g. 'openvino fp32', 'torch bf16'

    @property
    def rbc_diameter_uncertain(self) -> bool:
        """An estimate resting on too few cells to trust."""
        need = RELIABLE_NETWORK_COUNT if self.rbc_scale_method == ScaleMethod.NETWORK.value else RELIABLE_RBC_COUNT
        return self.rbc_diameter_estimated and (self.rbc_cells_measured or 0) < need

    def rbc_diameter_text(self) -> str:
        """e.g. '36.5 px (estimated from 38 isolated cells)' or '72.0 px (given)'."""
        if not self.rbc_diameter_estimated:
            return f"{self.rbc_diameter:.1f} px ({self.rbc_scale_method})"
        n = self.rbc_cells_measured or 0
        network = self.rbc_scale_method == ScaleMethod.NETWORK.value
        noun = ("RBC" if network else "isolated cell") + ("s" if n != 1 else "")
        text = f"{self.rbc_diameter:.1f} px (estimated from {n} {noun}{' found by the network' if network else ''})"
        return text + (": uncertain, give the RBC diameter" if self.rbc_diameter_uncertain else "")


@dataclass
class Prepared:
    """An input as RGB uint8, rescaled to the model's RBC scale: what the tiles are cut from."""

    scaled: np.ndarray  # (sh, sw, 3) uint8
    shape: tuple[int, int]  # the input's (height, width)
    rbc_diameter: float
    estimated: bool
    scale: float
    cells: int | None = None
    method: str = "given"


WBC_MIN_PROB = 0.75  # a pixel is WBC only where the WBC classes together hold this much probability
_NOT_WBC_IDS = np.array(PARTIAL_LABELS[NOT_WBC])
PLATELET_MIN_PROB = 0.8  # a pixel is a platelet (single or clump) only where those two classes hold this much
_PLATELET_IDS = np.array([int(BloodClass.THROMBOCYTE), int(BloodClass.PLATELET_CLUMP)])
_GLASS_OR_RBC_IDS = np.array([int(BloodClass.BACKGROUND), int(BloodClass.INFECTED_RBC), int(BloodClass.HEALTHY_RBC)])
assert all(np.array_equal(i, np.arange(i[0], i[-1] + 1)) for i in (WBC_IDS, _PLATELET_IDS))  # see _demote_weak


def _demote_weak(p: np.ndarray, wsum: np.ndarray, lab: np.ndarray, best: np.ndarray, ids: np.ndarray,
                 others: np.ndarray, min_prob: float) -> None:
    """Pixels whose arg-max is one of ``ids`` (consecutive class ids) but whose ``ids`` together hold
    less than ``min_prob`` of the (blend-weighted) probability take their best class of ``others``,
    in place.

    WBCs (``WBC_MIN_PROB``): the network draws WBCs fat; where a WBC touches an RBC or glass its edge
    is a half-WBC, half-other mixture that the arg-max of ten classes hands to the WBC (real-field
    benchmark, WBC Dice on expert masks at the given scale, 0.65 / 0.75 / 0.85: BCCD 0.877 → 0.891 /
    0.902 / 0.911, Zheng DS1 0.906 → 0.921 / 0.931 / 0.922, DS2 0.919 → 0.921 / 0.922 / 0.920; WBC
    types unchanged). Platelets (``PLATELET_MIN_PROB``, to glass or RBC): slivers along RBC rims and
    faint specks on the glass that the arg-max calls platelets (model card, session 29)."""
    rows, cols = np.nonzero((lab >= ids[0]) & (lab <= ids[-1]))  # ids are one run of class ids
    if not len(rows):
        return
    weak = p[ids[:, None], rows, cols].sum(0) < min_prob * wsum[rows, cols]  # only these pixels are read
    rows, cols = rows[weak], cols[weak]
    if not len(rows):
        return
    rest = p[others[:, None], rows, cols]
    k = rest.argmax(0)
    lab[rows, cols] = others[k]
    best[rows, cols] = rest[k, np.arange(len(k))]


class Segmenter:
    """A loaded model on a device, ready to segment images of any size."""

    def __init__(
        self,
        model: UNet,
        info: ModelInfo,
        device: str | Device | torch.device = "auto",
        tile: int = SEGMENT_TILE,
        overlap: int = 32,
        batch_size: int = 4,
        precision: str | Precision = "auto",
        fast: bool = True,
        tta: str | TTA = TTA.NONE,
        scale_method: str | ScaleMethod = ScaleMethod.NETWORK,
        backend: str | Backend = Backend.AUTO,
        tighten_wbcs: bool = True,
        wbc_min_prob: float | None = None,
        platelet_min_prob: float | None = None,
    ):
        self.tta = _tta_mode(tta)
        self.scale_method = _scale_method(scale_method)
        if tile % 16:
            raise ValueError(f"tile must be a multiple of 16, got {tile}")
        if not 0 <= overlap < tile // 2:
            raise ValueError(f"overlap must be in [0, {tile // 2}), got {overlap}")
        if _backend(backend) is Backend.OPENVINO and str(getattr(device, "value", device)).lower() == "auto":
            device = "cpu"  # OpenVINO asked for by name: the CPU, even where a GPU is present
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model, self.backend, self.dtype = inference_module(model, self.device, backend, precision, fast,
                                                                normalise=(info.mean, info.std))
        self.unet, self.precision = model, precision  # the torch network itself: the size model reads its features
        self._feature_nets = {}  # built on first use by scalehead.window_features, per kind of features
        self.fast = fast
        self.info = info
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.tighten_wbcs = tighten_wbcs  # postprocess.tighten_wbcs on each map (at the model's scale)
        # with the tightening off the map is the network's own arg-max, threshold included
        self.wbc_min_prob = (WBC_MIN_PROB if tighten_wbcs else 0.0) if wbc_min_prob is None else float(wbc_min_prob)
        if not 0 <= self.wbc_min_prob < 1:
            raise ValueError(f"wbc_min_prob must be in [0, 1), got {wbc_min_prob}")
        self.platelet_min_prob = ((PLATELET_MIN_PROB if tighten_wbcs else 0.0) if platelet_min_prob is None
                                  else float(platelet_min_prob))
        if not 0 <= self.platelet_min_prob < 1:
            raise ValueError(f"platelet_min_prob must be in [0, 1), got {platelet_min_prob}")
        # the automatic scale's windows: always TILE, the size model was fitted on windows of that size
        self.scale_window = TILE
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(info.std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)

    @classmethod
    def from_file(cls, path: str | Path | None = None, device: str | Device = "auto", **kw) -> "Segmenter":
        """Load a checkpoint (None: the shipped default model)."""
        model, info = load_checkpoint(path)
        return cls(model, info, device, **kw)

    @property
    def backend_text(self) -> str:
        """What runs the network, e.g. 'openvino fp32' or 'torch bf16'."""
        return f"{self.backend.value} {str(self.dtype).removeprefix('torch.').replace('float', 'fp').replace('bfp', 'bf')}"

    @torch.inference_mode()
    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 → (N, C, h, w) float32 softmax probabilities."""
        if self.backend is Backend.OPENVINO and self.tta is TTA.NONE:
            return self.model.probs(tiles)  # normalisation and softmax inside OpenVINO
        with self.autocast():
            probs = predict_probs(self.model, self.network_input(tiles), self.tta)  # the same TTA code for every backend
        return probs.cpu().numpy()

    def network_input(self, tiles: np.ndarray) -> torch.Tensor:
        """(N, h, w, 3) uint8 → the normalised (N, 3, h, w) float tensor the network takes, on the device."""
        x = torch.from_numpy(tiles).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        x = (x - self._mean) / self._std
        if self.backend is Backend.TORCH and self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """The autocast context of this segmenter's precision (torch backend only)."""
        on = self.backend is Backend.TORCH and self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=on)

    def count_tiles(self, height: int, width: int) -> int:
        """Tiles an image of this size (at model scale) is cut into."""
        return len(_layout(height, self.tile, self.overlap)[1]) * len(_layout(width, self.tile, self.overlap)[1])

    def _per_call(self, th: int, tw: int) -> int:
        """Tiles per network call: ``batch_size``, fewer for tiles larger than TILE (the same pixels
        a call, so large tiles do not multiply the memory)."""
        return max(1, min(self.batch_size, self.batch_size * TILE * TILE // (th * tw)))

    def prepare(self, image: np.ndarray, rbc_diameter: float | None = None) -> Prepared:
        """Convert to RGB uint8, find the RBC diameter when not given (the network runs for this
        unless the scale method is 'classical') and rescale to the model's RBC scale."""
        rgb = prepare_image(image)
        h, w = rgb.shape[:2]
        estimated, cells, method = rbc_diameter is None, None, "given"
        if estimated:
            rbc_diameter, cells, method = self.estimate_rbc_diameter(rgb)
        if not (rbc_diameter and rbc_diameter > 0 and math.isfinite(rbc_diameter)):
            raise InputError(f"RBC diameter must be a positive number of pixels, got {rbc_diameter}")
        scale = self.info.rbc_diameter_px / float(rbc_diameter)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        if abs(scale - 1) < 0.02:
            scale, scaled = 1.0, rgb
        else:
            if min(sh, sw) < 8 or sh * sw > 4e8:
                raise InputError(
                    f"RBC diameter {rbc_diameter:.1f} px would rescale the image to {sh}x{sw}: check --rbc-diameter"
                )
            scaled = _resize_uint8(rgb, sh, sw, smooth=True)
        return Prepared(scaled, (h, w), float(rbc_diameter), estimated, scale, cells, method)

    def iter_segment(
        self, image: np.ndarray | Prepared, rbc_diameter: float | None = None
    ) -> Generator[tuple[int, int], None, Segmentation]:
        """Segment, yielding (tiles done, tiles total); the generator's return value is the result.
        ``image`` may be the :meth:`prepare` of one (then ``rbc_diameter`` is ignored)."""
        prep = image if isinstance(image, Prepared) else self.prepare(image, rbc_diameter)
        (h, w), scale = prep.shape, prep.scale
        labels, conf = yield from self._tiled(prep.scaled)
        if self.tighten_wbcs:
            labels = tighten_wbcs(labels, self.info.rbc_diameter_px)
        if scale != 1.0:
            labels = _resize_uint8(labels, h, w, smooth=False)
            conf = _resize_uint8(conf, h, w, smooth=False)
        return Segmentation(labels, conf, prep.rbc_diameter, prep.estimated, scale, prep.cells, prep.method,
                            self.backend_text)

    def estimate_rbc_diameter(self, image: np.ndarray) -> tuple[float, int, str]:
        """(diameter px, cells it rests on, method): by the network when it finds RBCs (and the
        segmenter's scale method is 'network'), else by the classical threshold estimate."""
        rgb = prepare_image(image)
        if self.scale_method is ScaleMethod.NETWORK:
            from .autoscale import estimate_scale

            res = estimate_scale(self, rgb)
            if res is not None:
                return res.diameter, res.cells, ScaleMethod.NETWORK.value
        d, n = measure_rbc_diameter(rgb)
        return d, n, ScaleMethod.CLASSICAL.value

    def segment(
        self,
        image: np.ndarray | Prepared,
        rbc_diameter: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Segmentation:
        return drain(self.iter_segment(image, rbc_diameter), progress)

    def _tiled(self, rgb: np.ndarray) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
        """Sliding window over rows of tiles (:func:`_layout`: at most ``tile`` px, overlapping by at
        least ``overlap``); finished rows are reduced to uint8 at once, so memory holds one band of
        tile height of float probabilities, never the whole image's."""
        h, w = rgb.shape[:2]
        th, ys = _layout(h, self.tile, self.overlap)
        tw, xs = _layout(w, self.tile, self.overlap)
        ph, pw = max(h, th), max(w, tw)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        total, done = len(ys) * len(xs), 0
        win = _blend_window(th, self.overlap, tw)
        labels = np.zeros((ph, pw), np.uint8)
        conf = np.zeros((ph, pw), np.uint8)
        acc = np.zeros((NUM_CLASSES, th, pw), np.float32)
        wsum = np.zeros((th, pw), np.float32)
        row_weights = np.zeros((th, pw), np.float32)  # the blend weights of one row of tiles
        for x in xs:
            row_weights[:, x : x + tw] += win
        band0 = 0  # image row of acc[:, 0]
        per_call = self._per_call(th, tw)
        yield 0, total
        for y in ys:
            shift = y - band0
            if shift:
                self._flush(acc, wsum, labels, conf, band0, shift, self.wbc_min_prob, self.platelet_min_prob)
                acc[:, : th - shift] = acc[:, shift:]
                acc[:, th - shift :] = 0
                wsum[: th - shift] = wsum[shift:]
                wsum[th - shift :] = 0
                band0 = y
            wsum += row_weights
            for b in range(0, len(xs), per_call):
                bx = xs[b : b + per_call]
                probs = self.predict_tiles(np.stack([rgb[y : y + th, x : x + tw] for x in bx]))
                for p, x in zip(probs, bx):
                    p *= win
                    acc[:, :, x : x + tw] += p
                done += len(bx)
                yield done, total
        self._flush(acc, wsum, labels, conf, band0, min(th, ph - band0), self.wbc_min_prob,
                    self.platelet_min_prob)
        return labels[:h, :w], conf[:h, :w]

    @staticmethod
    def _flush(acc, wsum, labels, conf, row0: int, n: int, wbc_min_prob: float = 0.0,
               platelet_min_prob: float = 0.0) -> None:
        """Reduce the band's first ``n`` rows to labels and confidence (those rows of ``acc`` are spent)."""
        # one pass per class for both the arg-max and the max (numpy's argmax over the class axis
        # strides across memory: 3x slower); the blend weights are shared by all classes, so they
        # change only the confidence
        p = acc[:, :n]
        best = p[0].copy()
        lab = np.zeros(best.shape, np.uint8)
        for c in range(1, p.shape[0]):
            lab[p[c] > best] = c  # strict: ties keep the lower class, as argmax does
            np.maximum(best, p[c], out=best)
        if wbc_min_prob > 0:
            _demote_weak(p, wsum[:n], lab, best, WBC_IDS, _NOT_WBC_IDS, wbc_min_prob)
        if platelet_min_prob > 0:  # after the WBCs: a weak WBC pixel may have become a platelet
            _demote_weak(p, wsum[:n], lab, best, _PLATELET_IDS, _GLASS_OR_RBC_IDS, platelet_min_prob)
        labels[row0 : row0 + n] = lab
        best /= np.maximum(wsum[:n], 1e-8)
        best *= 255
        best += 0.5
        conf[row0 : row0 + n] = np.clip(best, 0, 255).astype(np.uint8)
