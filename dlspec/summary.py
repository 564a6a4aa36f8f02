"""`dlspec summary`: a per-layer table (path, op, output shape, parameters, FLOPs) and totals.

Parameters count what trains or could train (weights, biases, batch-norm scale and shift);
batch-norm running statistics are buffers, reported separately — the convention of PyTorch's
`sum(p.numel() for p in model.parameters())`. Keras counts the running statistics as
"non-trainable params"; `docs/language.md` explains the difference.

FLOPs are per sample (the `batch` symbol bound to 1), a multiply-add counting 2. When the batch
is a fixed size (`--set batch=32`, or a model declared on `float32[32, ...]`), the figures of the
whole batch are reported as such (`flops_per_batch`, `activation_bytes_per_batch`, `batch`) and
the per-sample ones are those divided by the batch size; every per-layer figure is per sample.
"""

from __future__ import annotations

from typing import Any

from .ir.dims import Dim, subs
from .ir.graph import Graph
from .ir.ops import get_op
from .ir.types import DTYPE_BYTES


def _count(d: Dim) -> int | str:
    return d if isinstance(d, int) else str(d)


def fixed_batch(g: Graph) -> int | None:
    """The batch size when every input's first axis is the same number (`--set batch=32`)."""
    firsts = {i.type.shape[0] if i.type.shape else None for i in g.inputs}
    if len(firsts) == 1:
        (b,) = firsts
        if isinstance(b, int) and not isinstance(b, bool) and b > 1:
            return b
    return None


def _per_sample(total: Dim, batch: int | None) -> int | float | str:
    if batch is None or not isinstance(total, int):
        return _count(total)
    return total // batch if total % batch == 0 else total / batch


def summarize(g: Graph, batch_symbol: str = "batch") -> dict[str, Any]:
    params = g.params()
    by_node: dict[str, list] = {}
    for p in params:
        by_node.setdefault(p.node, []).append(p)
    env = {batch_symbol: 1}
    batch = fixed_batch(g)
    rows = []
    total_flops: Dim = 0
    act_bytes: Dim = 0
    for node in g.nodes:
        op = get_op(node.op)
        ins = [g.values[v] for v in node.inputs]
        outs = [g.values[v] for v in node.outputs]
        attrs = op.attrs_from_dict(node.attrs)
        flops = subs(op.flops(attrs, ins, outs), env)
        total_flops = total_flops + flops
        for o in outs:
            n: Dim = DTYPE_BYTES[o.dtype]
            for d in o.shape:
                n = n * subs(d, env)
            act_bytes = act_bytes + n
        ps = [p for p in by_node.get(node.name, []) if not p.buffer]
        rows.append(
            {
                "path": node.name,
                "op": node.op,
                "output_shape": [o.shape_str() for o in outs] if len(outs) > 1 else outs[0].shape_str(),
                "params": sum(p.numel for p in ps),
                "trainable": all(p.trainable for p in ps) if ps else True,
                "flops": _per_sample(flops, batch),
                "line": node.span.line if node.span else None,
            }
        )
    trainable = sum(p.numel for p in params if not p.buffer and p.trainable)
    total = sum(p.numel for p in params if not p.buffer)
    buffers = sum(p.numel for p in params if p.buffer)
    return {
        "model": g.name,
        "inputs": {i.name: str(i.type) for i in g.inputs},
        "outputs": {o.name: str(g.values[o.value]) for o in g.outputs},
        "layers": rows,
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "buffers": buffers,
        "flops_per_sample": _per_sample(total_flops, batch),
        "param_bytes": 4 * (total + buffers),
        "activation_bytes_per_sample": _per_sample(act_bytes, batch),
        **({"batch": batch, "flops_per_batch": _count(total_flops), "activation_bytes_per_batch": _count(act_bytes)}
           if batch is not None else {}),
    }


def human(n: int | str) -> str:
    if isinstance(n, str):
        return n
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def human_bytes(n: int | str) -> str:
    if isinstance(n, str):
        return n + " B"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:g} B" if isinstance(n, float) else f"{n} B"


def render(s: dict[str, Any]) -> str:
    """The summary as a plain-text table, like Keras's `model.summary()`."""
    headers = ("Layer (path)", "Op", "Output shape", "Params", "FLOPs/sample")
    rows = [
        (r["path"] + ("" if r["trainable"] else " (frozen)"), r["op"],
         r["output_shape"] if isinstance(r["output_shape"], str) else ", ".join(r["output_shape"]),
         f"{r['params']:,}", human(r["flops"]))
        for r in s["layers"]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "─" * (sum(widths) + 2 * (len(widths) - 1))

    def fmt(cells) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    ins = ", ".join(f"{k}: {v}" for k, v in s["inputs"].items())
    outs = ", ".join(f"{k}: {v}" for k, v in s["outputs"].items())
    out = [f'Model "{s["model"]}"   inputs: {ins}', line, fmt(headers), line]
    out += [fmt(r) for r in rows]
    out += [
        line,
        f"Total params:         {s['total_params']:,}",
        f"Trainable params:     {s['trainable_params']:,}",
        f"Non-trainable params: {s['non_trainable_params']:,}",
        f"Buffers (running statistics): {s['buffers']:,}",
        f"FLOPs per sample:     {human(s['flops_per_sample'])}",
        *([f"FLOPs per batch:      {human(s['flops_per_batch'])} (batch of {s['batch']})"] if "batch" in s else []),
        f"Parameter memory:     {human_bytes(s['param_bytes'])} (float32, buffers included)",
        f"Activation memory:    {human_bytes(s['activation_bytes_per_sample'])} per sample (forward outputs)",
        *([f"                      {human_bytes(s['activation_bytes_per_batch'])} per batch of {s['batch']}"]
          if "batch" in s else []),
        f"Outputs: {outs}",
    ]
    return "\n".join(out)
