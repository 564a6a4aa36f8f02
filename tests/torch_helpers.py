"""Shared helpers for tests that run generated PyTorch modules."""

from __future__ import annotations

import numpy as np

from dlspec.ir.dims import subs, symbols_of
from dlspec.ir.graph import Graph


def symbols(graph: Graph) -> list[str]:
    out: set[str] = set()
    for i in graph.inputs:
        for d in i.type.shape:
            out |= symbols_of(d)
    return sorted(out)


def int_high(graph: Graph, name: str) -> int:
    """Largest safe integer + 1 for an integer input: the smallest embedding table fed by it."""
    highs = [n.attrs["num"] for n in graph.nodes if n.op == "embedding" and name in n.inputs]
    return min(highs) if highs else 2


def random_inputs(graph: Graph, env: dict[str, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for i in graph.inputs:
        shape = tuple(int(subs(d, env)) for d in i.type.shape)
        if i.type.dtype == "uint8":  # an image
            arrays.append(rng.integers(0, 256, size=shape).astype(np.uint8))
        elif i.type.dtype.startswith("int"):
            arrays.append(rng.integers(0, int_high(graph, i.name), size=shape).astype(i.type.dtype))
        elif i.type.dtype == "bool":
            arrays.append(np.ones(shape, dtype=bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(i.type.dtype))
    return arrays


def expected_shape(graph: Graph, value: str, env: dict[str, int]) -> tuple[int, ...]:
    return tuple(int(subs(d, env)) for d in graph.values[value].shape)


def sgd_step_torch(graph: Graph, weights: dict, xs: list, target, lr: float):
    """One plain SGD step of the PyTorch module on an MSE loss: (canonical weights after, loss)."""
    import torch

    from dlspec.backends import torch as tb

    module = tb.build_module(graph, inplace=False).train()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    y = module(*[torch.from_numpy(a) for a in xs])
    loss = torch.nn.functional.mse_loss(y, torch.from_numpy(target))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return tb.canonical_state(module, graph), loss.item()
