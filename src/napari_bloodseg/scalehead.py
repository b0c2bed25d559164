"""A size model on the network's own features (after Cellpose's SizeModel): from a window of the
image resampled at a candidate scale, predict how far the RBCs in it are from the training size.

Features are the U-Net's bottleneck activations (mean and standard deviation per channel) and, for
heads fitted before session 21, the mean class probabilities of the window; a one-hidden-layer
perceptron maps them to ``u = log(RBC diameter in the window / training diameter)``. A head that
reads the bottleneck alone needs only the way down of the network (0.4 of a full pass), and stays
exact when only the decoder is fine-tuned. The head is fitted per checkpoint
(scripts/fit_scale_head.py) and stored in it as ``scale_head.*`` tensors; training the encoder
drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PREFIX = "scale_head."
_KEYS = ("mean", "std", "w1", "b1", "w2", "b2")


@dataclass
class ScaleHead:
    mean: np.ndarray  # (F,) feature standardisation
    std: np.ndarray
    w1: np.ndarray  # (F, H)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H,)
    b2: float
    u_range: float  # |u| the head was fitted on
    reads_classes: bool = False  # features include the mean class probabilities (needs the decoder)

    @torch.inference_mode()
    def predict(self, feats: np.ndarray) -> np.ndarray:
        """u for each row of ``feats`` (N, F)."""
        # in torch, not numpy: numpy's BLAS called right after a torch pass waits ~10 ms for its
        # threads (measured on 2 cores: 11 ms against 0.3 ms), a fifteenth of the whole estimate
        t = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in
             (("x", feats), ("mean", self.mean), ("std", self.std), ("w1", self.w1), ("b1", self.b1), ("w2", self.w2))}
        hidden = torch.relu(((t["x"] - t["mean"]) / t["std"]) @ t["w1"] + t["b1"])
        return (hidden @ t["w2"] + self.b2).clamp(-self.u_range, self.u_range).numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        arrays = {"mean": self.mean, "std": self.std, "w1": self.w1, "b1": self.b1, "w2": self.w2,
                  "b2": np.array([self.b2]), "u_range": np.array([self.u_range]),
                  "reads_classes": np.array([float(self.reads_classes)])}
        return {PREFIX + k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in arrays.items()}

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor]) -> "ScaleHead":
        """From a checkpoint's ``scale_head.*`` tensors; ValueError when they do not fit together."""
        try:
            a = {k: state[PREFIX + k].float().numpy() for k in (*_KEYS, "u_range")}
        except KeyError as e:
            raise ValueError(f"scale head incomplete: no {e.args[0]}") from None
        f, h = a["w1"].shape if a["w1"].ndim == 2 else (-1, -1)
        if a["mean"].shape != (f,) or a["std"].shape != (f,) or a["b1"].shape != (h,) or a["w2"].shape != (h,):
            raise ValueError("scale head: tensor shapes do not fit together")
        # heads stored before the key existed all read the class probabilities
        reads = state.get(PREFIX + "reads_classes")
        return cls(a["mean"], a["std"], a["w1"], a["b1"], a["w2"], float(a["b2"][0]), float(a["u_range"][0]),
                   reads_classes=True if reads is None else bool(reads.float().numpy()[0]))


