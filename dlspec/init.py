"""Fresh weights without a framework: numpy draws from PyTorch's default distributions.

`init_weights(graph, seed)` returns one array per parameter and buffer of `graph`, keyed by IR
parameter path, in the canonical (PyTorch) layout — what `torch.nn` would give a freshly built
module, in distribution (not bit for bit: the random streams differ). It is used where a model
is exported before it is trained (`dlspec compile --target onnx` without `--weights`).

The rules live with each op in the catalogue (`OpDef.initial`); they follow PyTorch's
`reset_parameters`:

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

import numpy as np

from .ir.graph import Graph
from .ir.ops import get_op

__all__ = ["init_weights"]


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """{parameter path: float32 array} for every parameter and buffer of `graph`, each drawn by
    its op's catalogue rule (`OpDef.initial`)."""
    rng = np.random.default_rng(seed)
    nodes = {n.name: n for n in graph.nodes}
    params = graph.params()
    local: dict[str, dict[str, tuple[int, ...]]] = {}
    for p in params:
        local.setdefault(p.node, {})[p.name] = tuple(int(d) for d in p.shape)
    out: dict[str, np.ndarray] = {}
    for p in params:
        node = nodes[p.node]
        op = get_op(node.op)
        try:
            value = op.initial(op.attrs_from_dict(node.attrs), p.name, local[p.node], rng)
        except NotImplementedError:
            raise ValueError(f"no initialization rule for parameter `{p.path}` of op {node.op}") from None
        out[p.path] = np.asarray(value).astype(np.float32)
    return out
