"""Feature extraction: a trained (or pre-trained) network's embeddings of a data set.

The network is cut after a named layer (`--layer features`, a block, gives the output of its
last node) or, by default, at its penultimate value: the input of the last layer with
parameters on the way to the first output (for a classifier ending in `dense(classes)`, the
vector that layer reads). The cut graph is an ordinary IR graph, so it runs on the PyTorch
backend like any model, in eval mode (dropout off, batch norm on its running statistics).

The result is an NPZ file without pickles: `features` [N, ...], `labels` [N] (for a model with
several targets, `labels_<output>` each) and `split` [N] ("train", "val", "test" or "file").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DlspecError, did_you_mean, error
from ..ir.graph import Graph, GraphOutput

SPLITS = ("train", "val", "test")


def penultimate_value(graph: Graph) -> str:
    """The input of the last layer with parameters that leads to the first output."""
    with_params = {p.node for p in graph.params() if not p.buffer}
    producers = graph.producers()
    inputs = {i.name for i in graph.inputs}
    value = graph.outputs[0].value
    while value not in inputs:
        node = producers[value]
        if node.name in with_params:
            return node.inputs[0]
        value = node.inputs[0]
    raise error("E652", f"`{graph.name}` has no layer with parameters before its output `{graph.outputs[0].name}`",
                         hint="name a layer with --layer")


def layer_value(graph: Graph, layer: str) -> str:
    """The output of layer `layer`, or of the last node of the block with that path."""
    hits = [n for n in graph.nodes if n.name == layer or n.name.startswith(layer + ".")]
    if not hits:
        blocks = sorted({n.name.rsplit(".", k)[0] for n in graph.nodes for k in range(n.name.count(".") + 1)})
        raise error("E652", f"`{graph.name}` has no layer `{layer}`",
                             hint=did_you_mean(layer, blocks) or f"its layers: {', '.join(n.name for n in graph.nodes[:16])}")
    return hits[-1].outputs[0]


def cut(graph: Graph, layer: str | None) -> Graph:
    """The part of `graph` that computes the features, with them as its one output `features`."""
    value = layer_value(graph, layer) if layer else penultimate_value(graph)
    producers = graph.producers()
    needed: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        node = producers.get(v)
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.inputs)
    nodes = [n for n in graph.nodes if n.name in needed]
    used = {v for n in nodes for v in (*n.inputs, *n.outputs)} | {i.name for i in graph.inputs}
    return graph.model_copy(update={
        "name": f"{graph.name}Features",
        "nodes": nodes,
        "values": {k: t for k, t in graph.values.items() if k in used},
        "outputs": [GraphOutput(name="features", value=value)],
        "frozen": [], "replaced": [], "base_weights": None,
    })


def extract(graph: Graph, weights: Path, xs: list[np.ndarray], layer: str | None, device: Any = None,
            batch: int = 256) -> np.ndarray:
    """The features of the examples `xs` (one array per model input)."""
    import torch

    from ..backends import get_backend
    from ..backends import torch as tb

    part = cut(graph, layer)
    module = get_backend("torch").build(part).eval()
    missing = tb.load_weights(module, part, weights, strict=False)
    if missing:
        raise error("E653", f"weights {weights} lack {len(missing)} tensor(s) the layers up to the cut need: "
                             + ", ".join(sorted(missing)[:6]))
    device = device or torch.device("cpu")
    module = module.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(xs[0]), batch):
            args = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch])).to(device) for a in xs]
            out.append(module(*args).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


# ---- what to extract from: a run folder or a spec ---------------------------------------------------


def from_run(run: Path) -> tuple[Graph, Path, Any, Path]:
    """(graph, weights, recipe, folder the data paths are relative to) of a run folder.
    A GAN run gives its discriminator: the network that has learnt to read the data."""
    from .programs import PROGRAMS
    from .run import best_weights, read_graph, role_weights
    from .session import load_run

    graph, cfg, config = load_run(run)
    base = Path(config["spec"]).parent
    role = PROGRAMS[cfg.kind].features_role
    if role != PROGRAMS[cfg.kind].trained:  # a network of its own file in the run folder
        return read_graph(run / f"{role}.json"), role_weights(run, role), cfg, base
    return graph, best_weights(run), cfg, base


def from_spec(spec: Path, model: str | None, weights: Path | None) -> tuple[Graph, Path, Any, Path]:
    """(graph, weights, recipe, spec folder) for the recipe of `spec` (or its last one):
    weights from --weights, else the weights the model starts from (`weights = ...`)."""
    from ..program import compile_file
    from .programs import PROGRAMS, pick_recipe

    program = compile_file(spec)
    cfg = pick_recipe(program, model, spec)
    prog = PROGRAMS[cfg.kind]
    graph = program.recipe_graphs[prog.graph_key(cfg.name, prog.features_role)]
    path = weights or (Path(graph.base_weights) if graph.base_weights else None)
    if path is None:
        raise error("E654", f"`{graph.name}` in {spec} starts from no weights; features of random "
                             "weights mean nothing", hint="give --weights FILE, or extract from a trained run folder")
    if not path.is_file():
        raise error("E654", f"weights {path} do not exist", hint="train the base model first")
    return graph, path, cfg, Path(spec).resolve().parent


def load_split_arrays(data_cfg: Any, seed: int, base: Path, which: str) -> tuple[list[np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """(inputs, targets by name, split names) of the recipe's data, for one split or all."""
    from ..data import load_data

    bundle = load_data(data_cfg, seed, base)
    names = SPLITS if which == "all" else (which,)
    parts = [(n, bundle.splits[n]) for n in names if len(bundle.splits[n])]
    xs = [np.concatenate([p.x[i] for _, p in parts]) for i in range(len(parts[0][1].x))]
    ys = _targets([p.y for _, p in parts])
    split = np.concatenate([np.full(len(p), n) for n, p in parts])
    return xs, ys, split


