"""Per-class evaluation: precision, recall, F1 and support per class, and the confusion matrix,
as `dlspec evaluate` prints them (a table, JSON, a PNG). numpy only, except the PNG (matplotlib).

Rows of the confusion matrix are the true classes, columns the predicted ones; every class the
run knows has a row and a column, also those absent from the data evaluated (support 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics import predicted_labels


def class_report(output: np.ndarray, target: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """{"classes", "per_class": [{class, precision, recall, f1, support}], "confusion": k×k list,
    "macro": {...}, "weighted": {...}} for one classification output."""
    k = len(classes)
    pred = predicted_labels(output, target).reshape(-1).astype(np.int64)
    true = target.reshape(-1).astype(np.int64)
    valid = (true >= 0) & (true < k) & (pred >= 0) & (pred < k)
    cm = np.bincount(true[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    rows = [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)]
    present = support > 0
    total = support.sum()

    def avg(weights: np.ndarray) -> dict[str, float]:
        w = weights / weights.sum() if weights.sum() else weights
        return {"precision": float((precision * w).sum()), "recall": float((recall * w).sum()),
                "f1": float((f1 * w).sum()), "support": int(total)}

    return {"classes": list(classes), "per_class": rows, "confusion": cm.tolist(),
            "accuracy": float(tp.sum() / total) if total else 0.0,
            "macro": avg(present.astype(np.float64)),  # over the classes present in the data
            "weighted": avg(support)}


def render(report: dict[str, Any]) -> str:
    """The per-class table and the confusion matrix as text."""
    names = report["classes"]
    w = max([len("weighted avg"), *(len(n) for n in names)])
    lines = [f"{'class'.ljust(w)}  precision  recall     f1  support"]
    for r in report["per_class"]:
        lines.append(f"{r['class'].ljust(w)}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  {r['support']:7d}")
    for key, label in (("macro", "macro avg"), ("weighted", "weighted avg")):
        a = report[key]
        lines.append(f"{label.ljust(w)}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:.4f}  {a['support']:7d}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cm = report["confusion"]
    cw = max([5, *(len(n) for n in names), *(len(str(v)) for row in cm for v in row)])
    lines.append(" " * (w + 2) + " ".join(n.rjust(cw) for n in names))
    for n, row in zip(names, cm, strict=True):
        lines.append(n.ljust(w) + "  " + " ".join(str(v).rjust(cw) for v in row))
    return "\n".join(lines)


def plot_confusion(report: dict[str, Any], path: Path, title: str) -> Path:
    """The confusion matrix as a PNG with the class names on both axes (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write

    names = report["classes"]
    cm = np.asarray(report["confusion"])
    size = max(3.5, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100), suffix=".png")
    finally:
        plt.close(fig)
    return Path(path)
