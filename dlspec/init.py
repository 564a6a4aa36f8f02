"""Fresh weights without a framework: numpy draws from PyTorch's default distributions.

`init_weights(graph, seed)` returns one array per parameter and buffer of `graph`, keyed by IR
parameter path, in the canonical (PyTorch) layout — what `torch.nn` would give a freshly built
module, in distribution (not bit for bit: the random streams differ). It is used where a model
is exported before it is trained (`dlspec compile --target onnx` without `--weights`).

The rules, by op (PyTorch's `reset_parameters`):

* dense, conv*, conv_transpose*: weight and bias ~ U(-1/√fan_in, 1/√fan_in)
  (kaiming_uniform with a=√5 gives exactly that bound for the weight); for a transposed
  convolution fan_in is computed from its [in, out/groups, k…] weight as torch does.
* embedding: N(0, 1), the padding row zero.
* batch norm: weight 1, bias 0, running_mean 0, running_var 1; layer and group norm: 1 and 0.
* rnn, lstm, gru: every weight and bias ~ U(-1/√hidden, 1/√hidden).
* multihead_attention (and the encoder's self_attn): in_proj_weight Xavier-uniform,
  in_proj_bias and out_proj.bias 0, out_proj.weight U(-1/√E, 1/√E); the encoder's linear1,
  linear2 as dense; its norms 1 and 0.
"""

from __future__ import annotations

import math

import numpy as np

from .ir.graph import Graph, Param

__all__ = ["init_weights"]


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """{parameter path: float32 array} for every parameter and buffer of `graph`."""
    rng = np.random.default_rng(seed)
    ops = {n.name: n for n in graph.nodes}
    params = graph.params()
    shapes = {p.path: tuple(int(d) for d in p.shape) for p in params}
    out: dict[str, np.ndarray] = {}
    for p in params:
        node = ops[p.node]
        out[p.path] = _draw(rng, node.op, node.attrs, p, shapes).astype(np.float32)
    return out


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape)


def _fan_in(shape: tuple[int, ...]) -> int:
    """torch.nn.init._calculate_fan_in_and_fan_out's fan_in: dim 1 times the receptive field."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive


def _linear_like(rng: np.random.Generator, shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> np.ndarray:
    fan_in = _fan_in(weight_shape)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _uniform(rng, bound, shape)


def _draw(rng: np.random.Generator, op: str, attrs: dict, p: Param, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    name, shape = p.name, shapes[p.path]
    if op in ("dense", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"):
        return _linear_like(rng, shape, shapes[f"{p.node}.weight"])
    if op == "embedding":
        table = rng.standard_normal(shape)
        if attrs.get("padding_idx") is not None:
            table[attrs["padding_idx"]] = 0.0
        return table
    if op in ("batchnorm1d", "batchnorm2d", "layernorm", "groupnorm"):
        return np.ones(shape) if name in ("weight", "running_var") else np.zeros(shape)
    if op in ("rnn", "lstm", "gru"):
        return _uniform(rng, 1.0 / math.sqrt(attrs["hidden"]), shape)
    if op == "multihead_attention":
        return _attention(rng, name, shape)
    if op == "transformer_encoder":
        if name.startswith("self_attn."):
            return _attention(rng, name.removeprefix("self_attn."), shape)
        if name.startswith(("norm1.", "norm2.")):
            return np.ones(shape) if name.endswith(".weight") else np.zeros(shape)
        layer = name.split(".")[0]
        return _linear_like(rng, shape, shapes[f"{p.node}.{layer}.weight"])
    raise ValueError(f"no initialization rule for parameter `{p.path}` of op {op}")


def _attention(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name == "in_proj_weight":
        fan_out, fan_in = shape
        return _uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), shape)
    if name == "out_proj.weight":
        return _uniform(rng, 1.0 / math.sqrt(shape[1]), shape)
    return np.zeros(shape)
