"""solver.prototxt ↔ a dlspec `train` recipe.

Import (`recipe_text`): the solver's type and its momentum, momentum2, delta, rms_decay,
weight_decay (L2, or L1 as the recipe's `l1`) become the optimizer; every `lr_policy` becomes
`caffe_lr(...)`, a schedule that follows Caffe's formula per iteration (batch); `clip_gradients`
becomes `clip_grad = norm(...)`; `max_iter` becomes epochs of the recipe's data at the TRAIN data
layer's batch size, stated in a comment; per-layer `lr_mult` becomes `lr_groups` entries keyed by
parameter path, `decay_mult` (with L2 weight decay) `decay_groups` entries, `iter_size` the
recipe's `accumulate`, AdaDelta `adadelta(rho=momentum, eps=delta)`. What a recipe cannot say is
E858, never dropped (a `decay_mult` under L1 regularization). Export (`solver_text`) writes the
reverse for the recipes Caffe's solver can express.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError
from .reader import read_prototxt, read_solver, upgrade_v1

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta",
         "ADAM": "Adam"}
#: the built-in digits data: its training split (70% of 1,797 images)
DIGITS_TRAIN = 1257


def _error(code: str, msg: str, hint: str | None = None) -> DlspecError:
    return DlspecError(Diagnostic(code=code, message=msg, hint=hint))


def _num(v: float) -> str:
    """A float32 field as its shortest decimal (0.01, not 0.00999999978)."""
    return repr(float(f"{v:.7g}"))


def solver_type(s: Any) -> str:
    if s.HasField("type"):
        t = s.type
    elif s.HasField("solver_type"):
        names = {0: "SGD", 1: "NESTEROV", 2: "ADAGRAD", 3: "RMSPROP", 4: "ADADELTA", 5: "ADAM"}
        t = names[int(s.solver_type)]
    else:
        t = "SGD"
    canon = TYPES.get(t.upper())
    if canon is None:
        raise _error("E857", f"solver type {t!r} is not one of Caffe's ({', '.join(TYPES.values())})")
    return canon


def schedule_call(s: Any, path: str) -> str:
    policy = s.lr_policy or "fixed"
    if policy not in POLICIES:
        raise _error("E857", f"{path}: lr_policy {policy!r} is not one of Caffe's ({', '.join(POLICIES)})")
    need = {"step": ("stepsize", "gamma"), "exp": ("gamma",), "inv": ("gamma", "power"),
            "multistep": ("stepvalue", "gamma"), "poly": ("max_iter", "power"), "sigmoid": ("gamma", "stepsize")}
    missing = [f for f in need.get(policy, ()) if not (len(s.stepvalue) if f == "stepvalue" else s.HasField(f))]
    if missing:
        raise _error("E857", f"{path}: lr_policy {policy!r} needs {', '.join(missing)}")
    args = [f'policy="{policy}"']
    fields = {"step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
              "multistep": ("gamma",), "poly": ("power", "max_iter"), "sigmoid": ("gamma", "stepsize")}.get(policy, ())
    for f in fields:
        v = getattr(s, f)
        args.append(f"{f}={_num(v) if isinstance(v, float) else int(v)}")
    if policy == "multistep":
        args.append("stepvalue=[" + ", ".join(str(int(v)) for v in s.stepvalue) + "]")
    return f"caffe_lr({', '.join(args)})"


def optimizer_call(s: Any, path: str) -> tuple[str, str | None]:
    """(optimizer call, an `l1 = ...` line or None)."""
    t = solver_type(s)
    lr = _num(s.base_lr)
    wd = float(s.weight_decay)
    reg = (s.regularization_type or "L2").upper()
    if reg not in ("L1", "L2"):
        raise _error("E857", f"{path}: regularization_type {s.regularization_type!r} is not L1 or L2")
    decay = f", weight_decay={_num(wd)}" if wd and reg == "L2" else ""
    l1 = f"l1 = {_num(wd)}" if wd and reg == "L1" else None
    m = float(s.momentum)
    if t in ("SGD", "Nesterov"):
        nest = ", nesterov=true" if t == "Nesterov" else ""
        return f"sgd(lr={lr}, momentum={_num(m)}{nest}{decay})", l1
    if t == "Adam":
        return f"adam(lr={lr}, betas=[{_num(m or 0.9)}, {_num(s.momentum2)}], eps={_num(s.delta)}{decay})", l1
    if t == "AdaGrad":
        return f"adagrad(lr={lr}, eps={_num(s.delta)}{decay})", l1
    if t == "RMSProp":
        return f"rmsprop(lr={lr}, alpha={_num(s.rms_decay)}, eps={_num(s.delta)}{decay})", l1
    # AdaDelta: Caffe's momentum is the decay of both running averages (rho), delta their epsilon
    if not 0.0 <= m < 1.0:
        raise _error("E857", f"{path}: AdaDelta's momentum {m} must be in [0, 1)")
    return f"adadelta(lr={lr}, rho={_num(m)}, eps={_num(s.delta)}{decay})", l1


def _train_batch(net_path: Path | None) -> int | None:
    if net_path is None or not net_path.is_file():
        return None
    try:
        net = read_prototxt(net_path)
    except DlspecError:
        return None
    for raw, _, _ in net.layers:
        lay = upgrade_v1(raw)
        is_train = any(r.HasField("phase") and r.phase == 0 for r in lay.include)
        for f in ("data_param", "image_data_param", "hdf5_data_param", "memory_data_param", "window_data_param"):
            if is_train and lay.HasField(f) and getattr(lay, f).batch_size:
                return int(getattr(lay, f).batch_size)
    return None


def recipe_text(solver_path: str | Path, ci: Any, model: str, input_names: dict[str, str],
                output_names: dict[str, str], net_path: str | Path | None = None) -> str:
    """The `train` block for the imported model from `solver_path`."""
    path = str(solver_path)
    s = read_solver(solver_path)
    if not s.HasField("base_lr") or s.base_lr <= 0:
        raise _error("E857", f"{path}: the solver needs a positive base_lr")
    if s.iter_size < 1:
        raise _error("E857", f"{path}: iter_size {s.iter_size} must be at least 1")
    if not s.HasField("max_iter") or s.max_iter <= 0:
        raise _error("E857", f"{path}: the solver needs max_iter")
    final = {v: layer.op for layer in ci.imported.layers for v in layer.outputs}
    if ci.loss is None and any(final.get(v) == "softmax" for _, v in ci.imported.outputs):
        raise _error("E858", f"{path}: the net ends in Softmax and has no loss layer (a deploy net); training on "
                             "probabilities is not what Caffe's SoftmaxWithLoss does",
                     hint="import the solver's train_val net (its SoftmaxWithLoss reads the scores before Softmax)")
    opt, l1 = optimizer_call(s, path)
    sched = schedule_call(s, path)
    inp = ci.imported.inputs[0]
    shape = [int(d) for d in inp.shape[1:]]
    if len(ci.imported.inputs) != 1 or len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise _error("E858", f"{path}: the solver's data ({'x'.join(map(str, shape))} inputs) has no dlspec reader "
                             "here; dlspec trains an imported solver on the built-in digits (one channel, square)",
                     hint="import without --solver and write the recipe's `data` yourself (docs/caffe.md)")
    net_file = Path(net_path) if net_path is not None else (
        Path(path).parent / Path(s.net).name if s.net else None)
    batch = _train_batch(net_file) or 64
    acc = int(s.iter_size)
    # a Caffe iteration is one optimizer step of iter_size batches
    steps = math.ceil(math.ceil(DIGITS_TRAIN * 1.0 / batch) / acc)
    epochs = max(1, math.ceil(s.max_iter / steps))
    groups, decays = [], []
    wd = float(s.weight_decay)
    l1_reg = (s.regularization_type or "L2").upper() == "L1"
    for layer, mults in ci.multipliers.items():
        for pname, (lr_mult, decay_mult) in zip(ci.param_order.get(layer, []), mults):
            if lr_mult < 0 or decay_mult < 0:
                raise _error("E857", f"{path}: layer `{layer}` has a negative lr_mult or decay_mult on its {pname}")
            if wd and decay_mult != 1.0:
                if l1_reg:
                    raise _error("E858", f"{path}: layer `{layer}` has decay_mult {decay_mult} on its {pname} under L1 "
                                         "regularization; a recipe's `l1` penalizes every weight alike",
                                 hint="set decay_mult to 1, or use L2 (decay_groups then carries it)")
                decays.append(f'"{layer}.{pname}": {_num(wd * decay_mult)}')
            if lr_mult != 1.0:
                groups.append(f'"{layer}.{pname}": {_num(s.base_lr * lr_mult)}')
    loss = {"cross_entropy": "cross_entropy()", "mse": "mse()", "bce_with_logits": "bce_with_logits()",
            "nll": "nll()"}.get(ci.loss or "cross_entropy", "cross_entropy()")
    lines = [
        f"# From {Path(path).name}: {solver_type(s)}, lr_policy {s.lr_policy or 'fixed'}, max_iter {s.max_iter} "
        f"iterations at batch {batch}" + (f" × iter_size {acc}" if acc > 1 else ""),
        f"# = {epochs} epochs of the digits training split ({DIGITS_TRAIN} images, {steps} iterations an epoch);",
        "# caffe_lr counts iterations (batches) from 0, as Caffe does."
        + (f" test_interval {s.test_interval}: dlspec validates once an epoch." if s.test_interval else ""),
        f"train {model} {{",
        f'    data      = builtin("digits", size={shape[1]}, split=[0.7, 0.15, 0.15])',
        f"    loss      = {loss}",
        f"    optimizer = {opt}",
        f"    schedule  = {sched}",
        f"    epochs    = {epochs}",
        f"    batch     = {batch}",
        "    metrics   = [accuracy]",
    ]
    if l1:
        lines.append(f"    {l1}")
    if s.clip_gradients > 0:
        lines.append(f"    clip_grad = norm({_num(s.clip_gradients)})")
    if acc > 1:
        lines.append(f"    accumulate = {acc}")
    if groups:
        lines.append("    lr_groups = {" + ", ".join(groups) + "}")
    if decays:
        lines.append("    decay_groups = {" + ", ".join(decays) + "}")
    if s.random_seed >= 0:
        lines.append(f"    seed      = {int(s.random_seed)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def solver_text(recipe: Any, graph: Any) -> str:
    """solver.prototxt for a recipe (E858 for what Caffe's solver cannot express)."""
    from google.protobuf import text_format

    from .schema import message

    s = message("SolverParameter")
    s.net = "train_val.prototxt"
    opt = recipe.optimizer
    s.base_lr = float(opt.lr)
    kind = opt.type
    if kind == "sgd":
        s.type = "Nesterov" if opt.nesterov else "SGD"
        s.momentum = float(opt.momentum)
    elif kind in ("adam", "adamw"):
        if kind == "adamw":
            raise _error("E858", "adamw's decoupled weight decay has no Caffe solver", hint="use adam or sgd")
        s.type = "Adam"
        s.momentum, s.momentum2, s.delta = float(opt.betas[0]), float(opt.betas[1]), float(opt.eps)
    elif kind == "rmsprop":
        s.type = "RMSProp"
        s.rms_decay, s.delta = float(opt.alpha), float(opt.eps)
    elif kind == "adagrad":
        if opt.lr_decay:
            raise _error("E858", "adagrad's lr_decay has no Caffe form", hint="set lr_decay = 0")
        s.type = "AdaGrad"
        s.delta = float(opt.eps)
    elif kind == "adadelta":
        s.type = "AdaDelta"
        s.momentum, s.delta = float(opt.rho), float(opt.eps)
    s.weight_decay = float(getattr(opt, "weight_decay", 0.0))
    parts = tuple(recipe.schedule)
    if len(parts) > 1 or (parts and parts[0].type not in ("constant", "caffe_lr")):
        raise _error("E858", f"the schedule {' then '.join(p.type for p in parts)} is per epoch; Caffe's lr_policy "
                             "counts iterations", hint="write schedule = caffe_lr(...) for a Caffe solver")
    if parts and parts[0].type == "caffe_lr":
        c = parts[0]
        s.lr_policy = c.policy
        if c.policy in ("step", "exp", "inv", "multistep", "sigmoid"):
            s.gamma = float(c.gamma)
        if c.policy in ("inv", "poly"):
            s.power = float(c.power)
        if c.policy in ("step", "sigmoid"):
            s.stepsize = int(c.stepsize)
        s.stepvalue.extend(int(v) for v in c.stepvalue)
    else:
        s.lr_policy = "fixed"
    acc = int(getattr(recipe, "accumulate", 1))
    if acc > 1:
        s.iter_size = acc
    s.max_iter = int(recipe.epochs) * math.ceil(math.ceil(DIGITS_TRAIN / int(recipe.batch)) / acc)
    if recipe.clip_grad is not None:
        if recipe.clip_grad.type != "norm":
            raise _error("E858", "clip_grad = value(...) has no Caffe form (clip_gradients clips the norm)")
        s.clip_gradients = float(recipe.clip_grad.max)
    if recipe.lr_groups:
        raise _error("E858", "lr_groups: write them as lr_mult in the layers' param blocks")
    if getattr(recipe, "decay_groups", None):
        raise _error("E858", "decay_groups: write them as decay_mult in the layers' param blocks")
    s.random_seed = int(recipe.seed)
    s.solver_mode = 0
    s.snapshot_prefix = graph.name
    return ("# max_iter: the recipe's epochs times its iterations an epoch on the digits training split.\n"
            "# net: deploy.prototxt with your data layer in place of its Input layer and a loss layer\n"
            "# (SoftmaxWithLoss for cross_entropy) after its last layer.\n"
            + text_format.MessageToString(s))