def fit_head(feats: np.ndarray, u: np.ndarray, hidden: int = 64, epochs: int = 60, u_range: float = 2.5,
             seed: int = 0, reads_classes: bool = False) -> ScaleHead:
    """Fit the perceptron (input dropout 0.2, AdamW, smooth L1) on standardised features
    (``reads_classes``: they are :func:`window_features` with ``classes=True``)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    x = torch.tensor((feats - mean) / std, dtype=torch.float32)
    y = torch.tensor(u, dtype=torch.float32)
    lin1, lin2 = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 1)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), lin1, torch.nn.ReLU(), lin2)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            b = perm[i : i + 128]
            loss = torch.nn.functional.smooth_l1_loss(net(x[b])[:, 0], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    d = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    return ScaleHead(mean.astype(np.float32), std.astype(np.float32), d(lin1.weight).T.copy(), d(lin1.bias),
                     d(lin2.weight)[0], float(lin2.bias.item()), u_range, reads_classes)


def _folded(head: ScaleHead) -> ScaleHead:
    """The same head with its feature standardisation folded into the first layer (mean 0, std 1)."""
    w1 = head.w1 / head.std[:, None]
    b1 = head.b1 - (head.mean / head.std) @ head.w1
    f = len(head.mean)
    return ScaleHead(np.zeros(f, np.float32), np.ones(f, np.float32), w1.astype(np.float32), b1.astype(np.float32),
                     head.w2, head.b2, head.u_range, head.reads_classes)


def ensemble(heads: list[ScaleHead]) -> ScaleHead:
    """One head whose prediction is the mean of ``heads``: their hidden layers side by side (heads
    fitted on other feature sets get their standardisation folded into the first layer). The clip to
    ±u_range comes after the mean, as for one head."""
    first = heads[0]
    if any(h.w1.shape[0] != first.w1.shape[0] or h.reads_classes != first.reads_classes for h in heads):
        raise ValueError("heads of an ensemble must read the same features")
    if any(not (np.array_equal(h.mean, first.mean) and np.array_equal(h.std, first.std)) for h in heads):
        heads = [_folded(h) for h in heads]
        first = heads[0]
    k = len(heads)
    return ScaleHead(first.mean, first.std, np.concatenate([h.w1 for h in heads], 1), np.concatenate([h.b1 for h in heads]),
                     np.concatenate([h.w2 for h in heads]) / k, float(np.mean([h.b2 for h in heads])),
                     max(h.u_range for h in heads), first.reads_classes)


class FeatureNet(torch.nn.Module):
    """The U-Net's window features from the way down only: bottleneck mean and standard deviation
    per channel."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    @staticmethod
    def _stats(b: torch.Tensor) -> list[torch.Tensor]:
        b = b.float()
        return [b.mean((2, 3)), b.std((2, 3))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._stats(self.unet.encode(x)[1]), dim=1)


class FeatureNetWithClasses(FeatureNet):
    """The same, then the mean class probabilities: a full pass (the heads of sessions 12-20).
    A class of its own, so that the OpenVINO cache (keyed by class and weights) tells the two apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, b = self.unet.forward_with_bottleneck(x)
        return torch.cat([*self._stats(b), torch.softmax(logits.float(), dim=1).mean((2, 3))], dim=1)


def _feature_net(segmenter, classes: bool):
    """The segmenter's FeatureNet on its own backend (built once per segmenter and kind)."""
    if classes not in segmenter._feature_nets:
        from .infer import Backend, fuse_for_inference

        net = (FeatureNetWithClasses if classes else FeatureNet)(fuse_for_inference(segmenter.unet)).eval()
        if segmenter.backend is Backend.OPENVINO:
            from .backend_openvino import compile_module

            request = compile_module(net, str(getattr(segmenter.precision, "value", segmenter.precision)).lower()).create_infer_request()

            def run(x: torch.Tensor) -> torch.Tensor:
                out = request.infer({0: np.ascontiguousarray(x.cpu().numpy())}, share_inputs=True, share_outputs=False)
                return torch.from_numpy(np.asarray(out[0]))

            segmenter._feature_nets[classes] = run
        else:
            segmenter._feature_nets[classes] = net.to(segmenter.device)
    return segmenter._feature_nets[classes]


@torch.inference_mode()
def window_features(segmenter, tiles: np.ndarray, classes: bool = False) -> np.ndarray:
    """Features (N, F) of uint8 tiles (N, h, w, 3), one plain pass (no test-time augmentation) on
    the segmenter's backend; ``classes`` adds the mean class probabilities (a full pass)."""
    net = _feature_net(segmenter, classes)
    with segmenter.autocast():
        feats = net(segmenter.network_input(tiles))
    return feats.float().cpu().numpy()
