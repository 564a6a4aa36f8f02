"""Does a data set fit a model? Checked before training so the error names both sides."""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, DlspecError
from ..ir.dims import Sym
from ..ir.graph import Graph
from ..ir.types import FLOAT_DTYPES, TensorType
from .core import DataBundle, type_str


def _fail(bundle: DataBundle, code: str, message: str, hint: str | None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=message, hint=hint,
                                  notes=[f"data source: {bundle.source}", f"data: {bundle.description}"]))


def _symbol(d) -> str | None:
    """The name of a dimension that is one plain symbol (`seq`), else None."""
    if isinstance(d, Sym) and len(d.symbols) == 1:
        (name,) = d.symbols
        if d == Sym.symbol(name):
            return name
    return None


def _dims_match(data_shape: tuple[int, ...], model_shape: tuple, env: dict[str, int]) -> bool:
    """Compare dims after the batch axis, binding plain symbols in `env` (shared across inputs and outputs)."""
    if len(data_shape) != len(model_shape):
        return False
    for s, d in zip(data_shape[1:], model_shape[1:], strict=True):
        name = _symbol(d)
        if name is not None:
            if env.setdefault(name, int(s)) != int(s):
                return False
            continue
        if isinstance(d, Sym):
            d = d.subs(env)
        if isinstance(d, int) and d != int(s):
            return False
    return True


def _family(dtype: str) -> str:
    return "float" if dtype in FLOAT_DTYPES else "int"


def _example_shape(shape) -> str:
    return "[" + ", ".join(["batch", *(str(d) for d in shape[1:])]) + "]"


def check_against_model(bundle: DataBundle, graph: Graph, training: bool = True) -> None:
    """Raise a `DlspecError` (E601–E605, E621) when the data does not fit the model's inputs and
    outputs. `training=False` (evaluating a trained model) lets the labels hold a single class."""
    data = f"data {bundle.name}"
    xs = bundle.train.x
    ins = graph.inputs
    names = bundle.input_names if len(bundle.input_names) == len(xs) else [f"x[{i}]" for i in range(len(xs))]
    if len(xs) != len(ins):
        given = ", ".join(f"{n} {type_str(a)}" for n, a in zip(names, xs, strict=True))
        wanted = ", ".join(f"`{i.name}` {i.type}" for i in ins)
        raise _fail(bundle, "E601",
                    f"{data} gives {len(xs)} input(s) ({given}) but model `{graph.name}` takes {len(ins)} ({wanted})",
                    "give the model one `input` per data input, in the same order")
    env: dict[str, int] = {}
    for a, name, gi in zip(xs, names, ins, strict=True):
        dt = "float32" if a.dtype.kind == "f" else "int64"
        given = f"{data} gives {name} {type_str(a)} but model input `{gi.name}` is {gi.type}"
        if _family(gi.type.dtype) != _family(dt):
            hint = (f"token ids need an integer input followed by embedding(...): declare `input {gi.name}: "
                    f"int64{_example_shape(a.shape)}`" if dt == "int64"
                    else f"declare `input {gi.name}: float32{_example_shape(a.shape)}`")
            raise _fail(bundle, "E603", given, hint)
        if not _dims_match(a.shape, gi.type.shape, env):
            data_size = int(np.prod(a.shape[1:]))
            model_dims = gi.type.shape[1:]
            hint = f"reshape the data or change the model input to {gi.type.dtype}{_example_shape(a.shape)}"
            if all(isinstance(d, int) for d in model_dims) and int(np.prod(model_dims or (1,))) == data_size \
                    and len(a.shape) > len(gi.type.shape):
                hint = (f"both hold {data_size} values per example: declare `input {gi.name}: "
                        f"{gi.type.dtype}{_example_shape(a.shape)}` and flatten() inside the model")
            raise _fail(bundle, "E602", given, hint)
    _check_targets(bundle, graph, env, training)


def _check_targets(bundle: DataBundle, graph: Graph, env: dict[str, int], training: bool = True) -> None:
    data = f"data {bundle.name}"
    y = bundle.train.y
    outs = graph.outputs
    out_names = [o.name for o in outs]
    if isinstance(y, dict):
        if sorted(y) != sorted(out_names):
            raise _fail(bundle, "E605",
                        f"{data} gives targets {', '.join(f'`{k}`' for k in y)} but model `{graph.name}` has "
                        f"output(s) {', '.join(f'`{n}`' for n in out_names)}",
                        "name one model output after each target: output " + ", ".join(f"{k} = ..." for k in y))
        counts = bundle.num_classes if isinstance(bundle.num_classes, dict) else {}
        pairs = [(o, y[o.name], counts.get(o.name)) for o in outs]
    else:
        if len(outs) != 1:
            raise _fail(bundle, "E605",
                        f"{data} gives one target but model `{graph.name}` has {len(outs)} outputs "
                        f"({', '.join(f'`{n}`' for n in out_names)})",
                        "a multi-output model needs data with one target per output, such as builtin(\"digits_multitask\")")
        k = bundle.num_classes if not isinstance(bundle.num_classes, dict) else None
        pairs = [(outs[0], y, k)]
    for out, target, k in pairs:
        t: TensorType = graph.values[out.value]
        _check_target(bundle, graph, out.name, t, target, k, env, training)


def _check_target(bundle: DataBundle, graph: Graph, out_name: str, t: TensorType, y: np.ndarray,
                  k: int | None, env: dict[str, int], training: bool = True) -> None:
    data = f"data {bundle.name}"
    what = f"model output `{out_name}` is {t}"
    if training and bundle.task == "classification" and k is not None and y.size and len(np.unique(y)) < 2:
        raise _fail(bundle, "E621", f"{data} gives labels of one class for model output `{out_name}`: "
                    "nothing to tell apart", "check the data's label column, or train a regression")
    if bundle.task in ("classification", "sequence_labeling") and k is not None:
        labels = f"{type_str(y)} labels ({k} classes, 0..{k - 1})"
        given = f"{data} gives {labels} but {what}"
        # scores: the target's shape plus one axis of class scores
        if len(t.shape) != len(y.shape) + 1 or not _dims_match(y.shape, t.shape[:-1], env):
            want = _example_shape(y.shape)[:-1] + f", {k}]"
            raise _fail(bundle, "E604", given,
                        f"the model should give class scores float32{want}"
                        + (": end with flatten() and dense(" + str(k) + ")" if y.ndim == 1 else ""))
        c = t.shape[-1]
        if isinstance(c, Sym):
            c = c.subs(env)
        if isinstance(c, int) and c < k and not (c == 1 and k == 2):
            raise _fail(bundle, "E604", f"{data} has {k} classes (labels 0..{k - 1}) but {what}: {c} scores per example",
                        f"end the model with dense({k})")
        return
    given = f"{data} gives target {type_str(y)} but {what}"
    if not _dims_match(y.shape, t.shape, env):
        hint = f"the model should give {t.dtype}{_example_shape(y.shape)}"
        if bundle.task == "segmentation":
            hint += ": one logit per pixel, e.g. end with conv2d(1, kernel=1)"
        elif bundle.task == "reconstruction":
            hint += ", the shape of its input"
        raise _fail(bundle, "E604", given, hint)
