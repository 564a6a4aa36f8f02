"""Time-major recurrent layers for the backends whose recurrent lowerings read [N, T, F].

`batch_first(graph)` rewrites each `rnn`/`lstm`/`gru` with `time_major=true` into a permute of its
input to [N, T, F], the layer with `time_major=false`, and (for a sequence output) a permute of the
result back to [T, N, H·dirs]. The layer keeps its name, so its parameter paths and weights are the
same; every value of the graph keeps its name and type (the permutes write new values). PyTorch
takes the attribute as it is (`batch_first=False`); Keras, ONNX and MXNet lower the rewritten graph.
"""

from __future__ import annotations

from .graph import Graph, Node

RECURRENT = ("rnn", "lstm", "gru")


def batch_first(graph: Graph) -> Graph:
    if not any(n.op in RECURRENT and n.attrs.get("time_major") for n in graph.nodes):
        return graph
    values = dict(graph.values)
    names = {n.name for n in graph.nodes}

    def fresh(base: str, table: dict | set) -> str:
        name, i = base, 1
        while name in table:
            name, i = f"{base}_{i}", i + 1
        return name

    nodes: list[Node] = []
    for n in graph.nodes:
        if n.op not in RECURRENT or not n.attrs.get("time_major"):
            nodes.append(n)
            continue
        x = n.inputs[0]
        tx = values[x]
        xb = fresh(f"{x}.batch_first", values)
        values[xb] = tx.with_shape((tx.shape[1], tx.shape[0], *tx.shape[2:]))
        pin = fresh(f"{n.name}_batch_first", names)
        names.add(pin)
        nodes.append(Node(name=pin, op="permute", attrs={"dims": (1, 0, 2)}, inputs=(x,), outputs=(xb,), span=n.span))
        attrs = {**n.attrs, "time_major": False}
        outs = list(n.outputs)
        if attrs.get("output", "sequence") == "sequence":
            y = outs[0]
            ty = values[y]
            yb = fresh(f"{y}.batch_first", values)
            values[yb] = ty.with_shape((ty.shape[1], ty.shape[0], *ty.shape[2:]))
            outs[0] = yb
            nodes.append(n.model_copy(update={"attrs": attrs, "inputs": (xb, *n.inputs[1:]), "outputs": tuple(outs)}))
            pout = fresh(f"{n.name}_time_major", names)
            names.add(pout)
            nodes.append(Node(name=pout, op="permute", attrs={"dims": (1, 0, 2)}, inputs=(yb,), outputs=(y,), span=n.span))
        else:
            nodes.append(n.model_copy(update={"attrs": attrs, "inputs": (xb, *n.inputs[1:])}))
    return graph.model_copy(update={"nodes": nodes, "values": values})
