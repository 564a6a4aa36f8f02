"""The recipe's losses in PyTorch: `fn(out, y, **settings)` → a scalar, for one output head.

`torch_recipe.LOSSES` maps each loss type to one of these functions and its settings; the
trainer calls them, and the standalone training script embeds their source (so this module holds
plain functions over `torch` and `F` only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _class_last(out, y):
    """[N, T, C] sequence outputs against [N, T] labels → [N, C, T], as the class losses take them."""
    if out.ndim == y.ndim + 1 and out.ndim > 2 and out.shape[: y.ndim] == y.shape:
        return out.movedim(-1, 1)
    return out


def cross_entropy(out, y, class_weights=None, label_smoothing=0.0, ignore_index=-100):
    out = _class_last(out, y)
    w = torch.tensor(class_weights, device=out.device, dtype=out.dtype) if class_weights else None
    return F.cross_entropy(out, y.long(), weight=w, label_smoothing=label_smoothing, ignore_index=ignore_index)


def nll(out, y, class_weights=None):
    out = _class_last(out, y)
    w = torch.tensor(class_weights, device=out.device, dtype=out.dtype) if class_weights else None
    return F.nll_loss(out, y.long(), weight=w)


def bce_with_logits(out, y, pos_weight=None):
    w = torch.tensor(pos_weight, device=out.device, dtype=out.dtype) if pos_weight is not None else None
    return F.binary_cross_entropy_with_logits(out, y.to(out.dtype).reshape(out.shape), pos_weight=w)


def bce(out, y, pos_weight=None):
    y = y.to(out.dtype).reshape(out.shape)
    if pos_weight is None:
        return F.binary_cross_entropy(out, y)
    # positives weighted; logs clamped at -100 as PyTorch's BCELoss does
    log_p = torch.clamp(torch.log(out), min=-100)
    log_q = torch.clamp(torch.log1p(-out), min=-100)
    return -(pos_weight * y * log_p + (1 - y) * log_q).mean()


def mse(out, y):
    return F.mse_loss(out, y.to(out.dtype).reshape(out.shape))


def mae(out, y):
    return F.l1_loss(out, y.to(out.dtype).reshape(out.shape))


def huber(out, y, delta=1.0):
    return F.huber_loss(out, y.to(out.dtype).reshape(out.shape), delta=delta)


def kl_div(out, y, log_target=False):
    return F.kl_div(out, y.to(out.dtype), reduction="batchmean", log_target=log_target)


def dice(out, y, smooth=1.0):
    if out.shape == y.shape:
        p = torch.sigmoid(out)
        t = y.float()
    else:
        p = torch.softmax(out, dim=1)
        t = F.one_hot(y.long(), out.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(1, p.ndim))
    inter = (p * t).sum(dims)
    score = (2 * inter + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return 1 - score.mean()