def _targets(parts: list[Any]) -> dict[str, np.ndarray]:
    if isinstance(parts[0], dict):
        return {f"labels_{k}": np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"labels": np.concatenate(parts)}


def load_npz_arrays(path: Path, graph: Graph) -> tuple[list[np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """(inputs, targets, split) from an .npz holding `x` (or one array per model input) and maybe `y`."""
    if not path.is_file():
        raise error("E655", f"no such data file: {path}")
    names = [i.name for i in graph.inputs]
    try:
        with np.load(path, allow_pickle=False) as z:
            if all(n in z.files for n in names):
                xs = [z[n] for n in names]
            elif len(names) == 1 and "x" in z.files:
                xs = [z["x"]]
            else:
                raise error("E655", f"{path} has arrays {z.files}; give `x` or one array per model input {names}")
            ys = {"labels": z["y"]} if "y" in z.files else {}
    except DlspecError:
        raise
    except Exception as exc:
        raise error("E655", f"cannot read {path}: {exc}") from None
    for gi, a in zip(graph.inputs, xs):
        want = gi.type
        if a.ndim != want.rank or any(isinstance(d, int) and d != s for d, s in zip(want.shape, a.shape)):
            raise error("E655", f"{path}: input `{gi.name}` is {list(a.shape)}; the model needs {want}")
    xs = [a.astype(gi.type.dtype) for gi, a in zip(graph.inputs, xs)]
    return xs, ys, np.full(len(xs[0]), "file")


def features_npz(source: Path, output: Path, layer: str | None = None, data: str = "all",
                 model: str | None = None, weights: Path | None = None, device: str = "cpu") -> dict[str, tuple]:
    """Extract and write; returns {array name: shape} of what was written."""
    from . import torch_loop as tl
    from .programs import PROGRAMS
    from .run import atomic_write_npz

    if output.suffix != ".npz":
        raise error("E655", f"-o {output}: features are written as .npz")
    graph, path, cfg, base = from_run(source) if source.is_dir() else from_spec(source, model, weights)
    if data in (*SPLITS, "all"):
        xs, ys, split = load_split_arrays(cfg.data, cfg.seed, base, data)
    else:
        xs, ys, split = load_npz_arrays(Path(data), graph)
    for gi, a in zip(graph.inputs, xs):
        if a.ndim != gi.type.rank or any(isinstance(d, int) and d != s for d, s in zip(gi.type.shape, a.shape)):
            raise error("E655", f"the data gives `{gi.name}` as {list(a.shape)}; `{graph.name}` takes {gi.type}")
    feats = extract(graph, path, xs, layer, tl.pick_device(device))
    labels = {} if PROGRAMS[cfg.kind].features_role == "discriminator" else ys  # a GAN's data has no labels to keep
    arrays = {"features": feats, **labels, "split": split}
    atomic_write_npz(output, arrays)
    return {k: tuple(v.shape) for k, v in arrays.items()}

