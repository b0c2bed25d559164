"""Training losses."""

from __future__ import annotations

import torch
from torch import nn

from .classes import NUM_CLASSES, PARTIAL_LABELS


class PartialCrossEntropy(nn.Module):
    """Class-weighted softmax cross-entropy that also learns from partial labels.

    A pixel labelled with a class id is ordinary weighted cross-entropy; a pixel labelled with a
    code of :data:`classes.PARTIAL_LABELS` (e.g. 'some WBC', 'not a WBC') costs -log of the summed
    probability of the classes the code allows, weighted by the smallest weight among them;
    255 is ignored. The mean is over the summed weights, as in ``nn.CrossEntropyLoss``, so with no
    partial labels the two agree.
    """

    def __init__(self, weight: torch.Tensor | None = None):
        super().__init__()
        w = torch.ones(NUM_CLASSES) if weight is None else weight.float()
        self.register_buffer("weight", w)
        self.partial = {code: torch.tensor(members) for code, members in PARTIAL_LABELS.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=1)
        full = target < NUM_CLASSES
        t = torch.where(full, target, torch.zeros_like(target))
        w = self.weight[t] * full
        num = -(logp.gather(1, t.unsqueeze(1)).squeeze(1) * w).sum()
        den = w.sum()
        for code, members in self.partial.items():
            sel = target == code
            if not bool(sel.any()):
                continue
            members = members.to(logits.device)
            lp = torch.logsumexp(logp.index_select(1, members), dim=1)
            wc = self.weight[members].min()
            num = num - (lp[sel] * wc).sum()
            den = den + wc * sel.sum()
        return num / den.clamp_min(1e-8)




def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      where: torch.Tensor | None = None, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-pixel KL(teacher ‖ student) of the class distributions ("learning without
    forgetting"): a fine-tune pays for moving away from its starting model, over all pixels or
    those of the boolean map ``where`` (N, H, W). With ``classes`` (channel ids), the distribution
    compared is those classes plus one bin for all the others: the other classes may trade
    probability among themselves freely (e.g. RBC against background, with the WBC classes kept)."""
    t = torch.log_softmax(teacher_logits.float(), dim=1)
    s = torch.log_softmax(student_logits.float(), dim=1)
    if classes is not None:
        classes = classes.to(t.device)
        rest = torch.ones(t.shape[1], dtype=torch.bool, device=t.device)
        rest[classes] = False
        t, s = (torch.cat([x.index_select(1, classes), torch.logsumexp(x[:, rest], dim=1, keepdim=True)], dim=1)
                for x in (t, s))
    kl = (t.exp() * (t - s)).sum(1)
    if where is None:
        return kl.mean()
    return (kl * where).sum() / where.sum().clamp_min(1)
