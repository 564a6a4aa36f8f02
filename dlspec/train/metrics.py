"""Metrics computed with numpy on a whole split's predictions, so every backend reports the
same numbers: accuracy, top-k, precision/recall/F1 (macro and micro), MSE/MAE/R², IoU and Dice.

`outputs` are raw model outputs (logits or values); `targets` the data's targets. The class axis
is 1 for [N, C, ...] outputs, or the last axis when the target is [N, T] and the output
[N, T, C] (sequence labelling). A single-logit output is a binary classifier (threshold 0).
"""

from __future__ import annotations

import numpy as np

from ..ir.training import Metric


def class_axis(output: np.ndarray, target: np.ndarray) -> int:
    if output.ndim == target.ndim + 1 and output.shape[: target.ndim] == target.shape:
        return output.ndim - 1
    return 1


def predicted_labels(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    if _single_logit(output, target):
        return (output > 0).astype(np.int64).reshape(target.shape)
    return np.argmax(output, axis=class_axis(output, target))


def _single_logit(output: np.ndarray, target: np.ndarray) -> bool:
    """A binary classifier's one logit per example (or per pixel)."""
    return output.ndim == 1 or output.shape[class_axis(output, target)] == 1


def _confusion(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    idx = true.reshape(-1).astype(np.int64) * k + pred.reshape(-1).astype(np.int64)
    valid = (true.reshape(-1) >= 0) & (true.reshape(-1) < k)
    return np.bincount(idx[valid], minlength=k * k).reshape(k, k)


def _prf(cm: np.ndarray, which: str, average: str) -> float:
    tp = np.diag(cm).astype(np.float64)
    if average == "micro":
        # single-label classification: micro precision = recall = F1 = accuracy
        return float(tp.sum() / max(cm.sum(), 1))
    pred_pos = cm.sum(axis=0).astype(np.float64)
    true_pos = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, pred_pos, out=np.zeros_like(tp), where=pred_pos > 0)
    recall = np.divide(tp, true_pos, out=np.zeros_like(tp), where=true_pos > 0)
    present = true_pos > 0
    if which == "precision":
        vals = precision
    elif which == "recall":
        vals = recall
    else:
        denom = precision + recall
        vals = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(vals[present].mean()) if present.any() else 0.0


def _binary_masks(output: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if output.shape == target.shape:  # one logit channel, a 0/1 mask
        return output > 0, target > 0.5
    return predicted_labels(output, target), target


def _iou_dice(output: np.ndarray, target: np.ndarray, kind: str) -> float:
    pred, true = _binary_masks(output, target)
    if pred.dtype == bool:
        inter = float(np.logical_and(pred, true).sum())
        a, b = float(pred.sum()), float(true.sum())
        union = a + b - inter
        if kind == "iou":
            return inter / union if union else 1.0
        return 2 * inter / (a + b) if a + b else 1.0
    classes = np.unique(true)
    vals = []
    for c in classes:
        p, t = pred == c, true == c
        inter = float(np.logical_and(p, t).sum())
        a, b = float(p.sum()), float(t.sum())
        vals.append(inter / (a + b - inter) if kind == "iou" else 2 * inter / (a + b))
    return float(np.mean(vals))


def compute(metric: Metric, output: np.ndarray, target: np.ndarray, num_classes: int | None = None) -> float:
    t = metric.type
    if t in ("mse", "mae", "r2"):
        o = output.reshape(target.shape).astype(np.float64)
        y = target.astype(np.float64)
        if t == "mse":
            return float(np.mean((o - y) ** 2))
        if t == "mae":
            return float(np.mean(np.abs(o - y)))
        ss_res = float(np.sum((y - o) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - ss_res / ss_tot if ss_tot else 0.0
    if t in ("iou", "dice"):
        return _iou_dice(output, target, t)
    pred = predicted_labels(output, target)
    if t == "accuracy":
        return float(np.mean(pred == target))
    if t == "top_k":
        ax = class_axis(output, target)
        k = min(metric.k, output.shape[ax])
        top = np.argsort(-output, axis=ax).take(range(k), axis=ax)
        return float(np.mean(np.any(top == np.expand_dims(target, ax), axis=ax)))
    k = num_classes or int(max(output.shape[class_axis(output, target)], 2, target.max() + 1))
    if _single_logit(output, target):
        k = 2
    cm = _confusion(pred, target, k)
    return _prf(cm, t, metric.average)


def default_mode(monitor: str) -> str:
    name = monitor.removeprefix("val_")
    lower_better = ("loss", "mse", "mae")
    return "min" if any(name == m or name.endswith("_" + m) for m in lower_better) else "max"
