"""Batch-norm folding for inference: a `batchnorm1d`/`batchnorm2d` right after a convolution,
a transposed convolution or a dense layer becomes part of that layer's weight and bias.

In inference batch norm is the per-channel affine map y = γ (x − μ) / √(σ² + ε) + β with the
running statistics μ, σ². With s = γ / √(σ² + ε), the producing layer's weight is scaled by s
along its output channels and its bias becomes (b − μ) s + β; a layer without a bias gains
one (`bias=true`; the parameter `<layer>.bias` is new). Level 2 only: in training batch norm
normalizes with the batch's statistics, which no fixed weights reproduce.

Folded only when the layer's output feeds the batch norm alone (not a graph output), the
channel axis of the batch norm is the layer's output-channel axis (a dense layer on a 2-D
input), and — when weights are given — they hold every array the fold needs.

    conv2d(64, kernel=3, bias=false) -> batchnorm2d()     →   conv2d(64, kernel=3, bias=true)
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.ops import get_op
from .rewrite import Change, GraphEdit, PassResult, Weights, only_reader

NAME = "fold_batchnorm"
SUMMARY = "fold batch norm into the preceding conv, transposed conv or dense layer"
INFERENCE_ONLY = True

def _foldable(layer: Node, bn: Node, graph: Graph) -> bool:
    """The layer's output channels (axis 0 of an "out_first" weight, the output's features) are
    the batch norm's axis 1: always for a convolution, for a dense layer on [N, features]."""
    op = get_op(layer.op)
    if op.bn_fold is None:
        return False
    return op.layout == "channels_first" or graph.values[layer.outputs[0]].rank == 2


def _scaled_weight(layer: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """`w` with each output channel's slice multiplied by s[channel]."""
    if get_op(layer.op).bn_fold == "transposed":
        groups = int(layer.attrs.get("groups", 1))
        cin, out_per_group = w.shape[0], w.shape[1]
        in_per_group = cin // groups
        # weight [in, out/groups, k...]: row i belongs to group i // in_per_group
        idx = (np.arange(cin)[:, None] // in_per_group) * out_per_group + np.arange(out_per_group)[None, :]
        factor = s[idx]
        return w * factor.reshape(factor.shape + (1,) * (w.ndim - 2))
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1))


def _fold_arrays(layer: Node, bn: Node, weights: Weights) -> dict[str, np.ndarray] | None:
    need = [f"{layer.name}.weight", f"{bn.name}.running_mean", f"{bn.name}.running_var"]
    if bn.attrs.get("affine", True):
        need += [f"{bn.name}.weight", f"{bn.name}.bias"]
    if layer.attrs.get("bias", True):
        need.append(f"{layer.name}.bias")
    if any(k not in weights for k in need):
        return None
    w = weights[f"{layer.name}.weight"]
    dtype = w.dtype
    mean = weights[f"{bn.name}.running_mean"].astype(np.float64)
    var = weights[f"{bn.name}.running_var"].astype(np.float64)
    c = mean.shape[0]
    gamma = weights[f"{bn.name}.weight"].astype(np.float64) if bn.attrs.get("affine", True) else np.ones(c)
    beta = weights[f"{bn.name}.bias"].astype(np.float64) if bn.attrs.get("affine", True) else np.zeros(c)
    b = weights[f"{layer.name}.bias"].astype(np.float64) if layer.attrs.get("bias", True) else np.zeros(c)
    s = gamma / np.sqrt(var + float(bn.attrs.get("eps", 1e-5)))
    return {
        f"{layer.name}.weight": _scaled_weight(layer, w.astype(np.float64), s).astype(dtype),
        f"{layer.name}.bias": ((b - mean) * s + beta).astype(dtype),
    }


def run(graph: Graph, weights: Weights | None) -> PassResult:
    edit = GraphEdit(graph)
    changes = []
    out = dict(weights) if weights is not None else None
    for bn in graph.nodes:
        if not get_op(bn.op).folds_into_preceding:
            continue
        layer = edit.producers.get(bn.inputs[0])
        if layer is None or edit.dropped(layer.name) or not only_reader(edit, layer.outputs[0]):
            continue
        if not _foldable(layer, bn, graph) or not edit.can_forward(bn.outputs[0], layer.outputs[0]):
            continue
        if out is not None:
            arrays = _fold_arrays(layer, bn, out)
            if arrays is None:
                continue
            out.update(arrays)
            for k in ("weight", "bias", "running_mean", "running_var"):
                out.pop(f"{bn.name}.{k}", None)
        gained = not layer.attrs.get("bias", True)
        if gained:
            edit.replace(layer, edit.current(layer).model_copy(update={"attrs": {**layer.attrs, "bias": True}}))
        edit.forward(bn, {bn.outputs[0]: layer.outputs[0]})
        changes.append(Change("folded", (bn.name, layer.name),
                              f"{bn.op} `{bn.name}` folded into {layer.op} `{layer.name}`"
                              + (" (gains a bias)" if gained else "")))
    return PassResult(edit.build(), out, changes)
